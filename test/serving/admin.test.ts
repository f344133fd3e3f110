/**
 * The admin API over real HTTP, in-process: the serving layers over a SqliteRegistry in a
 * temporary directory (seeded from a configuration, as `--config` does), a live Tenancy following
 * it every 100 ms, and chDB. Each endpoint's success and refusals, roles and tenant isolation,
 * secrets returned once and stored only hashed, bulk creation, rotation with a grace period, and
 * a new class version reaching `Tenancy.deviceClass`.
 */
import { createHash } from "node:crypto"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, layer, it as test } from "@effect/vitest"
import { Effect, Option } from "effect"
import { TelemetryStore } from "../../src/storage/TelemetryStore.js"
import type { PlatformConfig } from "../../src/tenancy/PlatformConfig.js"
import { emptyState, Registry } from "../../src/tenancy/Registry.js"
import { Draft } from "../../src/tenancy/RegistryState.js"
import * as SqliteRegistry from "../../src/tenancy/SqliteRegistry.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"
import { polling } from "../support/polling.js"
import { adminServer, call } from "./adminHarness.js"
import { baseUrl } from "./harness.js"

const OPERATOR = "operator-key-0123456789"
const ADMIN_A = "tenant-a-admin-0123456789"
const READ_A = "tenant-a-read-0123456789"
const ADMIN_B = "tenant-b-admin-0123456789"

const climate = {
  fields: {
    temperature: { type: "number" as const, min: -50, max: 80 },
    humidity: { type: "number" as const },
  },
}

const config: PlatformConfig = {
  operator_keys: [OPERATOR],
  tenants: [
    { id: "tenant-a", api_keys: [ADMIN_A], read_keys: [READ_A] },
    { id: "tenant-b", api_keys: [ADMIN_B] },
  ],
  device_classes: [{ name: "climate", ...climate }],
  devices: [
    { id: "cfg-a-1", tenant: "tenant-a", class: "climate", credential: "cfg-a-1-secret" },
    { id: "cfg-b-1", tenant: "tenant-b", class: "climate", credential: "cfg-b-1-secret" },
  ],
}

const dataDir = mkdtempSync(join(tmpdir(), "sluice-admin-registry-"))
const storeDir = mkdtempSync(join(tmpdir(), "sluice-admin-store-"))
afterAll(() => {
  rmSync(dataDir, { recursive: true, force: true })
  rmSync(storeDir, { recursive: true, force: true })
})

/** The registry, seeded from `config` before anything reads it. */
const TestAdmin = adminServer(config, { dataDir, storeDir, database: "admin" })

/** Waits (up to 3 s: the poll is 100 ms) until `check` holds of `probe`. */
const eventually = polling({ timeoutMs: 3_000, intervalMs: 50 })

const tenancy = Tenancy.Tenancy

const authenticates = (deviceId: string, credential: string) =>
  Effect.map(tenancy, (t) => Option.isSome(t.authenticateDevice(deviceId, credential)))

/** Every byte of the registry's files (the database and its WAL). */
const registryBytes = () =>
  Buffer.concat(
    readdirSync(dataDir)
      .filter((f) => f.startsWith(SqliteRegistry.FILE_NAME))
      .map((f) => readFileSync(join(dataDir, f))),
  )

/** Even-numbered race ids go to tenant A. */
const i = (id: string) => Number(id.split("-")[1]) % 2 === 0

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex")

