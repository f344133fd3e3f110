/**
 * Fleet provisioning by claim on the ingress listener, over real HTTP: a SqliteRegistry in a
 * temporary directory (seeded from a configuration), a live Tenancy following it every 50 ms, the
 * embedded log, and the ingress HTTP server. A token registers up to its count, then is refused;
 * expired and revoked tokens are refused; concurrent provisions on two ingress servers (two
 * registry connections, as two processes) never register more than the count, and a provision
 * that loses the race is retried on the new state, re-checking the claim; the new credential
 * publishes; the rate limits answer 429 with Retry-After; every use is logged and counted; no
 * token or credential is in the registry's bytes, the logs or /metrics.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { HttpServer } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Logger, Option } from "effect"
import * as IngressHttpServer from "../../src/ingress/IngressHttpServer.js"
import { buckets, type ProvisioningLimits } from "../../src/ingress/Provisioning.js"
import * as Health from "../../src/observability/Health.js"
import * as Metrics from "../../src/observability/Metrics.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import * as Apply from "../../src/tenancy/Apply.js"
import type { PlatformConfig } from "../../src/tenancy/PlatformConfig.js"
import { type RegClaim, Registry } from "../../src/tenancy/Registry.js"
import { Draft } from "../../src/tenancy/RegistryState.js"
import { hashSecret, newSecret } from "../../src/tenancy/Secrets.js"
import * as SqliteRegistry from "../../src/tenancy/SqliteRegistry.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"
import { polling } from "../support/polling.js"
import { ingressConfig } from "./harness.js"

const platform: PlatformConfig = {
  tenants: [
    { id: "acme", api_keys: ["acme-api-key-0123456789"] },
    { id: "globex", api_keys: ["globex-api-key-0123456789"] },
  ],
  device_classes: [{ name: "climate", fields: { temperature: { type: "number" } } }],
  devices: [{ id: "thermo-1", tenant: "acme", class: "climate", credential: "thermo-1-secret" }],
}

/** Limits no test but the rate limit's reaches. */
const generous: ProvisioningLimits = {
  perToken: { perSecond: 1000, burst: 1000 },
  perAddress: { perSecond: 1000, burst: 1000 },
}

const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "sluice-provision-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true })),
)

/** The registry in `dir`, seeded from `platform`. */
const seeded = (dir: string) =>
  Layer.effectDiscard(Effect.orDie(Apply.apply(platform))).pipe(
    Layer.provideMerge(SqliteRegistry.layerWith({ dataDir: dir, fsync: false })),
  )

/** Tenancy (following `registry` every 50 ms), the embedded log, metrics, health. */
const shared = <E>(dir: string, registry: Layer.Layer<Registry, E>) =>
  Layer.mergeAll(
    Layer.scoped(Tenancy.Tenancy, Tenancy.live({ pollMs: 50 })).pipe(Layer.provide(registry)),
    SqliteStreamLog.layerWith({ ...SqliteStreamLog.defaults(dir), fsync: false }),
    Metrics.layer,
    Health.layerReady(["ingress"]),
  )

const server = (limits: ProvisioningLimits) =>
  IngressHttpServer.layerWith(
    { ...ingressConfig, httpHost: "127.0.0.1", httpPort: 0 },
    { provisioning: limits },
  )

/** One ingress server over a fresh registry; the context also has Registry, Tenancy and Metrics. */
const stack = (dir: string, limits: ProvisioningLimits = generous) => {
  const registry = seeded(dir)
  return server(limits).pipe(Layer.provideMerge(shared(dir, registry)), Layer.provideMerge(registry))
}

const portOf = Effect.map(HttpServer.HttpServer, ({ address }) =>
  address._tag === "TcpAddress" ? address.port : 0,
)

interface Answer {
  readonly status: number
  readonly headers: Headers
  // biome-ignore lint/suspicious/noExplicitAny: answers are inspected field by field
  readonly json: any
  readonly text: string
}

