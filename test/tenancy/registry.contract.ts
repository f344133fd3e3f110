/**
 * The Registry contract suite. Every backend runs it. Revisions are global to a store, so each
 * test works on a store of its own: `fresh()` names a new, empty one, and `open(store)` is a
 * connection to it — building that layer twice is two processes on one store; building it again
 * after its scope closed is a restart.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, Layer, type Scope } from "effect"
import type { DeviceClassConfig } from "../../src/tenancy/PlatformConfig.js"
import {
  type Changes,
  type Kind,
  Mutation,
  type RegApiKey,
  type RegDevice,
  type RegDeviceClass,
  Registry,
  type RegistryApi,
  RegistryConflict,
  type RegistryState,
  type RegTenant,
  type Row,
  rowId,
} from "../../src/tenancy/Registry.js"

export interface RegistryStore {
  readonly id: string
}

export interface RegistryContractOptions {
  /** A new, empty store for one test. */
  readonly fresh: () => RegistryStore
  /** A connection to `store`, as one process opens it; closed with the layer's scope. */
  readonly open: (store: RegistryStore) => Layer.Layer<Registry, unknown>
}

// Rows of every kind.

const tenant = (id: string, maxMessagesPerSecond?: number): RegTenant =>
  maxMessagesPerSecond === undefined ? { id, source: "api" } : { id, maxMessagesPerSecond, source: "config" }

const apiKey = (hash: string, tenantId: string | null, role: RegApiKey["role"]): RegApiKey => ({
  hash,
  tenantId,
  role,
  name: `key ${hash}`,
  source: "api",
})

const definition = (name: string, extra: Partial<DeviceClassConfig> = {}): DeviceClassConfig => ({
  name,
  fields: {
    temperature: { type: "number", from: "temp_f", unit: "°C", convert: "fahrenheit_to_celsius", min: -50 },
    humidity: { type: "integer", optional: true, default: 0 },
    ok: { type: "boolean", scale: 2, offset: -1 },
  },
  time_field: "ts",
  time_format: "epoch_s",
  ...extra,
})

const deviceClass = (name: string, tenantId: string | null, versions = 1): RegDeviceClass => ({
  name,
  tenantId,
  versions: Array.from({ length: versions }, (_, i) => ({
    version: i + 1,
    definition: definition(name, i === 0 ? {} : { message_id_field: `id_v${i + 1}` }),
  })),
  source: tenantId === null ? "config" : "api",
})

const device = (id: string, tenantId = "acme", className = "thermo", enabled = true): RegDevice => ({
  id,
  tenantId,
  className,
  enabled,
  credentials: [{ hash: `sha256:${id}`, expiresAt: null }],
  source: "api",
})

const put = (row: Row) => Mutation.Put({ row })
const putTenant = (value: RegTenant) => put({ kind: "tenant", value })
const putKey = (value: RegApiKey) => put({ kind: "apiKey", value })
const putClass = (value: RegDeviceClass) => put({ kind: "class", value })
const putDevice = (value: RegDevice) => put({ kind: "device", value })
const remove = (kind: Kind, id: string) => Mutation.Remove({ kind, id })

/** The state a reader holding `state` has after applying `changes`. */
const apply = (state: RegistryState, changes: Changes): RegistryState => {
  const maps = {
    tenant: new Map(state.tenants),
    apiKey: new Map(state.apiKeys),
    class: new Map(state.classes),
    device: new Map(state.devices),
    authority: new Map(state.authorities),
    claim: new Map(state.claims),
  }
  for (const { kind, id } of changes.removed) maps[kind].delete(id)
  for (const row of changes.put) (maps[row.kind] as Map<string, unknown>).set(rowId(row), row.value)
  return {
    revision: changes.revision,
    tenants: maps.tenant,
    apiKeys: maps.apiKey,
    classes: maps.class,
    devices: maps.device,
    authorities: maps.authority,
    claims: maps.claim,
  }
}

const byKey = (a: { kind: string; id: string }, b: { kind: string; id: string }) =>
  `${a.kind}/${a.id}` < `${b.kind}/${b.id}` ? -1 : 1

