/**
 * Provisioning claims in the admin API over real HTTP, in-process, as `admin.test.ts` runs the
 * admin API: the serving layers over a SqliteRegistry in a temporary directory (seeded from a
 * configuration), a live Tenancy following it every 100 ms, and chDB. Create, list and revoke,
 * each key's role, tenant isolation, every body refusal, the token shown once and stored only
 * hashed; and a claim made here used by a device at the ingress listener, then revoked.
 */
import { createHash } from "node:crypto"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { HttpServer } from "@effect/platform"
import { afterAll, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as IngressHttpServer from "../../src/ingress/IngressHttpServer.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import type { PlatformConfig } from "../../src/tenancy/PlatformConfig.js"
import { Registry } from "../../src/tenancy/Registry.js"
import { hashSecret } from "../../src/tenancy/Secrets.js"
import * as SqliteRegistry from "../../src/tenancy/SqliteRegistry.js"
import { ingressConfig } from "../ingress/harness.js"
import { polling } from "../support/polling.js"
import { adminServer, call, fetchAnswer } from "./adminHarness.js"

const OPERATOR = "operator-key-0123456789"
const ADMIN_A = "tenant-a-admin-0123456789"
const READ_A = "tenant-a-read-0123456789"
const ADMIN_B = "tenant-b-admin-0123456789"

const climate = { fields: { temperature: { type: "number" as const } } }

const config: PlatformConfig = {
  operator_keys: [OPERATOR],
  tenants: [
    { id: "tenant-a", api_keys: [ADMIN_A], read_keys: [READ_A] },
    { id: "tenant-b", api_keys: [ADMIN_B] },
  ],
  device_classes: [{ name: "climate", ...climate }],
  devices: [{ id: "cfg-a-1", tenant: "tenant-a", class: "climate", credential: "cfg-a-1-secret" }],
}

const dataDir = mkdtempSync(join(tmpdir(), "sluice-claims-registry-"))
const storeDir = mkdtempSync(join(tmpdir(), "sluice-claims-store-"))
const logDir = mkdtempSync(join(tmpdir(), "sluice-claims-log-"))
afterAll(() => {
  for (const dir of [dataDir, storeDir, logDir]) rmSync(dir, { recursive: true, force: true })
})

const TestAdmin = adminServer(config, { dataDir, storeDir, database: "claims" })

const create = (key: string, json: unknown) => call("POST", "/v1/provisioning-claims", { key, json })

const registryBytes = () =>
  Buffer.concat(
    readdirSync(dataDir)
      .filter((f) => f.startsWith(SqliteRegistry.FILE_NAME))
      .map((f) => readFileSync(join(dataDir, f))),
  )

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex")

const eventually = polling({ timeoutMs: 5_000, intervalMs: 50 })

const batch = { name: "batch 7", class: "climate", count: 3, expires_in_seconds: 3600 }

layer(TestAdmin, { timeout: 180_000, excludeTestServices: true })("provisioning claims API", (it) => {
  it.effect("create: the token once, an id naming it, and the claim stored with only the token's hash", () =>
    Effect.gen(function* () {
      const before = Date.now()
      const created = yield* create(ADMIN_A, batch)
      expect(created.status, created.text).toBe(201)
      expect(Object.keys(created.json).sort()).toEqual([
        "class",
        "count",
        "expires_at",
        "id",
        "name",
        "token",
      ])
      const { token, id } = created.json
      expect(token).toMatch(/^[A-Za-z0-9_-]{32}$/)
      expect(id).toBe(sha256(token).slice(0, 12))
      expect(created.json).toMatchObject({ name: "batch 7", class: "climate", count: 3 })
      expect(created.json.expires_at).toBeGreaterThanOrEqual(before + 3600_000)
      expect(created.json.expires_at).toBeLessThanOrEqual(Date.now() + 3600_000)

      const state = yield* Effect.flatMap(Registry, (r) => r.load)
      expect(state.claims.get(hashSecret(token))).toEqual({
        hash: hashSecret(token),
        tenantId: "tenant-a",
        className: "climate",
        remaining: 3,
        expiresAt: created.json.expires_at,
        revoked: false,
        name: "batch 7",
        source: "api",
      })
      expect(registryBytes().includes(Buffer.from(token))).toBe(false)

      // Never shown again: not in the list, not in any answer.
      const listed = yield* call("GET", "/v1/provisioning-claims", { key: ADMIN_A })
      expect(listed.status).toBe(200)
      expect(listed.text.includes(token)).toBe(false)
      expect(listed.json.claims.find((c: { id: string }) => c.id === id)).toEqual({
        id,
        name: "batch 7",
        class: "climate",
        remaining: 3,
        expires_at: created.json.expires_at,
        revoked: false,
      })
    }),
  )

  it.effect(
    "roles: admin keys create and revoke, read keys list, operator keys and other tenants see nothing",
    () =>
      Effect.gen(function* () {
        const created = yield* create(ADMIN_A, { ...batch, name: "roles" })
        const { id } = created.json
        // No key, or an unknown one: 401.
        for (const [method, path] of [
          ["GET", "/v1/provisioning-claims"],
          ["POST", "/v1/provisioning-claims"],
          ["POST", `/v1/provisioning-claims/${id}/revoke`],
        ] as const) {
          expect((yield* call(method, path)).status, path).toBe(401)
          expect((yield* call(method, path, { key: "no-such-key-0123456789" })).status, path).toBe(401)
        }
        // A read key lists, but cannot write.
        const listed = yield* call("GET", "/v1/provisioning-claims", { key: READ_A })
        expect(listed.status).toBe(200)
        expect(listed.json.claims.some((c: { id: string }) => c.id === id)).toBe(true)
        for (const res of [
          yield* create(READ_A, batch),
          yield* call("POST", `/v1/provisioning-claims/${id}/revoke`, { key: READ_A }),
        ]) {
          expect(res.status).toBe(403)
          expect(res.json.message).toContain("this key can only read")
        }
        // An operator key manages tenants, not their claims.
        expect((yield* create(OPERATOR, batch)).status).toBe(403)
        expect((yield* call("GET", "/v1/provisioning-claims", { key: OPERATOR })).status).toBe(403)
        // Another tenant neither sees nor revokes it (404, as a missing one).
        const other = yield* call("GET", "/v1/provisioning-claims", { key: ADMIN_B })
        expect(other.status).toBe(200)
        expect(other.json.claims.some((c: { id: string }) => c.id === id)).toBe(false)
        const foreign = yield* call("POST", `/v1/provisioning-claims/${id}/revoke`, { key: ADMIN_B })
        expect(foreign.status).toBe(404)
        expect(foreign.json).toEqual({ _tag: "ClaimNotFound", message: "provisioning claim not found" })
        expect(
          (yield* call("POST", "/v1/provisioning-claims/0123456789ab/revoke", { key: ADMIN_A })).status,
        ).toBe(404)
        const state = yield* Effect.flatMap(Registry, (r) => r.load)
        expect([...state.claims.values()].find((c) => c.name === "roles")!.revoked).toBe(false)
      }),
  )

  it.effect("refuses bad bodies naming the field: count, expiry, class, name, unknown keys", () =>
    Effect.gen(function* () {
      // A class of tenant B is not tenant A's to use.
      const own = yield* call("POST", "/v1/device-classes", {
        key: ADMIN_B,
        json: { name: "b-only", definition: climate },
      })
      expect(own.status, own.text).toBe(201)
      expect((yield* create(ADMIN_B, { ...batch, class: "b-only" })).status).toBe(201)

      const cases: ReadonlyArray<[unknown, string, string]> = [
        [{ ...batch, count: 0 }, "count", "from 1 to 1000000"],
        [{ ...batch, count: 1_000_001 }, "count", "from 1 to 1000000"],
        [{ ...batch, count: 2.5 }, "count", ""],
        [{ ...batch, expires_in_seconds: 59 }, "expires_in_seconds", "from 60 to 31536000"],
        [{ ...batch, expires_in_seconds: 365 * 24 * 3600 + 1 }, "expires_in_seconds", "one year"],
        [{ ...batch, class: "no-such-class" }, "class", 'unknown device class "no-such-class"'],
        [{ ...batch, class: "b-only" }, "class", 'unknown device class "b-only"'],
        [{ ...batch, class: "not a class!" }, "class", "must be 1-100 characters"],
        [{ ...batch, name: "" }, "name", "must not be empty"],
        [{ class: "climate", count: 1, expires_in_seconds: 60 }, "name", ""],
        [{ ...batch, token: "my-own-token" }, "token", ""],
      ]
      for (const [json, field, reason] of cases) {
        const res = yield* create(ADMIN_A, json)
        expect(res.status, JSON.stringify(json)).toBe(400)
        expect(res.json._tag).toBe("InvalidBody")
        const problem = res.json.problems.find((p: { field: string }) => p.field === field)
        expect(problem, `${JSON.stringify(json)}: ${res.text}`).toBeDefined()
        expect(problem.reason).toContain(reason)
      }
      // The bounds themselves are fine.
      const lowest = yield* create(ADMIN_A, { ...batch, name: "bounds", count: 1, expires_in_seconds: 60 })
      expect(lowest.status, lowest.text).toBe(201)
      const highest = yield* create(ADMIN_A, {
        ...batch,
        name: "bounds",
        count: 1_000_000,
        expires_in_seconds: 365 * 24 * 3600,
      })
      expect(highest.status, highest.text).toBe(201)
    }),
  )

  it.scoped(
    "a device provisions itself at the ingress listener with a claim made here, until the claim is revoked",
    () =>
      Effect.gen(function* () {
        // The ingress listener of the same platform: the same registry, Tenancy and metrics.
        const ingress = yield* Layer.build(
          IngressHttpServer.layerWith({ ...ingressConfig, httpHost: "127.0.0.1", httpPort: 0 }).pipe(
            Layer.provide(SqliteStreamLog.layerWith({ ...SqliteStreamLog.defaults(logDir), fsync: false })),
          ),
        )
        const { address } = Context.get(ingress, HttpServer.HttpServer)
        const ingressUrl = `http://127.0.0.1:${address._tag === "TcpAddress" ? address.port : 0}`
        const provision = (token: string, deviceId: string) =>
          fetchAnswer(`${ingressUrl}/v1/provision`, "POST", {
            headers: { authorization: `Bearer ${token}` },
            json: { device_id: deviceId },
          })

        const created = yield* create(ADMIN_A, { ...batch, name: "e2e", count: 5 })
        const { token, id } = created.json
        const device = yield* provision(token, "claimed-1")
        expect(device.status, device.text).toBe(201)

        // The list shows what is left; the device is the tenant's, in the claim's class.
        const listed = yield* call("GET", "/v1/provisioning-claims", { key: ADMIN_A })
        expect(listed.json.claims.find((c: { id: string }) => c.id === id).remaining).toBe(4)
        const devices = yield* eventually(call("GET", "/v1/devices", { key: ADMIN_A }), (a) =>
          a.text.includes("claimed-1"),
        )
        expect(devices.text).toContain("claimed-1")
        const published = yield* eventually(
          fetchAnswer(`${ingressUrl}/v1/telemetry`, "POST", {
            headers: { authorization: `Bearer ${device.json.credential}` },
            json: { temperature: 20 },
          }),
          (a) => a.status === 202,
        )
        expect(published.status, published.text).toBe(202)

        // Revoked: answered with the claim, revoked again without error, and refused at ingress.
        const revoked = yield* call("POST", `/v1/provisioning-claims/${id}/revoke`, { key: ADMIN_A })
        expect(revoked.status, revoked.text).toBe(200)
        expect(revoked.json).toMatchObject({ id, name: "e2e", remaining: 4, revoked: true })
        expect(
          (yield* call("POST", `/v1/provisioning-claims/${id}/revoke`, { key: ADMIN_A })).json.revoked,
        ).toBe(true)
        const refused = yield* provision(token, "claimed-2")
        expect(refused.status).toBe(401)
        expect(refused.json).toMatchObject({ _tag: "ClaimUnauthorized", reason: "revoked" })
        // The device it registered keeps working.
        const still = yield* fetchAnswer(`${ingressUrl}/v1/telemetry`, "POST", {
          headers: { authorization: `Bearer ${device.json.credential}` },
          json: { temperature: 21 },
        })
        expect(still.status).toBe(202)
      }),
  )

  it.effect("describes the claim endpoints in the OpenAPI document", () =>
    Effect.gen(function* () {
      const doc = (yield* call("GET", "/openapi.json")).json
      for (const [method, path, status] of [
        ["post", "/v1/provisioning-claims", "201"],
        ["get", "/v1/provisioning-claims", "200"],
        ["post", "/v1/provisioning-claims/{claimId}/revoke", "200"],
      ] as const) {
        const op = doc.paths[path]?.[method]
        expect(op, `${method} ${path}`).toBeDefined()
        expect(op.description.length, `${method} ${path}`).toBeGreaterThan(10)
        expect(op.responses[status], `${method} ${path}`).toBeDefined()
        expect(op.security, `${method} ${path}`).toBeDefined()
      }
      const tags = (doc.tags as Array<{ name: string; description?: string }>).map((t) => t.description ?? "")
      expect(tags.some((d) => d.includes("/v1/provision"))).toBe(true)
    }),
  )
})