const request = (port: number, path: string, init: RequestInit = {}) =>
  Effect.promise(async (): Promise<Answer> => {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, init)
    const text = await response.text()
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      json = undefined
    }
    return { status: response.status, headers: response.headers, json, text }
  })

/** `POST /v1/provision` with `token` (none if undefined) and `body` (JSON unless a string). */
const provision = (port: number, token: string | undefined, body: unknown) =>
  request(port, "/v1/provision", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    body: typeof body === "string" ? body : JSON.stringify(body),
  })

/** A claim written to the registry as the admin API writes it; returns its token. */
const makeClaim = (claim: Partial<Omit<RegClaim, "hash">> & { readonly remaining: number }) =>
  Effect.gen(function* () {
    const registry = yield* Registry
    const token = newSecret()
    const state = yield* registry.load
    const draft = new Draft(state)
    const hash = hashSecret(token)
    draft.claims.set(hash, {
      hash,
      tenantId: "acme",
      className: "climate",
      expiresAt: Date.now() + 3600_000,
      revoked: false,
      name: "batch 1",
      source: "api",
      ...claim,
    })
    expect(draft.check()).toEqual([])
    yield* registry.commit(draft.mutations(), state.revision)
    return token
  })

const claimOf = (token: string) =>
  Effect.map(
    Effect.flatMap(Registry, (r) => r.load),
    (s) => s.claims.get(hashSecret(token))!,
  )

const updateClaim = (token: string, change: (c: RegClaim) => RegClaim) =>
  Effect.gen(function* () {
    const registry = yield* Registry
    const state = yield* registry.load
    const draft = new Draft(state)
    const hash = hashSecret(token)
    draft.claims.set(hash, change(state.claims.get(hash)!))
    yield* registry.commit(draft.mutations(), state.revision)
  })

/** Every byte of the registry's files in `dir` (the database and its WAL). */
const registryBytes = (dir: string) =>
  Buffer.concat(
    readdirSync(dir)
      .filter((f) => f.startsWith(SqliteRegistry.FILE_NAME))
      .map((f) => readFileSync(join(dir, f))),
  )

/** A logger that keeps every line (message and annotations) in `lines`. */
const capture = (lines: Array<string>) =>
  Logger.add(
    Logger.make(({ message, annotations, logLevel }) => {
      const fields = [...annotations].map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ")
      lines.push(
        `${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)} ${fields}`,
      )
    }),
  )

const eventually = polling({ timeoutMs: 5_000, intervalMs: 50 })

