/**
 * Onboarding without a restart, on the real platform (`npm start`'s supervisor: ingress and
 * processor+serving in their own processes): a device created through the admin API publishes
 * over HTTP with its credential within seconds, its reading reads back through the API, and
 * disabling and enabling it reach the ingress process within 5 s. (Disconnecting a disabled
 * device's live MQTT connection is ingress's and is tested there.)
 */
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { DEMO_KEY, eventually, type Platform, startPlatform } from "./platform.js"

let platform: Platform

beforeAll(async () => {
  platform = await startPlatform()
}, 90_000)

afterAll(async () => {
  await platform?.stop()
})

/** A JSON request to the serving API with the demo tenant's admin key. */
const admin = async (method: string, path: string, body?: unknown) => {
  const response = await fetch(`${platform.httpUrl}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${DEMO_KEY}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  // biome-ignore lint/suspicious/noExplicitAny: the test inspects the fields it needs
  return { status: response.status, body: (await response.json().catch(() => undefined)) as any }
}

let sent = 0
/** One thermostat reading over HTTP ingest with `credential`; the status. */
const publish = async (credential: string, msgId = `onboard-${++sent}`) => {
  const response = await fetch(`${platform.ingestUrl}/v1/telemetry`, {
    method: "POST",
    headers: { authorization: `Bearer ${credential}`, "content-type": "application/json" },
    body: JSON.stringify({ id: msgId, ts: Date.now(), temp_f: 71.6, humidity: 41.5, battery: 87 }),
  })
  await response.arrayBuffer()
  return response.status
}

/** Publishes every 100 ms until the answer is `status`; the milliseconds it took, or fails after `withinMs`. */
const untilStatus = async (credential: string, status: number, withinMs: number) => {
  const started = Date.now()
  let last = 0
  while (Date.now() - started < withinMs) {
    last = await publish(credential)
    if (last === status) return Date.now() - started
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`HTTP ingest still answered ${last}, not ${status}, after ${withinMs} ms`)
}

describe("onboarding through the admin API, no restart", () => {
  it("a device created through the API publishes at once, reads back, and is refused while disabled", async () => {
    const created = await admin("POST", "/v1/devices", { id: "onboarded-1", class: "thermostat" })
    expect(created.status).toBe(201)
    const credential = created.body.credential as string
    expect(created.body).toEqual({ id: "onboarded-1", class: "thermostat", credential })

    // The ingress process sees the registry within its poll interval (1 s): 202 within 5 s.
    const accepted = await untilStatus(credential, 202, 5_000)
    expect(accepted).toBeLessThan(5_000)
    const reading = await publish(credential, "onboarded-reading")
    expect(reading).toBe(202)

    // The reading reads back through the API, decoded by its class.
    const latest = await eventually(
      () => admin("GET", "/v1/devices/onboarded-1/telemetry"),
      (r) =>
        r.status === 200 &&
        (r.body.readings as Array<{ msgId: string }>).some((x) => x.msgId === "onboarded-reading"),
    )
    const stored = (latest.body.readings as Array<{ msgId: string; values: Record<string, unknown> }>).find(
      (x) => x.msgId === "onboarded-reading",
    )
    expect(stored?.values).toMatchObject({ humidity: 41.5, battery: 87 })
    expect(stored?.values.temperature as number).toBeCloseTo(22, 6) // 71.6 °F
    const devices = await admin("GET", "/v1/devices")
    expect((devices.body.devices as Array<{ deviceId: string }>).map((d) => d.deviceId)).toContain(
      "onboarded-1",
    )

    // Disabled: refused within 5 s; enabled: accepted again within 5 s.
    const disabled = await admin("POST", "/v1/devices/onboarded-1/disable")
    expect(disabled).toEqual({
      status: 200,
      body: { id: "onboarded-1", class: "thermostat", enabled: false, source: "api" },
    })
    expect(await untilStatus(credential, 401, 5_000)).toBeLessThan(5_000)
    expect((await admin("POST", "/v1/devices/onboarded-1/enable")).status).toBe(200)
    expect(await untilStatus(credential, 202, 5_000)).toBeLessThan(5_000)

    // The credential is nowhere in the registry's files.
    for (const file of readdirSync(platform.dataDir).filter((f) => f.startsWith("registry.sqlite")))
      expect(readFileSync(join(platform.dataDir, file)).includes(credential), file).toBe(false)
  }, 60_000)

  it("a disabled device's live MQTT connection is closed within 5 s and it cannot reconnect; a rotated credential works through its grace, then not", async () => {
    const created = await admin("POST", "/v1/devices", { id: "onboarded-2", class: "thermostat" })
    const credential = created.body.credential as string
    const connect = (password: string) =>
      mqtt.connectAsync(platform.mqttUrl, {
        username: "onboarded-2",
        password,
        reconnectPeriod: 0,
        connectTimeout: 5_000,
      })
    await untilStatus(credential, 202, 5_000)
    const client = await connect(credential)
    await client.publishAsync("devices/onboarded-2/telemetry", JSON.stringify({ id: "mq-1", temp_f: 70 }), {
      qos: 1,
    })
    const closed = new Promise<number>((resolve) => {
      const at = Date.now()
      client.once("close", () => resolve(Date.now() - at))
    })
    expect((await admin("POST", "/v1/devices/onboarded-2/disable")).status).toBe(200)
    expect(await closed).toBeLessThan(5_000)
    const refused = await connect(credential).then(
      (c) => {
        c.end(true)
        return 0
      },
      (e: { code?: number }) => e.code ?? -1,
    )
    expect(refused).toBe(4)

    // Rotation with a 3 s grace: both credentials work, then only the new one.
    expect((await admin("POST", "/v1/devices/onboarded-2/enable")).status).toBe(200)
    await untilStatus(credential, 202, 5_000)
    const rotated = await admin("POST", "/v1/devices/onboarded-2/rotate", { grace_seconds: 3 })
    expect(rotated.status).toBe(200)
    const fresh = rotated.body.credential as string
    expect(await untilStatus(fresh, 202, 5_000)).toBeLessThan(5_000)
    expect(await publish(credential)).toBe(202)
    expect(await untilStatus(credential, 401, 8_000)).toBeLessThan(8_000)
    expect(await publish(fresh)).toBe(202)

    // No credential or key in plain text in the data directory, the logs, or /metrics.
    const key = await admin("POST", `/v1/tenants/demo/keys`, { role: "read", name: "grep-me" })
    expect(key.status).toBe(201)
    const secrets = [credential, fresh, key.body.key as string]
    // chDB's background merges create and remove temporary parts while this walks: a file or
    // folder gone between the listing and the read held nothing that is not in the merged part.
    const gone = (e: unknown) => (e as NodeJS.ErrnoException).code === "ENOENT"
    const files = (dir: string): Array<string> => {
      try {
        return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
          e.isDirectory() ? files(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : [],
        )
      } catch (e) {
        if (gone(e)) return []
        throw e
      }
    }
    for (const file of files(platform.dataDir)) {
      let bytes: Buffer
      try {
        bytes = readFileSync(file)
      } catch (e) {
        if (gone(e)) continue
        throw e
      }
      for (const secret of secrets) expect(bytes.includes(secret), file).toBe(false)
    }
    const metrics = await (await fetch(`${platform.httpUrl}/metrics`)).text()
    for (const secret of secrets) {
      expect(platform.output()).not.toContain(secret)
      expect(metrics).not.toContain(secret)
    }
  }, 60_000)
})
