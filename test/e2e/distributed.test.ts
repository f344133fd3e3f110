/**
 * The roles as independent processes on one machine, composed by hand the way separate machines
 * would run them (no supervisor): two `--role ingress` processes and one `--role processor,serving`
 * sharing a data directory. Devices post to either ingress; everything lands once; a tenant's
 * quota holds for both ingress processes together.
 */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { DEMO_KEY, eventually, freePort } from "./platform.js"
import { type RoleProcess, ready, startRole, stop } from "./roleProcess.js"

const post = (url: string, credential: string, body: unknown) =>
  fetch(`${url}/v1/telemetry`, {
    method: "POST",
    headers: { authorization: `Bearer ${credential}` },
    body: JSON.stringify(body),
  }).then((r) => r.status)

describe("roles composed by hand: two ingress processes and a processor+serving", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "sluice-distributed-"))
  const roles: Array<RoleProcess> = []
  let api = ""
  const ingest: Array<string> = []

  beforeAll(async () => {
    const httpPort = await freePort()
    api = `http://127.0.0.1:${httpPort}`
    roles.push(
      startRole("processor,serving", ["--role", "processor,serving", "--http-port", String(httpPort)], {
        SLUICE_DATA_DIR: dataDir,
      }),
    )
    for (let i = 0; i < 2; i++) {
      const [mqtt, http] = [await freePort(), await freePort()]
      ingest.push(`http://127.0.0.1:${http}`)
      roles.push(
        startRole(
          `ingress-${i + 1}`,
          ["--role", "ingress", "--mqtt-port", String(mqtt), "--ingress-http-port", String(http)],
          { SLUICE_DATA_DIR: dataDir },
        ),
      )
    }
    expect(await ready(api, ...ingest), roles.map((r) => r.output()).join("\n---\n")).toBe(true)
  }, 90_000)

  afterAll(async () => {
    // Ingress first, as the supervisor would.
    const codes = [...(await Promise.all(roles.slice(1).map((r) => stop(r)))), await stop(roles[0]!)]
    expect(codes).toEqual([0, 0, 0])
  }, 60_000)

  it("stores what devices post to either ingress process exactly once", { timeout: 60_000 }, async () => {
    const statuses = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        post(ingest[i % 2]!, "thermo-2-secret", {
          id: `d${i}`,
          ts: Date.now() - 1000 + i,
          temp_f: 70,
          humidity: 40,
        }),
      ),
    )
    expect(statuses.every((s) => s === 202)).toBe(true)
    const stored = await eventually(
      async () => {
        const response = await fetch(`${api}/v1/devices/thermo-2/telemetry?from=0&limit=1000`, {
          headers: { authorization: `Bearer ${DEMO_KEY}` },
        })
        return ((await response.json()) as { readings: Array<{ msgId: string }> }).readings.map(
          (r) => r.msgId,
        )
      },
      (ids) => ids.length >= 100,
    )
    expect([...stored].sort()).toEqual(Array.from({ length: 100 }, (_, i) => `d${i}`).sort())
  })

  it("holds a tenant's quota for both ingress processes together", { timeout: 60_000 }, async () => {
    // Tenant `other`: 100 messages/s, a burst of 100. Both processes are asked as fast as they answer.
    // At least 2 s, and on past that (up to 15 s) until the quota has refused something: a loaded
    // machine may answer too slowly to exceed it in 2 s. The bound follows the time taken.
    const started = Date.now()
    const accepted = [0, 0]
    let throttled = 0
    const going = () => {
      const elapsed = Date.now() - started
      return elapsed < 2_000 || (throttled === 0 && elapsed < 15_000)
    }
    const lane = async (worker: number) => {
      for (let i = 0; going(); i++) {
        const status = await post(ingest[worker]!, "other-thermo-1-secret", {
          id: `q${worker}-${i}`,
          temp_f: 70,
          humidity: 40,
        })
        if (status === 202) accepted[worker]!++
        else if (status === 429) throttled++
        else throw new Error(`unexpected ${status}`)
      }
    }
    await Promise.all([0, 1, 0, 1, 0, 1].map(lane))
    const seconds = (Date.now() - started) / 1000
    const total = accepted[0]! + accepted[1]!
    // At most rate × T + burst + one 5-token lease per process; one bucket per process would allow twice that.
    expect(total).toBeLessThanOrEqual(100 * seconds + 100 + 2 * 5 + 5)
    expect(total).toBeGreaterThanOrEqual(100 * Math.min(seconds, 2))
    expect(accepted[0]).toBeGreaterThan(0)
    expect(accepted[1]).toBeGreaterThan(0)
    expect(throttled).toBeGreaterThan(0)
  })
})

describe("a processor alone", () => {
  it("answers /healthz, /readyz and /metrics on the serving port setting", { timeout: 60_000 }, async () => {
    const httpPort = await freePort()
    const url = `http://127.0.0.1:${httpPort}`
    const role = startRole("processor", ["--role", "processor", "--http-port", String(httpPort)], {
      SLUICE_DATA_DIR: mkdtempSync(join(tmpdir(), "sluice-processor-alone-")),
    })
    try {
      expect(await ready(url), role.output()).toBe(true)
      const health = (await (await fetch(`${url}/healthz`)).json()) as { roles: Array<string> }
      expect(health.roles).toEqual(["processor"])
      expect(await (await fetch(`${url}/metrics`)).text()).toContain('role="processor"')
      // Only health: no tenant API here.
      expect(
        (await fetch(`${url}/v1/devices`, { headers: { authorization: `Bearer ${DEMO_KEY}` } })).status,
      ).toBe(404)
    } finally {
      expect(await stop(role)).toBe(0)
    }
  })
})
