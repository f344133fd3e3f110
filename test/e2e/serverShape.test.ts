/**
 * The distributed shape on one machine, against a ClickHouse server: `--role ingress`,
 * `--role processor` and `--role serving` as three separate processes sharing the embedded stream
 * log (one SLUICE_DATA_DIR) and one SLUICE_CLICKHOUSE_URL. The "server" is chDB behind
 * ClickHouse's HTTP interface in a separate process (a test peer, not clickhouse-server; see
 * `test/support/clickhouse-http-peer.ts`). Proves: serving alone starts against a server URL, its
 * own stream tail feeds its WebSockets, what ingress acknowledged is read back through serving
 * exactly once, and every process stops cleanly on SIGTERM.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { type ClickHouseHttpPeer, startClickHouseHttpPeer } from "../support/clickhouseHttpPeer.js"
import { DEMO_KEY, eventually, freePort } from "./platform.js"
import { type RoleProcess, ready, startRole, stop } from "./roleProcess.js"

/** How long a role has to exit on SIGTERM before it is SIGKILLed. */
const KILL_AFTER = { killAfterMs: 15_000 }

const post = (ingestUrl: string, body: unknown) =>
  fetch(`${ingestUrl}/v1/telemetry`, {
    method: "POST",
    headers: { authorization: "Bearer thermo-1-secret" },
    body: JSON.stringify(body),
  }).then((r) => r.status)

const reading = (id: string, i: number) => ({
  id,
  ts: Date.now() - 1000 + i,
  temp_f: 70 + i / 10,
  humidity: 40,
})

describe("ingress, processor and serving as three processes against chDB behind ClickHouse's HTTP interface in a separate process (a test peer, not clickhouse-server)", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "sluice-server-shape-"))
  let peer: ClickHouseHttpPeer | undefined
  let ingress: RoleProcess | undefined
  let processor: RoleProcess | undefined
  let serving: RoleProcess | undefined
  let ingestUrl = ""
  let processorUrl = ""
  let apiUrl = ""
  const outputs = () =>
    [ingress, processor, serving, peer]
      .map((r) => (r === undefined ? "" : `--- ${"name" in r ? r.name : "peer"}\n${r.output()}`))
      .join("\n")

  beforeAll(async () => {
    peer = await startClickHouseHttpPeer()
    const env = { SLUICE_DATA_DIR: dataDir, SLUICE_CLICKHOUSE_URL: peer.url }
    const [mqtt, ingest, health, http] = [
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
    ]
    ingestUrl = `http://127.0.0.1:${ingest}`
    processorUrl = `http://127.0.0.1:${health}`
    apiUrl = `http://127.0.0.1:${http}`
    ingress = startRole(
      "ingress",
      ["--role", "ingress", "--mqtt-port", String(mqtt), "--ingress-http-port", String(ingest)],
      env,
    )
    processor = startRole("processor", ["--role", "processor", "--http-port", String(health)], env)
    serving = startRole("serving", ["--role", "serving", "--http-port", String(http)], env)
    expect(await ready(ingestUrl, processorUrl, apiUrl), outputs()).toBe(true)
    const health_ = (await (await fetch(`${apiUrl}/healthz`)).json()) as { roles: Array<string> }
    expect(health_.roles).toEqual(["serving"])
  }, 60_000)

  afterAll(async () => {
    // Whatever happened, nothing is left running.
    for (const role of [ingress, processor, serving]) if (role !== undefined) await stop(role, KILL_AFTER)
    await peer?.stop()
    rmSync(dataDir, { recursive: true, force: true })
  }, 40_000)

  it("streams readings posted to ingress to a WebSocket on serving, through serving's own tail", {
    timeout: 20_000,
  }, async () => {
    const socket = new WebSocket(`${apiUrl.replace("http", "ws")}/v1/live?device=thermo-1`, {
      headers: { authorization: `Bearer ${DEMO_KEY}` },
    })
    const received: Array<{ deviceId: string; msgId: string }> = []
    socket.on("message", (data) => received.push(JSON.parse(data.toString())))
    await new Promise((resolve, reject) => {
      socket.once("open", resolve)
      socket.once("error", reject)
    })
    try {
      expect(await post(ingestUrl, reading("live-1", 0))).toBe(202)
      expect(await post(ingestUrl, reading("live-2", 1))).toBe(202)
      const got = await eventually(
        async () => received,
        (r) => r.length >= 2,
      )
      expect(
        got.map((r) => [r.deviceId, r.msgId]),
        outputs(),
      ).toEqual([
        ["thermo-1", "live-1"],
        ["thermo-1", "live-2"],
      ])
    } finally {
      socket.close()
    }
  })

  it("stores what ingress acknowledged and serves it through serving exactly once", {
    timeout: 30_000,
  }, async () => {
    const ids = Array.from({ length: 30 }, (_, i) => `once-${i}`)
    const statuses = await Promise.all(ids.map((id, i) => post(ingestUrl, reading(id, i))))
    expect(statuses.every((s) => s === 202)).toBe(true)
    // A redelivery of one of them (a device that did not see its 202) is stored once too.
    expect(await post(ingestUrl, reading("once-0", 0))).toBe(202)
    const stored = async () => {
      const response = await fetch(`${apiUrl}/v1/devices/thermo-1/telemetry?from=0&limit=1000`, {
        headers: { authorization: `Bearer ${DEMO_KEY}` },
      })
      expect(response.status).toBe(200)
      return ((await response.json()) as { readings: Array<{ msgId: string }> }).readings
        .map((r) => r.msgId)
        .filter((id) => id.startsWith("once-"))
    }
    const first = await eventually(stored, (got) => got.length >= ids.length)
    expect([...first].sort(), outputs()).toEqual([...ids].sort())
    // Past a few processor flushes, still exactly once.
    await new Promise((r) => setTimeout(r, 500))
    expect([...(await stored())].sort()).toEqual([...ids].sort())
  })

  it("stops every process with exit code 0 on SIGTERM, ingress first", { timeout: 40_000 }, async () => {
    const codes = [
      await stop(ingress!, KILL_AFTER),
      await stop(processor!, KILL_AFTER),
      await stop(serving!, KILL_AFTER),
    ]
    expect(codes, outputs()).toEqual([0, 0, 0])
    expect(await peer!.stop()).toBe(0)
  })
})
