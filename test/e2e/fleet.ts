/**
 * Devices of the demo configuration's simulated fleet publishing over real MQTT (QoS 1) for the
 * multi-process tests: each device publishes at a steady rate, reconnects when its connection
 * drops, and records which message ids were acknowledged and which publishes failed.
 */
import mqtt, { type MqttClient } from "mqtt"
import { credential } from "../../src/tenancy/Fleet.js"
import { api, type Platform } from "./platform.js"

const FLEET_SECRET = "demo-fleet-secret-0123456789"

export interface Fleet {
  readonly acked: Set<string>
  /** Publishes that did not get a PUBACK within `ackTimeoutMs` or failed. */
  readonly failures: Array<string>
  /** Connections that closed while publishing (a device had to reconnect). */
  readonly disconnects: () => number
  readonly sent: () => number
  /** Stops publishing and waits for the publishes in flight. */
  readonly stop: () => Promise<void>
}

/**
 * `devices` fleet devices, each publishing one message every `intervalMs` (ids `<device>-<n>`),
 * each publish timed out after `ackTimeoutMs`.
 */
export const startFleet = async (
  platform: Platform,
  options: { devices: number; intervalMs: number; ackTimeoutMs: number; offset?: number },
): Promise<Fleet> => {
  const acked = new Set<string>()
  const failures: Array<string> = []
  let disconnects = 0
  let sent = 0
  let stopped = false
  const pending = new Set<Promise<void>>()
  const clients: Array<MqttClient> = []
  const timers: Array<NodeJS.Timeout> = []
  for (let d = 0; d < options.devices; d++) {
    const deviceId = `sim-thermo-${(options.offset ?? 0) + d + 1}`
    const client = await mqtt.connectAsync(platform.mqttUrl, {
      username: deviceId,
      password: credential(FLEET_SECRET, deviceId),
      clientId: deviceId,
      clean: false,
      reconnectPeriod: 200,
      connectTimeout: 5_000,
    })
    client.on("close", () => {
      if (!stopped) disconnects++
    })
    client.on("error", () => {})
    clients.push(client)
    let n = 0
    const publishOne = () => {
      const id = `${deviceId}-${n++}`
      sent++
      const payload = JSON.stringify({ id, ts: Date.now(), temp_f: 70 + (n % 10), humidity: 40 })
      let timer: NodeJS.Timeout | undefined
      const done = Promise.race([
        client.publishAsync(`devices/${deviceId}/telemetry`, payload, { qos: 1 }).then(() => {
          acked.add(id)
        }),
        new Promise<void>((_, reject) => {
          timer = setTimeout(() => reject(new Error("no PUBACK in time")), options.ackTimeoutMs)
        }),
      ])
        .catch((error: Error) => {
          failures.push(`${id}: ${error.message}`)
        })
        .finally(() => {
          clearTimeout(timer)
          pending.delete(done)
        })
      pending.add(done)
    }
    timers.push(setInterval(publishOne, options.intervalMs))
  }
  return {
    acked,
    failures,
    disconnects: () => disconnects,
    sent: () => sent,
    stop: async () => {
      for (const t of timers) clearInterval(t)
      await Promise.all([...pending])
      stopped = true
      await Promise.all(clients.map((c) => c.endAsync()))
    },
  }
}

/** Every msgId stored for a device, through the paginated history API. */
export const storedIds = async (platform: Platform, deviceId: string) => {
  const ids: Array<string> = []
  let cursor: string | undefined
  for (;;) {
    const query = `from=0&limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`
    const { status, body } = await api(platform, `/v1/devices/${deviceId}/telemetry?${query}`)
    if (status !== 200) throw new Error(`history of ${deviceId}: ${status} ${JSON.stringify(body)}`)
    const page = body as { readings: Array<{ msgId: string }>; nextCursor?: string }
    ids.push(...page.readings.map((r) => r.msgId))
    if (page.nextCursor === undefined) return ids
    cursor = page.nextCursor
  }
}

/** Groups acknowledged ids by device (`<device>-<n>`). */
export const byDevice = (ids: Iterable<string>) => {
  const out = new Map<string, Array<string>>()
  for (const id of ids) {
    const device = id.slice(0, id.lastIndexOf("-"))
    const list = out.get(device) ?? []
    list.push(id)
    out.set(device, list)
  }
  return out
}