/** Changes in a comparable form: puts as kind/id/value and removals, each sorted. */
const normalize = (changes: Changes) => ({
  revision: changes.revision,
  put: changes.put.map((row) => ({ kind: row.kind, id: rowId(row), value: row.value })).sort(byKey),
  removed: [...changes.removed].sort(byKey),
})

const expectConflict = <A, E>(effect: Effect.Effect<A, E>, expected: number, actual: number) =>
  Effect.gen(function* () {
    const result = yield* Effect.either(effect)
    expect(Either.isLeft(result)).toBe(true)
    const error = Either.isLeft(result) ? result.left : undefined
    expect(error).toBeInstanceOf(RegistryConflict)
    expect(error).toMatchObject({ expected, actual })
  })

/** A connection to `store` through `open`, until the enclosing scope closes. */
const connectWith =
  (options: RegistryContractOptions) =>
  (store: RegistryStore): Effect.Effect<RegistryApi, unknown, Scope.Scope> =>
    Effect.map(Layer.build(options.open(store)), Context.get(Registry))

// A small registry: two tenants (one with a quota), keys of every role, a shared class with two
// versions and a tenant's class, devices (one disabled, one mid-rotation), and ids shared across
// kinds ("acme" is a tenant and a device; "thermo" a class and a device).
const acme = tenant("acme", 500)
const globex = tenant("globex")
const operatorKey = apiKey("sha256:op", null, "operator")
const adminKey = apiKey("sha256:admin", "acme", "admin")
const readKey = apiKey("sha256:read", "globex", "read")
const thermo = deviceClass("thermo", null, 2)
const meter = deviceClass("meter", "acme")
const d1 = device("d1")
const d2 = device("d2", "acme", "meter", false)
const rotating: RegDevice = {
  ...device("d3", "globex"),
  credentials: [
    { hash: "sha256:old", expiresAt: 1_760_000_000_000 },
    { hash: "sha256:new", expiresAt: null },
  ],
}
const sameIdAsTenant = device("acme")
const sameIdAsClass = device("thermo")
const everything = [
  putTenant(acme),
  putTenant(globex),
  putKey(operatorKey),
  putKey(adminKey),
  putKey(readKey),
  putClass(thermo),
  putClass(meter),
  putDevice(d1),
  putDevice(d2),
  putDevice(rotating),
  putDevice(sameIdAsTenant),
  putDevice(sameIdAsClass),
]

const state = (
  revision: number,
  rows: {
    tenants?: ReadonlyArray<RegTenant>
    apiKeys?: ReadonlyArray<RegApiKey>
    classes?: ReadonlyArray<RegDeviceClass>
    devices?: ReadonlyArray<RegDevice>
  },
): RegistryState => ({
  revision,
  tenants: new Map((rows.tenants ?? []).map((t) => [t.id, t])),
  apiKeys: new Map((rows.apiKeys ?? []).map((k) => [k.hash, k])),
  classes: new Map((rows.classes ?? []).map((c) => [c.name, c])),
  devices: new Map((rows.devices ?? []).map((d) => [d.id, d])),
  authorities: new Map(),
  claims: new Map(),
})

