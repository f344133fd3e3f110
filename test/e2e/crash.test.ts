/**
 * Guarantee 1, end to end: every process of the platform (supervisor and children) is killed
 * with SIGKILL at once while devices publish over MQTT QoS 1; after a restart every acknowledged
 * message is stored exactly once.
 */
import mqtt from "mqtt"
import { describe, expect, it } from "vitest"
import { api, eventually, type Platform, startPlatform } from "./platform.js"

const DEVICES = [
  ["thermo-1", "thermo-1-secret"],
  ["thermo-2", "thermo-2-secret"],
  ["thermo-3", "thermo-3-secret"],
] as const

/** Publishes QoS 1 as fast as acks allow (50 in flight per device) until the broker goes away. */
const publishUntilGone = async (
  platform: Platform,
  deviceId: string,
  password: string,
  acked: Set<string>,
) => {
  const client = await mqtt.connectAsync(platform.mqttUrl, {
    username: deviceId,
    password,
    reconnectPeriod: 0,
  })
  let gone = false
  client.on("close", () => {
    gone = true
  })
  client.on("error", () => {
    gone = true
  })
  let i = 0
  const lane = async () => {
    while (!gone) {
      const id = `${deviceId}-k${i++}`
      const payload = JSON.stringify({ id, ts: Date.now(), temp_f: 70, humidity: 40 })
      try {
        await client.publishAsync(`devices/${deviceId}/telemetry`, payload, { qos: 1 })
        acked.add(id)
      } catch {
        return
      }
    }
  }
  void Promise.all(Array.from({ length: 50 }, lane))
  return client
}

const storedIds = async (platform: Platform, deviceId: string) => {
  const ids: Array<string> = []
  let cursor: string | undefined
  for (;;) {
    const query = `from=0&limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`
    const { body } = await api(platform, `/v1/devices/${deviceId}/telemetry?${query}`)
    const page = body as { readings: Array<{ msgId: string }>; nextCursor?: string }
    ids.push(...page.readings.map((r) => r.msgId))
    if (page.nextCursor === undefined) return ids
    cursor = page.nextCursor
  }
}

describe("the platform under SIGKILL", () => {
  it("stores every acknowledged message exactly once after a kill and restart", {
    timeout: 180_000,
  }, async () => {
    const first = await startPlatform()
    const acked = new Set<string>()
    const clients = await Promise.all(
      DEVICES.map(([id, secret]) => publishUntilGone(first, id, secret, acked)),
    )
    // Kill mid-ingest, once a good number of messages has been acknowledged.
    await eventually(
      async () => acked.size,
      (n) => n >= 1500,
    )
    await first.kill()
    const final = acked.size
    for (const client of clients) client.end(true)
    expect(acked.size).toBe(final)
    expect(acked.size).toBeGreaterThanOrEqual(1500)

    const second = await startPlatform({
      dataDir: first.dataDir,
      ports: first.ports,
    })
    try {
      for (const [deviceId] of DEVICES) {
        const mine = [...acked].filter((id) => id.startsWith(`${deviceId}-`))
        const stored = await eventually(
          () => storedIds(second, deviceId),
          (ids) => mine.every((id) => ids.includes(id)),
        )
        const missing = mine.filter((id) => !stored.includes(id))
        expect(missing, `${deviceId}: acknowledged but not stored`).toEqual([])
        expect(stored.length, `${deviceId}: a message stored twice`).toBe(new Set(stored).size)
      }
    } finally {
      await second.stop()
    }
  })
})