layer(TestAdmin, { timeout: 180_000, excludeTestServices: true })("admin API", (it) => {
  it.effect(
    "authenticates every key with its role: 401 without one, 403 with the reason for the wrong role at the admin endpoints",
    () =>
      Effect.gen(function* () {
        for (const [method, path] of [
          ["GET", "/v1/tenants"],
          ["POST", "/v1/devices"],
          ["GET", "/v1/device-classes"],
          ["GET", "/v1/tenants/tenant-a/keys"],
        ] as const) {
          const none = yield* call(method, path)
          expect(none.status, path).toBe(401)
          expect(none.json).toEqual({ _tag: "Unauthorized", message: "missing or invalid API key" })
          expect((yield* call(method, path, { key: "no-such-key-0123456789" })).status, path).toBe(401)
        }
        // Data endpoints: admin and read keys of a tenant read its data; an operator key reads none.
        expect((yield* call("GET", "/v1/devices", { key: ADMIN_A })).status).toBe(200)
        expect((yield* call("GET", "/v1/devices", { key: READ_A })).status).toBe(200)
        // (401, as these endpoints answer any key that opens no tenant, with the reason.)
        const operator = yield* call("GET", "/v1/devices", { key: OPERATOR })
        expect(operator.status).toBe(401)
        expect(operator.json).toEqual({
          _tag: "Unauthorized",
          message:
            "an operator key manages tenants and their keys and reads no tenant's data: use an admin or read key of the tenant",
        })
        expect((yield* call("GET", "/v1/devices/cfg-a-1/latest", { key: OPERATOR })).status).toBe(401)
        const viaKeyHeader = yield* Effect.flatMap(baseUrl, (base) =>
          Effect.promise(() =>
            fetch(`${base}/v1/devices`, { headers: { "x-api-key": OPERATOR } }).then((r) => r.json()),
          ),
        )
        expect(viaKeyHeader).toEqual(operator.json)
        // X-Api-Key works for the admin endpoints too.
        const viaHeader = yield* Effect.flatMap(baseUrl, (base) =>
          Effect.promise(() => fetch(`${base}/v1/tenants`, { headers: { "x-api-key": OPERATOR } })),
        )
        expect(viaHeader.status).toBe(200)

        // Writes need an admin key: a read key is told it can only read.
        for (const [method, path, json] of [
          ["POST", "/v1/devices", { id: "read-try", class: "climate" }],
          ["POST", "/v1/devices/bulk", [{ id: "read-try", class: "climate" }]],
          ["POST", "/v1/devices/cfg-a-1/disable", undefined],
          ["POST", "/v1/devices/cfg-a-1/enable", undefined],
          ["POST", "/v1/devices/cfg-a-1/rotate", {}],
          ["DELETE", "/v1/devices/cfg-a-1", undefined],
          ["POST", "/v1/device-classes", { name: "read-try", definition: climate }],
          ["POST", "/v1/device-classes/climate/versions", { definition: climate }],
          ["POST", "/v1/tenants/tenant-a/keys", { role: "read", name: "x" }],
          ["GET", "/v1/tenants/tenant-a/keys", undefined],
          ["DELETE", "/v1/tenants/tenant-a/keys/0123456789ab", undefined],
        ] as const) {
          const res = yield* call(method, path, { key: READ_A, json })
          expect(res.status, `${method} ${path}`).toBe(403)
          expect(res.json.message, `${method} ${path}`).toContain("this key can only read")
        }
        // Tenant management needs an operator key.
        for (const key of [ADMIN_A, READ_A]) {
          for (const [method, path, json] of [
            ["GET", "/v1/tenants", undefined],
            ["POST", "/v1/tenants", { id: "nope" }],
            ["DELETE", "/v1/tenants/tenant-b", undefined],
          ] as const) {
            const res = yield* call(method, path, { key, json })
            expect(res.status, `${method} ${path}`).toBe(403)
            expect(res.json.message).toBe("managing tenants needs an operator key")
          }
        }
        // A tenant's devices and classes are its admin's, not the operator's.
        const devices = yield* call("POST", "/v1/devices", {
          key: OPERATOR,
          json: { id: "op-try", class: "climate" },
        })
        expect(devices.status).toBe(403)
        expect(devices.json.message).toContain("managed with an admin key of that tenant")
        const classes = yield* call("GET", "/v1/device-classes", { key: OPERATOR })
        expect(classes.status).toBe(403)
        expect(classes.json.message).toContain("reads no tenant's data")
      }),
  )

  it.effect(
    "operator: creates, lists and deletes tenants; deleting removes the tenant's keys, devices and classes",
    () =>
      Effect.gen(function* () {
        const created = yield* call("POST", "/v1/tenants", {
          key: OPERATOR,
          json: { id: "tenant-new", max_messages_per_second: 50 },
        })
        expect(created.status).toBe(201)
        expect(created.json).toEqual({
          id: "tenant-new",
          max_messages_per_second: 50,
          source: "api",
          devices: 0,
        })
        // Refusals: an id that exists (the file's or the API's), a malformed id, a bad quota, an unknown key, not JSON.
        for (const id of ["tenant-new", "tenant-a"]) {
          const dup = yield* call("POST", "/v1/tenants", { key: OPERATOR, json: { id } })
          expect(dup.status).toBe(409)
          expect(dup.json).toEqual({ _tag: "Conflict", message: `tenant "${id}" already exists` })
        }
        const bad = yield* call("POST", "/v1/tenants", {
          key: OPERATOR,
          json: { id: "has space", max_messages_per_second: -1, colour: "red" },
        })
        expect(bad.status).toBe(400)
        expect(bad.json._tag).toBe("InvalidBody")
        const fields = (bad.json.problems as Array<{ field: string; reason: string }>)
          .map((p) => p.field)
          .sort()
        expect(fields).toEqual(["colour", "id", "max_messages_per_second"])
        expect(bad.json.message).toContain("id: must be 1-100 characters")
        expect(bad.json.message).toContain("max_messages_per_second: must be a positive number")
        const notJson = yield* call("POST", "/v1/tenants", { key: OPERATOR, body: "{id: oops" })
        expect(notJson.status).toBe(400)
        expect(notJson.json.message).toContain("the body is not JSON")
        const missing = yield* call("POST", "/v1/tenants", { key: OPERATOR, json: {} })
        expect(missing.status).toBe(400)
        expect(missing.json.problems).toEqual([{ field: "id", reason: "is missing" }])

        const list = yield* call("GET", "/v1/tenants", { key: OPERATOR })
        expect(list.status).toBe(200)
        expect(list.json.tenants).toEqual([
          { id: "tenant-a", source: "config", devices: expect.any(Number) },
          { id: "tenant-b", source: "config", devices: expect.any(Number) },
          { id: "tenant-new", max_messages_per_second: 50, source: "api", devices: 0 },
        ])

        // Give it a key, a class and a device; then delete it.
        const key = (yield* call("POST", "/v1/tenants/tenant-new/keys", {
          key: OPERATOR,
          json: { role: "admin", name: "first admin" },
        })).json.key as string
        const works = yield* eventually(call("GET", "/v1/devices", { key }), (r) => r.status === 200)
        expect(works.status).toBe(200)
        expect(
          (yield* call("POST", "/v1/device-classes", {
            key,
            json: { name: "new-class", definition: climate },
          })).status,
        ).toBe(201)
        const device = yield* call("POST", "/v1/devices", {
          key,
          json: { id: "new-dev-1", class: "new-class" },
        })
        expect(device.status).toBe(201)
        expect((yield* call("GET", "/v1/tenants", { key: OPERATOR })).json.tenants[2].devices).toBe(1)

        // The file's tenants are the file's.
        const cfg = yield* call("DELETE", "/v1/tenants/tenant-b", { key: OPERATOR })
        expect(cfg.status).toBe(409)
        expect(cfg.json.message).toContain("managed by the configuration file")

        expect((yield* call("DELETE", "/v1/tenants/tenant-new", { key: OPERATOR })).status).toBe(204)
        const gone = yield* call("DELETE", "/v1/tenants/tenant-new", { key: OPERATOR })
        expect(gone.status).toBe(404)
        expect(gone.json).toEqual({ _tag: "TenantNotFound", message: "tenant not found" })
        const state = yield* Effect.flatMap(Registry, (r) => r.load)
        expect(state.tenants.has("tenant-new")).toBe(false)
        expect([...state.apiKeys.values()].some((k) => k.tenantId === "tenant-new")).toBe(false)
        expect(state.devices.has("new-dev-1")).toBe(false)
        expect(state.classes.has("new-class")).toBe(false)
        // And every process follows: the key and the device stop working.
        expect((yield* eventually(call("GET", "/v1/devices", { key }), (r) => r.status === 401)).status).toBe(
          401,
        )
        const t = yield* tenancy
        expect(Option.isNone(t.device("tenant-new", "new-dev-1"))).toBe(true)
      }),
  )

  it.effect(
    "operator: a tenant's retentions are set, changed and checked; deleting a tenant deletes its stored data",
    () =>
      Effect.gen(function* () {
        const created = yield* call("POST", "/v1/tenants", {
          key: OPERATOR,
          json: { id: "tenant-kept", raw_retention_days: 30, rollup_retention_days: 365 },
        })
        expect(created.status).toBe(201)
        expect(created.json).toMatchObject({ raw_retention_days: 30, rollup_retention_days: 365 })

        // Refusals name the field: not whole days, rollups shorter than raw, rollups with raw kept forever.
        const fractional = yield* call("POST", "/v1/tenants", {
          key: OPERATOR,
          json: { id: "t-x", raw_retention_days: 0.5 },
        })
        expect(fractional.status).toBe(400)
        expect(fractional.json.problems).toEqual([
          {
            field: "raw_retention_days",
            reason:
              "must be a whole number of days from 1 to 36500, got 0.5 (leave it unset to keep forever)",
          },
        ])
        for (const json of [
          { id: "t-y", raw_retention_days: 30, rollup_retention_days: 7 },
          { id: "t-y", rollup_retention_days: 7 },
        ]) {
          const shorter = yield* call("POST", "/v1/tenants", { key: OPERATOR, json })
          expect(shorter.status).toBe(400)
          expect(shorter.json.problems[0].field).toBe("rollup_retention_days")
        }

        // PATCH: a value sets, null unsets, absent keeps; checked against the merged result.
        const patched = yield* call("PATCH", "/v1/tenants/tenant-kept", {
          key: OPERATOR,
          json: { raw_retention_days: 7, max_messages_per_second: 20 },
        })
        expect(patched.status).toBe(200)
        expect(patched.json).toEqual({
          id: "tenant-kept",
          max_messages_per_second: 20,
          raw_retention_days: 7,
          rollup_retention_days: 365,
          source: "api",
          devices: 0,
        })
        const raise = yield* call("PATCH", "/v1/tenants/tenant-kept", {
          key: OPERATOR,
          json: { raw_retention_days: 400 },
        })
        expect(raise.status).toBe(400)
        expect(raise.json.message).toContain("must be at least raw_retention_days (400)")
        const unset = yield* call("PATCH", "/v1/tenants/tenant-kept", {
          key: OPERATOR,
          json: { rollup_retention_days: null, max_messages_per_second: null },
        })
        expect(unset.json).toEqual({ id: "tenant-kept", raw_retention_days: 7, source: "api", devices: 0 })
        const row = (yield* Effect.flatMap(Registry, (r) => r.load)).tenants.get("tenant-kept")
        expect(row).toEqual({ id: "tenant-kept", rawRetentionDays: 7, source: "api" })
        expect((yield* call("PATCH", "/v1/tenants/tenant-b", { key: OPERATOR, json: {} })).status).toBe(409)
        expect((yield* call("PATCH", "/v1/tenants/nobody", { key: OPERATOR, json: {} })).status).toBe(404)
        expect((yield* call("PATCH", "/v1/tenants/tenant-kept", { key: ADMIN_A, json: {} })).status).toBe(403)

        // Its stored data, and another tenant's, then the delete: only its data goes.
        const store = yield* TelemetryStore
        const row1 = (tenantId: string) => ({
          tenantId,
          deviceId: "d1",
          deviceClass: "climate",
          msgId: "m1",
          ts: Date.UTC(2026, 0, 1),
          receivedAt: Date.UTC(2026, 0, 1),
          values: { temperature: 20 },
        })
        yield* store.insert([row1("tenant-kept"), row1("tenant-a")], "retention-delete")
        expect(Option.isSome(yield* store.latest("tenant-kept", "d1"))).toBe(true)
        expect((yield* call("DELETE", "/v1/tenants/tenant-kept", { key: OPERATOR })).status).toBe(204)
        const range = { from: 0, to: Date.UTC(2027, 0, 1) }
        expect((yield* store.history("tenant-kept", "d1", range, { limit: 10 })).rows).toEqual([])
        expect(yield* store.latest("tenant-kept", "d1")).toEqual(Option.none())
        expect((yield* store.history("tenant-a", "d1", range, { limit: 10 })).rows).toHaveLength(1)
      }),
  )

  it.effect(
    "keys: made once and stored hashed, listed without the key, revoked; a tenant admin manages only its own",
    () =>
      Effect.gen(function* () {
        const made = yield* call("POST", "/v1/tenants/tenant-a/keys", {
          key: ADMIN_A,
          json: { role: "read", name: "dashboard" },
        })
        expect(made.status).toBe(201)
        const key = made.json.key as string
        expect(made.json).toEqual({ key, id: sha256(key).slice(0, 12), name: "dashboard", role: "read" })
        expect(key.length).toBeGreaterThanOrEqual(32)

        // The new read key reads, within the poll interval, and cannot write.
        expect((yield* eventually(call("GET", "/v1/devices", { key }), (r) => r.status === 200)).status).toBe(
          200,
        )
        expect(
          (yield* call("POST", "/v1/devices", { key, json: { id: "x-1", class: "climate" } })).status,
        ).toBe(403)

        const list = yield* call("GET", "/v1/tenants/tenant-a/keys", { key: ADMIN_A })
        expect(list.status).toBe(200)
        expect(list.json.keys).toContainEqual({
          id: made.json.id,
          name: "dashboard",
          role: "read",
          source: "api",
        })
        expect(list.json.keys).toContainEqual({
          id: sha256(ADMIN_A).slice(0, 12),
          name: "tenant-a api key 1",
          role: "admin",
          source: "config",
        })
        expect(list.text).not.toContain(key)
        expect(list.text).not.toContain(ADMIN_A)
        // The operator sees the same; another tenant's admin sees a tenant that does not exist.
        expect((yield* call("GET", "/v1/tenants/tenant-a/keys", { key: OPERATOR })).json).toEqual(list.json)
        for (const [method, path, json] of [
          ["GET", "/v1/tenants/tenant-a/keys", undefined],
          ["POST", "/v1/tenants/tenant-a/keys", { role: "admin", name: "takeover" }],
          ["DELETE", `/v1/tenants/tenant-a/keys/${made.json.id}`, undefined],
        ] as const) {
          const foreign = yield* call(method, path, { key: ADMIN_B, json })
          const missing = yield* call(method, path.replace("tenant-a", "no-such-tenant"), {
            key: OPERATOR,
            json,
          })
          expect(foreign.status, `${method} ${path}`).toBe(404)
          expect(foreign.text).toBe(missing.text)
        }
        // Refusals: a bad role or name, an unknown key id, a key of the file.
        const bad = yield* call("POST", "/v1/tenants/tenant-a/keys", {
          key: ADMIN_A,
          json: { role: "operator", name: "" },
        })
        expect(bad.status).toBe(400)
        expect((bad.json.problems as Array<{ field: string }>).map((p) => p.field).sort()).toEqual([
          "name",
          "role",
        ])
        const unknown = yield* call("DELETE", "/v1/tenants/tenant-a/keys/000000000000", { key: ADMIN_A })
        expect(unknown.status).toBe(404)
        expect(unknown.json._tag).toBe("ApiKeyNotFound")
        const fileKey = yield* call("DELETE", `/v1/tenants/tenant-a/keys/${sha256(READ_A).slice(0, 12)}`, {
          key: ADMIN_A,
        })
        expect(fileKey.status).toBe(409)
        expect(fileKey.json.message).toContain("managed by the configuration file")

        // Only the hash is stored.
        const bytes = registryBytes()
        expect(bytes.includes(key)).toBe(false)
        expect(bytes.includes(sha256(key))).toBe(true)

        // Revoked: refused everywhere within the poll interval.
        expect(
          (yield* call("DELETE", `/v1/tenants/tenant-a/keys/${made.json.id}`, { key: ADMIN_A })).status,
        ).toBe(204)
        expect((yield* eventually(call("GET", "/v1/devices", { key }), (r) => r.status === 401)).status).toBe(
          401,
        )
        expect(
          (yield* call("DELETE", `/v1/tenants/tenant-a/keys/${made.json.id}`, { key: ADMIN_A })).status,
        ).toBe(404)
      }),
  )

  it.effect(
    "devices: created with a credential shown once and stored hashed; disabled, enabled, deleted",
    () =>
      Effect.gen(function* () {
        const created = yield* call("POST", "/v1/devices", {
          key: ADMIN_A,
          json: { id: "dev-a-1", class: "climate" },
        })
        expect(created.status).toBe(201)
        const credential = created.json.credential as string
        expect(created.json).toEqual({ id: "dev-a-1", class: "climate", credential })
        expect(yield* eventually(authenticates("dev-a-1", credential), (ok) => ok)).toBe(true)
        const t = yield* tenancy
        expect(Option.getOrThrow(t.deviceByCredential(credential))).toEqual({
          tenantId: "tenant-a",
          deviceId: "dev-a-1",
          deviceClass: "climate",
        })
        const listed = yield* call("GET", "/v1/devices", { key: ADMIN_A })
        expect((listed.json.devices as Array<{ deviceId: string }>).map((d) => d.deviceId)).toContain(
          "dev-a-1",
        )
        expect(listed.text).not.toContain(credential)

        // Only the hash is stored.
        const bytes = registryBytes()
        expect(bytes.includes(credential)).toBe(false)
        expect(bytes.includes(sha256(credential))).toBe(true)
        expect(bytes.includes("cfg-a-1-secret")).toBe(false)

        // Refusals: an id taken (in any tenant), an unknown class, another tenant's class, a malformed id.
        for (const id of ["dev-a-1", "cfg-b-1"]) {
          const dup = yield* call("POST", "/v1/devices", { key: ADMIN_A, json: { id, class: "climate" } })
          expect(dup.status).toBe(409)
          expect(dup.json).toEqual({ _tag: "Conflict", message: `device id "${id}" is already registered` })
        }
        const unknownClass = yield* call("POST", "/v1/devices", {
          key: ADMIN_A,
          json: { id: "dev-a-2", class: "nope" },
        })
        expect(unknownClass.status).toBe(400)
        expect(unknownClass.json.problems).toEqual([
          { field: "class", reason: 'unknown device class "nope"' },
        ])
        expect(
          (yield* call("POST", "/v1/device-classes", {
            key: ADMIN_B,
            json: { name: "b-only", definition: climate },
          })).status,
        ).toBe(201)
        const foreignClass = yield* call("POST", "/v1/devices", {
          key: ADMIN_A,
          json: { id: "dev-a-2", class: "b-only" },
        })
        expect(foreignClass.status).toBe(400)
        expect(foreignClass.json.problems).toEqual([
          { field: "class", reason: 'unknown device class "b-only"' },
        ])
        const malformed = yield* call("POST", "/v1/devices", {
          key: ADMIN_A,
          json: { id: "../etc", class: 3 },
        })
        expect(malformed.status).toBe(400)
        expect((malformed.json.problems as Array<{ field: string }>).map((p) => p.field).sort()).toEqual([
          "class",
          "id",
        ])

        // Disable: refused within the poll interval; enable: accepted again.
        const disabled = yield* call("POST", "/v1/devices/dev-a-1/disable", { key: ADMIN_A })
        expect(disabled.status).toBe(200)
        expect(disabled.json).toEqual({ id: "dev-a-1", class: "climate", enabled: false, source: "api" })
        expect(yield* eventually(authenticates("dev-a-1", credential), (ok) => !ok)).toBe(false)
        const enabled = yield* call("POST", "/v1/devices/dev-a-1/enable", { key: ADMIN_A })
        expect(enabled.json.enabled).toBe(true)
        expect(yield* eventually(authenticates("dev-a-1", credential), (ok) => ok)).toBe(true)

        // The file's devices may be disabled and enabled, not deleted.
        const cfgOff = yield* call("POST", "/v1/devices/cfg-a-1/disable", { key: ADMIN_A })
        expect(cfgOff.json).toEqual({ id: "cfg-a-1", class: "climate", enabled: false, source: "config" })
        expect(yield* eventually(authenticates("cfg-a-1", "cfg-a-1-secret"), (ok) => !ok)).toBe(false)
        expect((yield* call("POST", "/v1/devices/cfg-a-1/enable", { key: ADMIN_A })).status).toBe(200)
        expect(yield* eventually(authenticates("cfg-a-1", "cfg-a-1-secret"), (ok) => ok)).toBe(true)
        const cfgDelete = yield* call("DELETE", "/v1/devices/cfg-a-1", { key: ADMIN_A })
        expect(cfgDelete.status).toBe(409)
        expect(cfgDelete.json.message).toBe(
          'device "cfg-a-1" is managed by the configuration file: remove it there, then apply the file',
        )

        // Another tenant's device is answered exactly like a missing one, for every write.
        for (const [method, suffix, json] of [
          ["POST", "/disable", undefined],
          ["POST", "/enable", undefined],
          ["POST", "/rotate", {}],
          ["DELETE", "", undefined],
        ] as const) {
          const foreign = yield* call(method, `/v1/devices/cfg-b-1${suffix}`, { key: ADMIN_A, json })
          const missing = yield* call(method, `/v1/devices/no-such-device${suffix}`, { key: ADMIN_A, json })
          expect(foreign.status, suffix).toBe(404)
          expect(foreign.text).toBe(missing.text)
          expect(foreign.json).toEqual({ _tag: "DeviceNotFound", message: "device not found" })
        }
        expect(Option.isSome((yield* tenancy).authenticateDevice("cfg-b-1", "cfg-b-1-secret"))).toBe(true)

        // Delete: gone, refused, and 404 the second time.
        expect((yield* call("DELETE", "/v1/devices/dev-a-1", { key: ADMIN_A })).status).toBe(204)
        expect(yield* eventually(authenticates("dev-a-1", credential), (ok) => !ok)).toBe(false)
        expect((yield* call("DELETE", "/v1/devices/dev-a-1", { key: ADMIN_A })).status).toBe(404)
      }),
  )

  it.effect("rotate: the new credential works at once, the old one until the grace period ends", () =>
    Effect.gen(function* () {
      const old = (yield* call("POST", "/v1/devices", {
        key: ADMIN_A,
        json: { id: "rot-1", class: "climate" },
      })).json.credential as string
      expect(yield* eventually(authenticates("rot-1", old), (ok) => ok)).toBe(true)

      const before = Date.now()
      const rotated = yield* call("POST", "/v1/devices/rot-1/rotate", {
        key: ADMIN_A,
        json: { grace_seconds: 1 },
      })
      expect(rotated.status).toBe(200)
      const fresh = rotated.json.credential as string
      expect(fresh).not.toBe(old)
      expect(rotated.json.previous_valid_until).toBeGreaterThanOrEqual(before + 1000)
      expect(rotated.json.previous_valid_until).toBeLessThanOrEqual(Date.now() + 1000)
      expect(yield* eventually(authenticates("rot-1", fresh), (ok) => ok)).toBe(true)
      // Within the grace period both work; after it only the new one.
      if (Date.now() < rotated.json.previous_valid_until - 100)
        expect(yield* authenticates("rot-1", old)).toBe(true)
      yield* Effect.sleep(Math.max(0, rotated.json.previous_valid_until - Date.now()) + 50)
      expect(yield* authenticates("rot-1", old)).toBe(false)
      expect(yield* authenticates("rot-1", fresh)).toBe(true)
      expect(registryBytes().includes(fresh)).toBe(false)

      // No body: the default grace of an hour. 0: the old one stops at once.
      const byDefault = yield* call("POST", "/v1/devices/rot-1/rotate", { key: ADMIN_A })
      expect(byDefault.status).toBe(200)
      expect(byDefault.json.previous_valid_until).toBeGreaterThanOrEqual(Date.now() + 3_590_000)
      const now = yield* call("POST", "/v1/devices/rot-1/rotate", {
        key: ADMIN_A,
        json: { grace_seconds: 0 },
      })
      expect(now.json.previous_valid_until).toBeNull()
      expect(yield* eventually(authenticates("rot-1", now.json.credential), (ok) => ok)).toBe(true)
      expect(yield* authenticates("rot-1", byDefault.json.credential)).toBe(false)
      expect(yield* authenticates("rot-1", fresh)).toBe(false)
      const stored = (yield* Effect.flatMap(Registry, (r) => r.load)).devices.get("rot-1")!
      expect(stored.credentials).toEqual([{ hash: `sha256:${sha256(now.json.credential)}`, expiresAt: null }])

      // A file device may be rotated too.
      const cfg = yield* call("POST", "/v1/devices/cfg-a-1/rotate", {
        key: ADMIN_A,
        json: { grace_seconds: 60 },
      })
      expect(cfg.status).toBe(200)
      expect(yield* eventually(authenticates("cfg-a-1", cfg.json.credential), (ok) => ok)).toBe(true)
      expect(yield* authenticates("cfg-a-1", "cfg-a-1-secret")).toBe(true)

      for (const grace of [-1, 30 * 24 * 3600 + 1, 1.5, "60"]) {
        const bad = yield* call("POST", "/v1/devices/rot-1/rotate", {
          key: ADMIN_A,
          json: { grace_seconds: grace },
        })
        expect(bad.status, String(grace)).toBe(400)
        expect(bad.json.problems[0].field).toBe("grace_seconds")
      }
    }),
  )

  it.effect("bulk: 10,000 devices in one JSON request and in one CSV request, each with its credential", () =>
    Effect.gen(function* () {
      const ids = (prefix: string) =>
        Array.from({ length: 10_000 }, (_, i) => `${prefix}-${String(i).padStart(5, "0")}`)
      const before = (yield* tenancy).devices("tenant-a").length

      const json = yield* call("POST", "/v1/devices/bulk", {
        key: ADMIN_A,
        json: ids("bulk-json").map((id) => ({ id, class: "climate" })),
      })
      expect(json.status).toBe(201)
      expect(json.json.count).toBe(10_000)
      const jsonDevices = json.json.devices as Array<{ id: string; credential: string }>
      expect(jsonDevices.map((d) => d.id)).toEqual(ids("bulk-json"))
      expect(new Set(jsonDevices.map((d) => d.credential)).size).toBe(10_000)

      const csv = yield* call("POST", "/v1/devices/bulk", {
        key: ADMIN_A,
        body: `id,class\r\n${ids("bulk-csv")
          .map((id) => `${id},climate`)
          .join("\r\n")}\r\n`,
        contentType: "text/csv",
      })
      expect(csv.status).toBe(201)
      expect(csv.json.count).toBe(10_000)
      const csvDevices = csv.json.devices as Array<{ id: string; credential: string }>

      const t = yield* tenancy
      yield* eventually(
        Effect.sync(() => t.devices("tenant-a").length),
        (n) => n === before + 20_000,
      )
      expect(t.devices("tenant-a").length).toBe(before + 20_000)
      for (const d of [jsonDevices[0]!, jsonDevices[9_999]!, csvDevices[0]!, csvDevices[4_321]!])
        expect(yield* authenticates(d.id, d.credential)).toBe(true)
      const bytes = registryBytes()
      for (const d of [jsonDevices[17]!, csvDevices[9_998]!]) expect(bytes.includes(d.credential)).toBe(false)
    }),
  )

  it.effect("bulk: one bad row refuses the whole request with that row's error; nothing is created", () =>
    Effect.gen(function* () {
      const rows = Array.from({ length: 10_000 }, (_, i) => ({ id: `refused-${i + 1}`, class: "climate" }))
      rows[4_999] = { id: "refused-5000", class: "no-such-class" }
      const revision = yield* Effect.flatMap(Registry, (r) => r.revision)
      const one = yield* call("POST", "/v1/devices/bulk", { key: ADMIN_A, json: rows })
      expect(one.status).toBe(400)
      expect(one.json).toEqual({
        _tag: "BulkRefused",
        message: "1 of 10000 rows are bad, nothing was created",
        error_count: 1,
        errors: [{ row: 5000, id: "refused-5000", reason: 'class: unknown device class "no-such-class"' }],
      })
      expect(yield* Effect.flatMap(Registry, (r) => r.revision)).toBe(revision)
      expect((yield* Effect.flatMap(Registry, (r) => r.load)).devices.has("refused-1")).toBe(false)

      // Each kind of bad row, in CSV: malformed id, unknown class, a duplicate, an id registered, a short line.
      const csv = [
        "id,class",
        "ok-1,climate",
        "bad id,climate",
        "ok-2,b-only",
        "ok-1,climate",
        "cfg-b-1,climate",
        "just-an-id",
        "",
        "ok-3,climate",
      ].join("\n")
      const many = yield* call("POST", "/v1/devices/bulk", {
        key: ADMIN_A,
        body: csv,
        contentType: "text/csv",
      })
      expect(many.status).toBe(400)
      expect(many.json.error_count).toBe(5)
      expect(many.json.errors).toEqual([
        { row: 2, id: "bad id", reason: expect.stringContaining("id: must be 1-100 characters") },
        { row: 3, id: "ok-2", reason: 'class: unknown device class "b-only"' },
        { row: 4, id: "ok-1", reason: "id: also at row 1" },
        { row: 5, id: "cfg-b-1", reason: 'id: "cfg-b-1" is already registered' },
        { row: 6, id: "just-an-id", reason: "expected 2 columns (id,class), got 1" },
      ])
      expect(Option.isNone((yield* tenancy).deviceById("ok-1"))).toBe(true)

      // At most 100 bad rows are listed, with the count of all.
      const lots = yield* call("POST", "/v1/devices/bulk", {
        key: ADMIN_A,
        json: Array.from({ length: 250 }, (_, i) => ({
          id: `lots-${i}`,
          class: i % 2 === 0 ? "nope" : "climate",
        })),
      })
      expect(lots.status).toBe(400)
      expect(lots.json.error_count).toBe(125)
      expect(lots.json.errors.length).toBe(100)
      expect(lots.json.message).toBe(
        "125 of 250 rows are bad, nothing was created (the first 100 are listed)",
      )

      // Whole-body refusals.
      const cases: Array<[string, string, string]> = [
        ["[]", "application/json", "no devices in the request"],
        ['{"id":"x"}', "application/json", "expected a JSON array of {id, class}"],
        ["[{", "application/json", "the body is not JSON"],
        ["name,kind\nx,climate", "text/csv", "the first line must be the header id,class"],
        ["id,class\nx,climate", "application/xml", 'unsupported Content-Type "application/xml"'],
      ]
      for (const [body, contentType, reason] of cases) {
        const res = yield* call("POST", "/v1/devices/bulk", { key: ADMIN_A, body, contentType })
        expect(res.status, body).toBe(400)
        expect(res.json.message, body).toContain(reason)
      }
      // Over 16 MiB: 413 (and 1 MiB for the other bodies).
      const huge = yield* call("POST", "/v1/devices/bulk", {
        key: ADMIN_A,
        body: `id,class\n${"x".repeat(16 * 1024 * 1024)}`,
        contentType: "text/csv",
      })
      expect(huge.status).toBe(413)
      expect(huge.json).toEqual({
        _tag: "BodyTooLarge",
        message: "the request body is larger than this endpoint's limit of 16777216 bytes",
        max_bytes: 16_777_216,
      })
      const bigClass = yield* call("POST", "/v1/device-classes", {
        key: ADMIN_A,
        json: { name: "big", definition: { fields: {}, pad: "x".repeat(1024 * 1024) } },
      })
      expect(bigClass.status).toBe(413)
      expect(yield* Effect.flatMap(Registry, (r) => r.revision)).toBe(revision)
    }),
  )

  it.effect(
    "device classes: listed with the current version; a tenant's own class and its new versions",
    () =>
      Effect.gen(function* () {
        const created = yield* call("POST", "/v1/device-classes", {
          key: ADMIN_A,
          json: { name: "a-meter", definition: { fields: { watts: { type: "number", unit: "W" } } } },
        })
        expect(created.status).toBe(201)
        expect(created.json).toEqual({ name: "a-meter", version: 1 })

        const list = yield* call("GET", "/v1/device-classes", { key: READ_A })
        expect(list.status).toBe(200)
        const names = (list.json.deviceClasses as Array<{ name: string }>).map((c) => c.name)
        expect(names).toContain("climate")
        expect(names).toContain("a-meter")
        expect(names).not.toContain("b-only") // tenant-b's own
        expect(list.json.deviceClasses).toContainEqual({
          name: "climate",
          shared: true,
          source: "config",
          version: 1,
          definition: climate,
        })

        // A device of the class, then a new version: Tenancy follows, the stored versions stay.
        expect(
          (yield* call("POST", "/v1/devices", { key: ADMIN_A, json: { id: "meter-a-1", class: "a-meter" } }))
            .status,
        ).toBe(201)
        const v2 = { fields: { watts: { type: "number", from: "mw", scale: 0.001, unit: "W" } } }
        const added = yield* call("POST", "/v1/device-classes/a-meter/versions", {
          key: ADMIN_A,
          json: { definition: v2 },
        })
        expect(added.status).toBe(201)
        expect(added.json).toEqual({ name: "a-meter", version: 2 })
        const t = yield* tenancy
        const current = yield* eventually(
          Effect.sync(() => t.deviceClass("a-meter")),
          (c) => Option.isSome(c) && c.value.fields.watts?.from === "mw",
        )
        expect(Option.getOrThrow(current)).toEqual({ name: "a-meter", ...v2 })
        const detail = yield* call("GET", "/v1/device-classes/a-meter", { key: READ_A })
        expect(detail.json).toEqual({
          name: "a-meter",
          shared: false,
          source: "api",
          versions: [
            { version: 1, definition: { fields: { watts: { type: "number", unit: "W" } } } },
            { version: 2, definition: v2 },
          ],
        })
        const same = yield* call("POST", "/v1/device-classes/a-meter/versions", {
          key: ADMIN_A,
          json: { definition: v2 },
        })
        expect(same.status).toBe(409)
        expect(same.json.message).toContain("the same as version 2")

        // Refusals: the checks of the configuration file, unknown keys, a name taken, a shared class, another tenant's.
        const invalid = yield* call("POST", "/v1/device-classes", {
          key: ADMIN_A,
          json: {
            name: "a-bad",
            definition: {
              fields: { t: { type: "number", min: 10, max: 0 }, ok: { type: "string", scale: 2 } },
            },
          },
        })
        expect(invalid.status).toBe(400)
        expect(invalid.json.problems).toEqual([
          { field: "definition.fields.t.min", reason: "min 10 is greater than max 0" },
          {
            field: "definition.fields.ok.scale",
            reason: "scale applies to number and integer fields only, not to string",
          },
        ])
        const typo = yield* call("POST", "/v1/device-classes", {
          key: ADMIN_A,
          json: { name: "a-typo", definition: { feilds: {} } },
        })
        expect(typo.status).toBe(400)
        expect((typo.json.problems as Array<{ field: string }>).map((p) => p.field).sort()).toEqual([
          "definition.feilds",
          "definition.fields",
        ])
        const empty = yield* call("POST", "/v1/device-classes", {
          key: ADMIN_A,
          json: { name: "a-empty", definition: { fields: {} } },
        })
        expect(empty.json.problems).toEqual([
          { field: "definition.fields", reason: "a device class needs at least one field" },
        ])
        for (const name of ["climate", "a-meter", "b-only"]) {
          const taken = yield* call("POST", "/v1/device-classes", {
            key: ADMIN_A,
            json: { name, definition: climate },
          })
          expect(taken.status, name).toBe(409)
          expect(taken.json.message).toBe(`device class name "${name}" is taken`)
        }
        const shared = yield* call("POST", "/v1/device-classes/climate/versions", {
          key: ADMIN_A,
          json: { definition: v2 },
        })
        expect(shared.status).toBe(403)
        expect(shared.json.message).toContain("shared device classes belong to the configuration file")
        for (const [method, path, json] of [
          ["GET", "/v1/device-classes/b-only", undefined],
          ["POST", "/v1/device-classes/b-only/versions", { definition: v2 }],
        ] as const) {
          const foreign = yield* call(method, path, { key: ADMIN_A, json })
          const missing = yield* call(method, path.replace("b-only", "no-such-class"), { key: ADMIN_A, json })
          expect(foreign.status).toBe(404)
          expect(foreign.text).toBe(missing.text)
        }
        expect((yield* call("GET", "/v1/device-classes/b-only", { key: ADMIN_B })).status).toBe(200)
      }),
  )

  it.effect("concurrent writes all commit: a write that loses the race is retried on the new state", () =>
    Effect.gen(function* () {
      const ids = Array.from({ length: 12 }, (_, i) => `race-${i}`)
      const answers = yield* Effect.all(
        ids.map((id) =>
          call("POST", "/v1/devices", { key: i(id) ? ADMIN_A : ADMIN_B, json: { id, class: "climate" } }),
        ),
        { concurrency: "unbounded" },
      )
      expect(answers.map((a) => a.status)).toEqual(ids.map(() => 201))
      const state = yield* Effect.flatMap(Registry, (r) => r.load)
      for (const id of ids) expect(state.devices.get(id)?.tenantId).toBe(i(id) ? "tenant-a" : "tenant-b")
      // The same id raced twice: exactly one wins, the other is told it is taken.
      const twice = yield* Effect.all(
        [ADMIN_A, ADMIN_B].map((key) =>
          call("POST", "/v1/devices", { key, json: { id: "race-twice", class: "climate" } }),
        ),
        { concurrency: "unbounded" },
      )
      expect(twice.map((a) => a.status).sort()).toEqual([201, 409])
    }),
  )

  it.effect("describes every admin endpoint in the OpenAPI document", () =>
    Effect.gen(function* () {
      const doc = (yield* call("GET", "/openapi.json")).json
      const expected: Array<[string, string]> = [
        ["get", "/v1/tenants"],
        ["post", "/v1/tenants"],
        ["delete", "/v1/tenants/{tenantId}"],
        ["post", "/v1/tenants/{tenantId}/keys"],
        ["get", "/v1/tenants/{tenantId}/keys"],
        ["delete", "/v1/tenants/{tenantId}/keys/{keyId}"],
        ["post", "/v1/devices"],
        ["post", "/v1/devices/bulk"],
        ["post", "/v1/devices/{deviceId}/disable"],
        ["post", "/v1/devices/{deviceId}/enable"],
        ["delete", "/v1/devices/{deviceId}"],
        ["post", "/v1/devices/{deviceId}/rotate"],
        ["get", "/v1/device-classes"],
        ["get", "/v1/device-classes/{name}"],
        ["post", "/v1/device-classes"],
        ["post", "/v1/device-classes/{name}/versions"],
      ]
      for (const [method, path] of expected) {
        const op = doc.paths[path]?.[method]
        expect(op, `${method} ${path}`).toBeDefined()
        expect(op.description.length, `${method} ${path}`).toBeGreaterThan(10)
      }
      expect(Object.keys(doc.paths["/v1/devices/bulk"].post.requestBody.content).sort()).toEqual([
        "application/json",
        "text/csv",
      ])
      expect(doc.paths["/v1/devices"].post.responses["201"]).toBeDefined()
      const tags = (doc.tags as Array<{ name: string; description?: string }>).map((t) => t.description ?? "")
      expect(tags.some((d) => d.includes("managed by the configuration file"))).toBe(true)
    }),
  )
})

describe("admin writes", () => {
  test("commit only what the edit changed: an equal copy of a row is no change", () => {
    const base = { ...Tenancy.stateOfConfig(config), revision: 3 }
    const draft = new Draft(base)
    draft.removeTenant("tenant-b")
    draft.tenants.set("tenant-c", { id: "tenant-c", source: "api" })
    const d = draft.devices.get("cfg-a-1")!
    draft.devices.set(d.id, { ...d, enabled: false })
    const c = draft.classes.get("climate")!
    draft.classes.set(c.name, { ...c })
    expect(draft.mutations().length).toBe(5) // tenant-b, its key and device gone; tenant-c; cfg-a-1
    expect(new Draft(emptyState).mutations()).toEqual([])
  })
})