describe("provisioning by claim", () => {
  it.scopedLive(
    "a token registers up to its count, then is refused; each device publishes with its own credential",
    () => {
      const lines: Array<string> = []
      return Effect.gen(function* () {
        const dir = yield* tempDir
        yield* Effect.gen(function* () {
          const port = yield* portOf
          const token = yield* makeClaim({ remaining: 2 })
          const id = hashSecret(token).slice("sha256:".length, "sha256:".length + 12)

          const first = yield* provision(port, token, { device_id: "prov-1" })
          expect(first.status, first.text).toBe(201)
          expect(Object.keys(first.json).sort()).toEqual(["credential", "device_id"])
          expect(first.json.device_id).toBe("prov-1")
          expect(first.headers.get("cache-control")).toBe("no-store")

          // A device registers once: the same id again is refused and uses nothing of the claim.
          const again = yield* provision(port, token, { device_id: "prov-1" })
          expect(again.status).toBe(409)
          expect(again.json).toMatchObject({ _tag: "ProvisioningConflict", reason: "device_registered" })
          expect(again.json.message).toContain("rotate")
          // Ids are unique across tenants: the configuration's device is taken too.
          expect((yield* provision(port, token, { device_id: "thermo-1" })).json.reason).toBe(
            "device_registered",
          )
          const malformed = yield* provision(port, token, { device_id: "not an id!" })
          expect(malformed.status).toBe(400)
          expect(malformed.json._tag).toBe("InvalidProvisioning")
          expect(malformed.json.message).toContain("device_id")
          expect((yield* provision(port, token, "{not json")).status).toBe(400)
          expect((yield* provision(port, token, { device_id: "x", extra: 1 })).status).toBe(400)
          expect((yield* provision(port, token, { device_id: "x".repeat(5000) })).status).toBe(413)

          const second = yield* provision(port, token, { device_id: "prov-2" })
          expect(second.status, second.text).toBe(201)
          expect(second.json.credential).not.toBe(first.json.credential)

          const third = yield* provision(port, token, { device_id: "prov-3" })
          expect(third.status).toBe(409)
          expect(third.json).toMatchObject({ _tag: "ProvisioningConflict", reason: "used_up" })
          expect(third.json.message).toContain(id)

          // No token, and a token that is no claim: 401, each saying which.
          const missing = yield* provision(port, undefined, { device_id: "prov-4" })
          expect(missing.status).toBe(401)
          expect(missing.json).toMatchObject({ _tag: "ClaimUnauthorized", reason: "missing" })
          const unknown = yield* provision(port, "not-a-claim-token-0123456789", { device_id: "prov-4" })
          expect(unknown.status).toBe(401)
          expect(unknown.json.reason).toBe("unknown")
          // A device credential is not a claim token either.
          expect((yield* provision(port, first.json.credential, { device_id: "prov-4" })).json.reason).toBe(
            "unknown",
          )

          // In the registry: the two devices in the claim's tenant and class, the claim used up.
          const state = yield* Effect.flatMap(Registry, (r) => r.load)
          for (const deviceId of ["prov-1", "prov-2"]) {
            expect(state.devices.get(deviceId)).toMatchObject({
              tenantId: "acme",
              className: "climate",
              enabled: true,
              source: "api",
            })
          }
          expect(state.devices.has("prov-3")).toBe(false)
          expect((yield* claimOf(token)).remaining).toBe(0)

          // Each credential publishes once Tenancy has caught up (no restart).
          for (const credential of [first.json.credential, second.json.credential]) {
            const published = yield* eventually(
              request(port, "/v1/telemetry", {
                method: "POST",
                headers: { authorization: `Bearer ${credential}`, "content-type": "application/json" },
                body: JSON.stringify({ temperature: 21 }),
              }),
              (a) => a.status === 202,
            )
            expect(published.status, published.text).toBe(202)
          }
          const tenancy = yield* Tenancy.Tenancy
          expect(Option.getOrThrow(tenancy.deviceById("prov-2"))).toEqual({
            tenantId: "acme",
            deviceId: "prov-2",
            deviceClass: "climate",
          })

          // Every use counted by outcome, and logged with the claim's id, the device id and the address.
          const metrics = (yield* request(port, "/metrics")).text
          expect(metrics).toContain('sluice_provisioning_total{outcome="provisioned"} 2')
          expect(metrics).toContain('sluice_provisioning_total{outcome="device_registered"} 2')
          expect(metrics).toContain('sluice_provisioning_total{outcome="used_up"} 1')
          expect(metrics).toContain('sluice_provisioning_total{outcome="invalid"} 3')
          expect(metrics).toContain('sluice_provisioning_total{outcome="too_large"} 1')
          expect(metrics).toContain('sluice_provisioning_total{outcome="missing"} 1')
          expect(metrics).toContain('sluice_provisioning_total{outcome="unknown"} 2')
          const uses = lines.filter((l) => l.includes("outcome="))
          expect(uses.length).toBe(12)
          const provisioned = uses.filter((l) => l.includes('outcome="provisioned"'))
          expect(provisioned.length).toBe(2)
          for (const line of provisioned) {
            expect(line).toContain(`claim="${id}"`)
            expect(line).toMatch(/deviceId="prov-[12]"/)
            expect(line).toMatch(/remoteAddress="[^"]*127\.0\.0\.1"/)
          }
          expect(uses.find((l) => l.includes('outcome="used_up"'))).toContain('deviceId="prov-3"')

          // No token or credential in plain text: not in the registry's files, the logs or /metrics.
          const bytes = registryBytes(dir)
          expect(bytes.length).toBeGreaterThan(0)
          for (const secret of [token, first.json.credential, second.json.credential]) {
            expect(bytes.includes(Buffer.from(secret))).toBe(false)
            expect(lines.some((l) => l.includes(secret))).toBe(false)
            expect(metrics.includes(secret)).toBe(false)
          }
          expect(bytes.includes(Buffer.from(hashSecret(token)))).toBe(true) // what is stored instead

          // The ingress listener's OpenAPI document describes it, every refusal included.
          const spec = (yield* request(port, "/openapi.json")).json
          const operation = spec.paths["/v1/provision"].post
          expect(Object.keys(operation.responses).sort()).toEqual([
            "201",
            "400",
            "401",
            "409",
            "413",
            "429",
            "503",
          ])
          expect(operation.responses["429"].headers["Retry-After"]).toBeDefined()
          expect(operation.security).toEqual([{ claimToken: [] }])
        }).pipe(Effect.provide(stack(dir)))
      }).pipe(Effect.provide(capture(lines)))
    },
  )

  it.scopedLive("an expired or revoked token is refused, saying which", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* Effect.gen(function* () {
        const port = yield* portOf
        const expired = yield* makeClaim({ remaining: 5, expiresAt: Date.now() - 1000 })
        const answer = yield* provision(port, expired, { device_id: "exp-1" })
        expect(answer.status).toBe(401)
        expect(answer.json).toMatchObject({ _tag: "ClaimUnauthorized", reason: "expired" })
        expect(answer.json.message).toMatch(/expired at \d{4}-/)

        // A claim that expires while in use: works, then not.
        const short = yield* makeClaim({ remaining: 5, expiresAt: Date.now() + 400 })
        expect((yield* provision(port, short, { device_id: "exp-2" })).status).toBe(201)
        yield* Effect.sleep("500 millis")
        expect((yield* provision(port, short, { device_id: "exp-3" })).json.reason).toBe("expired")

        const revoked = yield* makeClaim({ remaining: 5, revoked: true })
        const refused = yield* provision(port, revoked, { device_id: "rev-1" })
        expect(refused.status).toBe(401)
        expect(refused.json).toMatchObject({ _tag: "ClaimUnauthorized", reason: "revoked" })

        // Revoked after use: the devices it registered stay, the token registers no more.
        const used = yield* makeClaim({ remaining: 5 })
        expect((yield* provision(port, used, { device_id: "rev-2" })).status).toBe(201)
        yield* updateClaim(used, (c) => ({ ...c, revoked: true }))
        expect((yield* provision(port, used, { device_id: "rev-3" })).json.reason).toBe("revoked")

        const state = yield* Effect.flatMap(Registry, (r) => r.load)
        expect([...state.devices.keys()].filter((d) => /^(exp|rev)-/.test(d)).sort()).toEqual([
          "exp-2",
          "rev-2",
        ])
        expect((yield* claimOf(used)).remaining).toBe(4)
      }).pipe(Effect.provide(stack(dir)))
    }),
  )

  it.scopedLive("concurrent provisions on two ingress servers register exactly the claim's count", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      class PortA extends Context.Tag("PortA")<PortA, number>() {}
      class PortB extends Context.Tag("PortB")<PortB, number>() {}
      const registry = seeded(dir)
      // A second connection to the same registry file: the two servers commit like two processes.
      const other = SqliteRegistry.layerWith({ dataDir: dir, fsync: false })
      const common = shared(dir, registry)
      const servers = Layer.mergeAll(
        Layer.effect(PortA, portOf).pipe(
          Layer.provide(server(generous)),
          Layer.provide(Layer.merge(common, registry)),
        ),
        Layer.effect(PortB, portOf).pipe(
          Layer.provide(server(generous)),
          Layer.provide(Layer.merge(common, other)),
        ),
      ).pipe(Layer.provideMerge(registry))
      yield* Effect.gen(function* () {
        const ports = [yield* PortA, yield* PortB]
        const token = yield* makeClaim({ remaining: 3 })
        const answers = yield* Effect.all(
          Array.from({ length: 10 }, (_, i) => provision(ports[i % 2]!, token, { device_id: `race-${i}` })),
          { concurrency: "unbounded" },
        )
        const statuses = answers.map((a) => a.status).sort()
        expect(statuses, answers.map((a) => a.text).join("\n")).toEqual([
          201, 201, 201, 409, 409, 409, 409, 409, 409, 409,
        ])
        expect(answers.filter((a) => a.status === 409).every((a) => a.json.reason === "used_up")).toBe(true)
        const state = yield* Effect.flatMap(Registry, (r) => r.load)
        const registered = [...state.devices.keys()].filter((d) => d.startsWith("race-")).sort()
        expect(registered).toEqual(
          answers
            .filter((a) => a.status === 201)
            .map((a) => a.json.device_id)
            .sort(),
        )
        expect(state.claims.get(hashSecret(token))!.remaining).toBe(0)
      }).pipe(Effect.provide(servers))
    }),
  )

  it.scopedLive("a provision that loses the race to another process is retried on the new state", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const registry = seeded(dir)
      // The server's registry connection: at its next commit after `race` is set, another process
      // has just registered a device with that claim (committed first, through its own connection).
      let race: { readonly hash: string; readonly deviceId: string } | undefined
      let commits = 0
      const racing = Layer.effect(
        Registry,
        Effect.map(Registry, (other) => ({
          ...other,
          commit: (mutations: Parameters<typeof other.commit>[0], expected: number) =>
            Effect.gen(function* () {
              commits++
              if (race !== undefined) {
                const { hash, deviceId } = race
                race = undefined
                const state = yield* other.load
                const draft = new Draft(state)
                const claim = state.claims.get(hash)!
                draft.claims.set(hash, { ...claim, remaining: claim.remaining - 1 })
                draft.devices.set(deviceId, {
                  id: deviceId,
                  tenantId: claim.tenantId,
                  className: claim.className,
                  enabled: true,
                  credentials: [{ hash: hashSecret(newSecret()), expiresAt: null }],
                  source: "api",
                })
                yield* Effect.orDie(other.commit(draft.mutations(), state.revision))
              }
              return yield* other.commit(mutations, expected)
            }),
        })),
      ).pipe(Layer.provide(SqliteRegistry.layerWith({ dataDir: dir, fsync: false })))
      const Port = Context.GenericTag<number>("port")
      const servers = Layer.effect(Port, portOf).pipe(
        Layer.provide(server(generous)),
        Layer.provide(Layer.merge(shared(dir, registry), racing)),
        Layer.provideMerge(registry),
      )
      yield* Effect.gen(function* () {
        const port = yield* Port
        const load = Effect.flatMap(Registry, (r) => r.load)

        // Two left, the other process takes one: the retry registers the device with the last.
        const two = yield* makeClaim({ remaining: 2 })
        race = { hash: hashSecret(two), deviceId: "elsewhere-1" }
        const won = yield* provision(port, two, { device_id: "late-1" })
        expect(won.status, won.text).toBe(201)
        expect(commits).toBe(2) // the conflict, then the retry's commit
        let state = yield* load
        expect(state.devices.has("late-1") && state.devices.has("elsewhere-1")).toBe(true)
        expect(state.claims.get(hashSecret(two))!.remaining).toBe(0)

        // One left, the other process takes it: the retry finds the claim used up.
        const one = yield* makeClaim({ remaining: 1 })
        race = { hash: hashSecret(one), deviceId: "elsewhere-2" }
        const lost = yield* provision(port, one, { device_id: "late-2" })
        expect(lost.status, lost.text).toBe(409)
        expect(lost.json.reason).toBe("used_up")
        expect(commits).toBe(3) // the conflict; the retry commits nothing
        state = yield* load
        expect(state.devices.has("late-2")).toBe(false)
        expect(state.devices.has("elsewhere-2")).toBe(true)
        expect(state.claims.get(hashSecret(one))!.remaining).toBe(0)
      }).pipe(Effect.provide(servers))
    }),
  )

  it.scopedLive("the rate limits answer 429 with Retry-After, per token and per address", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      // Per token: 2 at once, then 1 a second.
      yield* Effect.gen(function* () {
        const port = yield* portOf
        const token = yield* makeClaim({ remaining: 100 })
        expect((yield* provision(port, token, { device_id: "rate-1" })).status).toBe(201)
        expect((yield* provision(port, token, { device_id: "rate-2" })).status).toBe(201)
        const throttled = yield* provision(port, token, { device_id: "rate-3" })
        expect(throttled.status).toBe(429)
        expect(throttled.json._tag).toBe("ProvisioningThrottled")
        expect(Number(throttled.headers.get("retry-after"))).toBeGreaterThanOrEqual(1)
        expect((yield* Effect.flatMap(Registry, (r) => r.load)).devices.has("rate-3")).toBe(false)
        // Another token is its own bucket.
        const other = yield* makeClaim({ remaining: 100 })
        expect((yield* provision(port, other, { device_id: "rate-4" })).status).toBe(201)
        // After the wait, the token works again.
        yield* Effect.sleep(`${Number(throttled.headers.get("retry-after"))} seconds`)
        expect((yield* provision(port, token, { device_id: "rate-3" })).status).toBe(201)
        expect((yield* request(port, "/metrics")).text).toContain(
          'sluice_provisioning_total{outcome="throttled"} 1',
        )
      }).pipe(
        Effect.provide(
          stack(dir, { perToken: { perSecond: 1, burst: 2 }, perAddress: { perSecond: 1000, burst: 1000 } }),
        ),
      )
    }),
  )

  it.scopedLive("the address limit counts every token, unknown ones included", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* Effect.gen(function* () {
        const port = yield* portOf
        // Guessing tokens from one address: 3 answered, then 429 whatever the token.
        for (let i = 0; i < 3; i++)
          expect((yield* provision(port, newSecret(), { device_id: "g" })).status).toBe(401)
        const token = yield* makeClaim({ remaining: 100 })
        const throttled = yield* provision(port, token, { device_id: "addr-1" })
        expect(throttled.status).toBe(429)
        expect(throttled.headers.get("retry-after")).toBe("1")
        expect(throttled.json.message).toContain("127.0.0.1")
      }).pipe(
        Effect.provide(
          stack(dir, { perToken: { perSecond: 1000, burst: 1000 }, perAddress: { perSecond: 1, burst: 3 } }),
        ),
      )
    }),
  )
})

describe("provisioning token buckets", () => {
  it("take a burst at once, then refill at the rate, per key", () => {
    const take = buckets({ perSecond: 2, burst: 3 })
    expect([take("a", 0), take("a", 0), take("a", 0)]).toEqual([0, 0, 0])
    expect(take("a", 0)).toBe(500)
    expect(take("b", 0)).toBe(0)
    expect(take("a", 250)).toBe(250)
    expect(take("a", 500)).toBe(0)
    expect(take("a", 500)).toBe(500)
    // Idle long enough: full again, never more than the burst.
    expect([take("a", 60_000), take("a", 60_000), take("a", 60_000), take("a", 60_000)]).toEqual([
      0, 0, 0, 500,
    ])
  })

  it("forget idle keys once there are many, and keep counting the busy ones", () => {
    const take = buckets({ perSecond: 1, burst: 1 })
    for (let i = 0; i < 10_000; i++) take(`k${i}`, 0)
    expect(take("k0", 0)).toBe(1000)
    // The 10,001st key sweeps the full (idle) buckets; a forgotten key starts full, as it would be.
    expect(take("busy", 2_000)).toBe(0)
    expect(take("busy", 2_000)).toBe(1000)
    expect(take("k0", 2_000)).toBe(0)
  })
})
