/**
 * End to end through real clients only: devices publish over MQTT (QoS 1) and HTTPS-style POSTs,
 * readers use the REST API and the WebSocket live feed, against the platform process.
 */
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { api, DEMO_KEY, eventually, OTHER_KEY, type Platform, startPlatform } from "./platform.js"

const T0 = Date.now() - 60_000
const thermo = (i: number, ts = T0 + i) => ({
  id: `m${i}`,
  ts,
  temp_f: 60 + (i % 30),
  humidity: 40 + (i % 20),
})

const connect = (platform: Platform, username: string, password: string) =>
  mqtt.connectAsync(platform.mqttUrl, {
    username,
    password,
    clientId: `${username}-${Math.random()}`,
    reconnectPeriod: 0,
  })

interface HistoryBody {
  readings: Array<{ msgId: string; values: Record<string, number> }>
  nextCursor?: string
}
const history = async (platform: Platform, deviceId: string, key = DEMO_KEY) => {
  const all: HistoryBody["readings"] = []
  let cursor: string | undefined
  for (;;) {
    const query = `from=0&limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`
    const { status, body } = await api(platform, `/v1/devices/${deviceId}/telemetry?${query}`, key)
    if (status !== 200) return { status, readings: all }
    const page = body as HistoryBody
    all.push(...page.readings)
    if (page.nextCursor === undefined) return { status, readings: all }
    cursor = page.nextCursor
  }
}

describe("the platform, end to end", () => {
  let platform: Platform
  beforeAll(async () => {
    platform = await startPlatform()
  })
  afterAll(async () => {
    const code = await platform?.stop()
    // Graceful shutdown: SIGTERM drains and exits cleanly.
    expect(code, platform?.output()).toBe(0)
  })

  it("stores every message published over MQTT QoS 1 and HTTP, and serves it back", async () => {
    const N = 300
    const client = await connect(platform, "thermo-1", "thermo-1-secret")
    await Promise.all(
      Array.from({ length: N }, (_, i) =>
        client.publishAsync("devices/thermo-1/telemetry", JSON.stringify(thermo(i)), { qos: 1 }),
      ),
    )
    await client.endAsync()
    for (let i = 0; i < 20; i++) {
      const response = await fetch(`${platform.ingestUrl}/v1/telemetry`, {
        method: "POST",
        headers: { authorization: "Bearer thermo-2-secret", "content-type": "application/json" },
        body: JSON.stringify(thermo(i)),
      })
      expect(response.status).toBe(202)
    }
    const one = await eventually(
      () => history(platform, "thermo-1"),
      (h) => h.readings.length >= N,
    )
    expect(one.readings.map((r) => r.msgId)).toEqual(Array.from({ length: N }, (_, i) => `m${i}`))
    const two = await eventually(
      () => history(platform, "thermo-2"),
      (h) => h.readings.length >= 20,
    )
    expect(two.readings).toHaveLength(20)
    const latest = await api(platform, "/v1/devices/thermo-1/latest")
    expect(latest.status).toBe(200)
    expect((latest.body as { msgId: string }).msgId).toBe(`m${N - 1}`)
  })

  it("refuses wrong credentials and publishing to another device's topic", async () => {
    await expect(connect(platform, "thermo-1", "wrong-password")).rejects.toThrow(/Bad username or password/i)
    await expect(connect(platform, "no-such-device", "whatever-secret")).rejects.toThrow(
      /Bad username or password/i,
    )
    const client = await connect(platform, "thermo-3", "thermo-3-secret")
    const closed = new Promise<void>((resolve) => client.once("close", () => resolve()))
    client.publish("devices/thermo-2/telemetry", JSON.stringify(thermo(9999)), { qos: 1 })
    await closed
    client.end(true)
    const bad = await fetch(`${platform.ingestUrl}/v1/telemetry`, {
      method: "POST",
      headers: { authorization: "Bearer not-a-credential" },
      body: JSON.stringify(thermo(1)),
    })
    expect(bad.status).toBe(401)
    // Nothing from the refused publish landed on thermo-2.
    await new Promise((r) => setTimeout(r, 500))
    expect((await history(platform, "thermo-2")).readings.some((r) => r.msgId === "m9999")).toBe(false)
  })

  it("keeps tenants apart: another tenant's device is indistinguishable from a missing one", async () => {
    const foreign = await api(platform, "/v1/devices/thermo-1/telemetry?from=0", OTHER_KEY)
    const missing = await api(platform, "/v1/devices/no-such-device/telemetry?from=0", OTHER_KEY)
    expect(foreign.status).toBe(404)
    expect(foreign).toEqual(missing)
    const devices = (await api(platform, "/v1/devices", OTHER_KEY)).body as {
      devices: Array<{ deviceId: string }>
    }
    expect(devices.devices.map((d) => d.deviceId)).toEqual(["other-thermo-1"])
    expect((await api(platform, "/v1/devices", "wrong-key-0123456789")).status).toBe(401)
  })

  it("dead-letters a malformed message with its reason while the others are stored", async () => {
    const client = await connect(platform, "meter-1", "meter-1-secret")
    const good = (i: number) => ({
      msg_id: `p${i}`,
      time: new Date(T0 + i).toISOString(),
      voltage: 230,
      current: 1,
      power_mw: 230_000,
    })
    await client.publishAsync("devices/meter-1/telemetry", JSON.stringify(good(1)), { qos: 1 })
    await client.publishAsync("devices/meter-1/telemetry", '{"msg_id": "p2", "voltage": ', { qos: 1 })
    await client.publishAsync("devices/meter-1/telemetry", JSON.stringify({ ...good(3), voltage: "high" }), {
      qos: 1,
    })
    await client.publishAsync("devices/meter-1/telemetry", JSON.stringify(good(4)), { qos: 1 })
    await client.endAsync()
    const stored = await eventually(
      () => history(platform, "meter-1"),
      (h) => h.readings.length >= 2,
    )
    expect(stored.readings.map((r) => r.msgId)).toEqual(["p1", "p4"])
    expect(stored.readings[0]!.values.power).toBeCloseTo(230, 6)
    const dead = await eventually(
      async () =>
        (await api(platform, "/v1/dead-letters")).body as {
          deadLetters: Array<{ reason: string; raw: string }>
        },
      (b) => b.deadLetters.length >= 2,
    )
    const reasons = dead.deadLetters.map((d) => d.reason).join("\n")
    expect(reasons).toMatch(/not valid JSON/)
    expect(reasons).toMatch(/voltage/)
    expect(dead.deadLetters.some((d) => d.raw === '{"msg_id": "p2", "voltage": ')).toBe(true)
  })

  it("streams processed telemetry live over WebSocket", async () => {
    const socket = new WebSocket(`${platform.httpUrl.replace("http", "ws")}/v1/live?device=thermo-3`, {
      headers: { authorization: `Bearer ${DEMO_KEY}` },
    })
    const received: Array<{ deviceId: string; msgId: string }> = []
    socket.on("message", (data) => received.push(JSON.parse(data.toString())))
    await new Promise((resolve, reject) => {
      socket.once("open", resolve)
      socket.once("error", reject)
    })
    const client = await connect(platform, "thermo-3", "thermo-3-secret")
    await client.publishAsync("devices/thermo-3/telemetry", JSON.stringify(thermo(42, Date.now())), {
      qos: 1,
    })
    await client.endAsync()
    const got = await eventually(
      async () => received,
      (r) => r.length >= 1,
    )
    socket.close()
    expect(got[0]).toMatchObject({ deviceId: "thermo-3", msgId: "m42" })
  })
})