export const registryContract = (name: string, options: RegistryContractOptions) =>
  describe(`Registry contract: ${name}`, () => {
    const connect = connectWith(options)

    it.scoped("a new registry is empty, at revision 0", () =>
      Effect.gen(function* () {
        const registry = yield* connect(options.fresh())
        expect(yield* registry.revision).toBe(0)
        expect(yield* registry.load).toEqual(state(0, {}))
        expect(yield* registry.changesSince(0)).toEqual({ revision: 0, put: [], removed: [] })
      }),
    )

    it.scoped("commit puts and removes rows of every kind; load returns exactly them", () =>
      Effect.gen(function* () {
        const registry = yield* connect(options.fresh())
        expect(yield* registry.commit(everything, 0)).toBe(1)
        const all = state(1, {
          tenants: [acme, globex],
          apiKeys: [operatorKey, adminKey, readKey],
          classes: [thermo, meter],
          devices: [d1, d2, rotating, sameIdAsTenant, sameIdAsClass],
        })
        expect(yield* registry.load).toEqual(all)
        // Class versions come back in order, definitions whole.
        expect((yield* registry.load).classes.get("thermo")!.versions).toEqual(thermo.versions)

        // Remove one of each kind (ids shared with other kinds stay), replace one of each.
        const acme2 = tenant("acme", 1000)
        const thermo3 = deviceClass("thermo", null, 3)
        const adminKey2: RegApiKey = { ...adminKey, name: "renamed" }
        const d1Disabled: RegDevice = { ...d1, enabled: false }
        const removals = [
          remove("tenant", "globex"),
          remove("apiKey", readKey.hash),
          remove("class", "meter"),
          remove("device", "d2"),
          remove("device", "acme"),
        ]
        const replacements = [putTenant(acme2), putKey(adminKey2), putClass(thermo3), putDevice(d1Disabled)]
        expect(yield* registry.commit([...removals, ...replacements], 1)).toBe(2)
        expect(yield* registry.load).toEqual(
          state(2, {
            tenants: [acme2],
            apiKeys: [operatorKey, adminKey2],
            classes: [thermo3],
            devices: [d1Disabled, rotating, sameIdAsClass],
          }),
        )

        // Everything gone: an empty registry again, at a later revision.
        const rest = [
          remove("tenant", "acme"),
          remove("apiKey", operatorKey.hash),
          remove("apiKey", adminKey.hash),
          remove("class", "thermo"),
          remove("device", "d1"),
          remove("device", "d3"),
          remove("device", "thermo"),
        ]
        expect(yield* registry.commit(rest, 2)).toBe(3)
        expect(yield* registry.load).toEqual(state(3, {}))
      }),
    )

    it.scoped("a batch putting one row twice keeps the last; a remove after a put in one batch removes", () =>
      Effect.gen(function* () {
        const registry = yield* connect(options.fresh())
        const first = device("d1")
        const second: RegDevice = { ...first, enabled: false }
        yield* registry.commit(
          [putDevice(first), putDevice(second), putDevice(d2), remove("device", "d2")],
          0,
        )
        expect(yield* registry.load).toEqual(state(1, { devices: [second] }))
        yield* registry.commit([remove("device", "d1"), putDevice(first)], 1)
        expect(yield* registry.load).toEqual(state(2, { devices: [first] }))
      }),
    )

    it.scoped("the revision moves by one per non-empty commit; an empty batch writes nothing", () =>
      Effect.gen(function* () {
        const registry = yield* connect(options.fresh())
        for (let i = 0; i < 5; i++) {
          expect(yield* registry.commit([putDevice(device(`d${i}`))], i)).toBe(i + 1)
          expect(yield* registry.revision).toBe(i + 1)
        }
        // Removing a row moves it too, and so does removing one that is not there (a batch is a batch).
        expect(yield* registry.commit([remove("device", "d0")], 5)).toBe(6)
        expect(yield* registry.commit([remove("device", "never")], 6)).toBe(7)
        const before = yield* registry.load
        expect(yield* registry.commit([], 7)).toBe(7)
        expect(yield* registry.revision).toBe(7)
        expect(yield* registry.load).toEqual(before)
        expect(yield* registry.changesSince(7)).toEqual({ revision: 7, put: [], removed: [] })
        // Still checked: "nothing to change" decided at a stale revision is a conflict.
        yield* expectConflict(registry.commit([], 6), 6, 7)
      }),
    )

    it.scoped("a commit at a stale revision fails RegistryConflict and writes nothing", () =>
      Effect.gen(function* () {
        const registry = yield* connect(options.fresh())
        yield* registry.commit([putTenant(acme), putDevice(d1)], 0)
        yield* registry.commit([putDevice(rotating)], 1)
        const before = yield* registry.load
        const stale = [putTenant(globex), remove("device", "d1"), putDevice({ ...rotating, enabled: false })]
        yield* expectConflict(registry.commit(stale, 1), 1, 2)
        yield* expectConflict(registry.commit(stale, 0), 0, 2)
        // Ahead of the store is no better than behind it.
        yield* expectConflict(registry.commit(stale, 3), 3, 2)
        expect(yield* registry.revision).toBe(2)
        expect(yield* registry.load).toEqual(before)
        expect(yield* registry.changesSince(2)).toEqual({ revision: 2, put: [], removed: [] })
        // Read again, retry: it goes through.
        expect(yield* registry.commit(stale, yield* registry.revision)).toBe(3)
      }),
    )

    it.scoped("two connections (two processes) see each other's commits and conflict on one revision", () =>
      Effect.gen(function* () {
        const store = options.fresh()
        const one = yield* connect(store)
        const two = yield* connect(store)
        expect(yield* one.commit([putTenant(acme), putClass(thermo)], 0)).toBe(1)
        expect(yield* two.revision).toBe(1)
        expect(yield* two.load).toEqual(state(1, { tenants: [acme], classes: [thermo] }))
        expect(yield* two.commit([putDevice(d1)], 1)).toBe(2)
        expect(yield* one.revision).toBe(2)
        expect(normalize(yield* one.changesSince(1))).toEqual({
          revision: 2,
          put: [{ kind: "device", id: "d1", value: d1 }],
          removed: [],
        })
        // Both read revision 2 and write: one wins, the other is told to read again.
        const results = yield* Effect.all(
          [
            Effect.either(one.commit([putDevice({ ...d1, enabled: false })], 2)),
            Effect.either(two.commit([remove("device", "d1")], 2)),
          ],
          { concurrency: "unbounded" },
        )
        const wins = results.filter(Either.isRight)
        const losses = results.filter(Either.isLeft).map((r) => r.left)
        expect(wins.map((w) => w.right)).toEqual([3])
        expect(losses).toHaveLength(1)
        expect(losses[0]).toBeInstanceOf(RegistryConflict)
        expect(losses[0]).toMatchObject({ expected: 2, actual: 3 })
        expect(yield* one.load).toEqual(yield* two.load)
        expect((yield* one.load).revision).toBe(3)
      }),
    )

    it.scoped("changesSince returns what changed after a revision, removals included, by latest", () =>
      Effect.gen(function* () {
        const registry = yield* connect(options.fresh())
        const d1v2: RegDevice = { ...d1, enabled: false }
        const d3: RegDevice = device("d3")
        const d3v2: RegDevice = { ...d3, className: "meter" }
        // r1: a tenant, a class, three devices, a key.
        yield* registry.commit(
          [putTenant(acme), putClass(thermo), putKey(adminKey), putDevice(d1), putDevice(d2), putDevice(d3)],
          0,
        )
        const atOne = yield* registry.load
        // r2: d1 changed, d2 removed. r3: d3 and the key removed. r4: d3 put again (and a class).
        yield* registry.commit([putDevice(d1v2), remove("device", "d2")], 1)
        yield* registry.commit([remove("device", "d3"), remove("apiKey", adminKey.hash)], 2)
        const atThree = yield* registry.load
        yield* registry.commit([putDevice(d3v2), putClass(meter)], 3)

        const since = (revision: number) => Effect.map(registry.changesSince(revision), normalize)
        expect(yield* since(0)).toEqual({
          revision: 4,
          put: [
            { kind: "class", id: "meter", value: meter },
            { kind: "class", id: "thermo", value: thermo },
            { kind: "device", id: "d1", value: d1v2 },
            { kind: "device", id: "d3", value: d3v2 },
            { kind: "tenant", id: "acme", value: acme },
          ],
          // Rows removed after 0 that are gone now (d3 came back: it is a put, not a removal).
          removed: [
            { kind: "apiKey", id: adminKey.hash },
            { kind: "device", id: "d2" },
          ],
        })
        expect(yield* since(1)).toEqual({
          revision: 4,
          put: [
            { kind: "class", id: "meter", value: meter },
            { kind: "device", id: "d1", value: d1v2 },
            { kind: "device", id: "d3", value: d3v2 },
          ],
          removed: [
            { kind: "apiKey", id: adminKey.hash },
            { kind: "device", id: "d2" },
          ],
        })
        expect(yield* since(2)).toEqual({
          revision: 4,
          put: [
            { kind: "class", id: "meter", value: meter },
            { kind: "device", id: "d3", value: d3v2 },
          ],
          removed: [{ kind: "apiKey", id: adminKey.hash }],
        })
        expect(yield* since(3)).toEqual({
          revision: 4,
          put: [
            { kind: "class", id: "meter", value: meter },
            { kind: "device", id: "d3", value: d3v2 },
          ],
          removed: [],
        })
        expect(yield* since(4)).toEqual({ revision: 4, put: [], removed: [] })

        // A reader holding an older state catches up to exactly the current one.
        const now = yield* registry.load
        expect(apply(atOne, yield* registry.changesSince(1))).toEqual(now)
        expect(apply(atThree, yield* registry.changesSince(3))).toEqual(now)
        expect(apply(state(0, {}), yield* registry.changesSince(0))).toEqual(now)

        // r5: removed again after coming back: reported removed.
        yield* registry.commit([remove("device", "d3")], 4)
        expect(yield* since(3)).toEqual({
          revision: 5,
          put: [{ kind: "class", id: "meter", value: meter }],
          removed: [{ kind: "device", id: "d3" }],
        })
        expect(apply(atThree, yield* registry.changesSince(3))).toEqual(yield* registry.load)
      }),
    )

    it.scoped("a batch of 10,000 devices commits in one transaction and loads back", () =>
      Effect.gen(function* () {
        const registry = yield* connect(options.fresh())
        yield* registry.commit([putTenant(acme), putClass(thermo)], 0)
        const devices = Array.from({ length: 10_000 }, (_, i) => ({
          ...device(`sensor-${String(i).padStart(5, "0")}`),
          credentials: [{ hash: `sha256:${i.toString(16).padStart(64, "0")}`, expiresAt: null }],
        }))
        const started = performance.now()
        expect(yield* registry.commit(devices.map(putDevice), 1)).toBe(2)
        const committed = performance.now()
        const loaded = yield* registry.load
        const done = performance.now()
        console.log(
          `registry ${name}: commit of 10,000 devices ${(committed - started).toFixed(0)} ms, ` +
            `load ${(done - committed).toFixed(0)} ms`,
        )
        expect(loaded.revision).toBe(2)
        expect(loaded.devices.size).toBe(10_000)
        expect(loaded.devices).toEqual(new Map(devices.map((d) => [d.id, d])))
        const changes = yield* registry.changesSince(1)
        expect(changes.put).toHaveLength(10_000)
        expect(changes.removed).toEqual([])
      }),
    )

    it.scoped("commits survive closing and reopening the store", () =>
      Effect.gen(function* () {
        const store = options.fresh()
        yield* Effect.scoped(
          Effect.gen(function* () {
            const registry = yield* connect(store)
            yield* registry.commit(everything, 0)
            yield* registry.commit([remove("device", "d2"), putTenant(tenant("acme", 42))], 1)
          }),
        )
        const expected = state(2, {
          tenants: [tenant("acme", 42), globex],
          apiKeys: [operatorKey, adminKey, readKey],
          classes: [thermo, meter],
          devices: [d1, rotating, sameIdAsTenant, sameIdAsClass],
        })
        const reopened = yield* connect(store)
        expect(yield* reopened.revision).toBe(2)
        expect(yield* reopened.load).toEqual(expected)
        expect(normalize(yield* reopened.changesSince(1))).toEqual({
          revision: 2,
          put: [{ kind: "tenant", id: "acme", value: tenant("acme", 42) }],
          removed: [{ kind: "device", id: "d2" }],
        })
        // And the revision goes on from there.
        yield* expectConflict(reopened.commit([putDevice(d2)], 0), 0, 2)
        expect(yield* reopened.commit([putDevice(d2)], 2)).toBe(3)
      }),
    )
  })
