/**
 * Handlers of the admin groups (`Api.ts`): each checks the key's role first, then decodes its
 * body (`Body.ts`), then reads or writes the registry (`Writes.ts`). Secrets are made here with
 * `newSecret`, returned in the one answer that creates them, and committed only as hashes.
 */
import { HttpApiBuilder } from "@effect/platform"
import { Context, Effect, Layer } from "effect"
import { StorageUnavailable, TelemetryStore } from "../../storage/TelemetryStore.js"
import * as DeviceClass from "../../tenancy/DeviceClass.js"
import { type DeviceClassConfig, retentionProblem } from "../../tenancy/PlatformConfig.js"
import type {
  RegApiKey,
  RegCredential,
  RegDevice,
  RegDeviceClass,
  RegistryState,
} from "../../tenancy/Registry.js"
import { canonical } from "../../tenancy/RegistryState.js"
import { hashSecret, newSecret, publicId } from "../../tenancy/Secrets.js"
import { Api } from "../Api.js"
import {
  ApiKeyNotFound,
  Conflict,
  DeviceClassNotFound,
  DeviceNotFound,
  Forbidden,
  TenantNotFound,
} from "../ApiError.js"
import {
  requireKeyManager,
  requireOperator,
  requireTenantAdmin,
  requireTenantReader,
} from "../Authentication.js"
import {
  AddClassVersion,
  CreateApiKey,
  CreateDevice,
  CreateDeviceClass,
  CreateTenant,
  DEFAULT_GRACE_SECONDS,
  Rotate,
  UpdateTenant,
} from "./Api.js"
import * as Authorities from "./Authorities.js"
import * as Body from "./Body.js"
import * as Bulk from "./Bulk.js"
import * as Claims from "./Claims.js"
import * as Writes from "./Writes.js"

/** The registry access the admin handlers share (one state kept for all of them). */
export class AdminRegistry extends Context.Tag("sluice/serving/admin/AdminRegistry")<
  AdminRegistry,
  Writes.RegistryAccess
>() {}

const managedByFile = (what: string) =>
  new Conflict({
    message: `${what} is managed by the configuration file: remove it there, then apply the file`,
  })

/** `definition` checked as the configuration file checks a class; problems under `definition.`. */
const checkedDefinition = (name: string, definition: Omit<DeviceClassConfig, "name">) => {
  const full: DeviceClassConfig = { name, ...definition }
  const problems = DeviceClass.check(full)
  return problems.length === 0
    ? Effect.succeed(full)
    : Effect.fail(
        Body.invalid(problems.map((p) => ({ field: ["definition", ...p.path].join("."), reason: p.reason }))),
      )
}

/** Without `name`: the API's definitions are named by their class. */
const definitionOf = ({ name: _, ...rest }: DeviceClassConfig) => rest

const visibleClass = (
  state: { readonly classes: ReadonlyMap<string, RegDeviceClass> },
  name: string,
  tenantId: string,
) => {
  const c = state.classes.get(name)
  return c !== undefined && (c.tenantId === null || c.tenantId === tenantId) ? c : undefined
}

/** The tenant's device, or 404 exactly as for a missing one. */
const ownDevice = (
  draft: { readonly devices: ReadonlyMap<string, RegDevice> },
  tenantId: string,
  id: string,
) => {
  const d = draft.devices.get(id)
  return d !== undefined && d.tenantId === tenantId ? Effect.succeed(d) : Effect.fail(DeviceNotFound.instance)
}

const deviceState = (d: RegDevice) => ({ id: d.id, class: d.className, enabled: d.enabled, source: d.source })

const tenantView = (
  state: Pick<RegistryState, "tenants">,
  counts: ReadonlyMap<string, number>,
  id: string,
) => {
  const t = state.tenants.get(id)!
  return {
    id: t.id,
    ...(t.maxMessagesPerSecond === undefined ? {} : { max_messages_per_second: t.maxMessagesPerSecond }),
    ...(t.rawRetentionDays === undefined ? {} : { raw_retention_days: t.rawRetentionDays }),
    ...(t.rollupRetentionDays === undefined ? {} : { rollup_retention_days: t.rollupRetentionDays }),
    source: t.source,
    devices: counts.get(id) ?? 0,
  }
}

/** The tenant's retentions, or 400 naming the field when rollups would go before raw readings. */
const checkedRetention = (raw: number | undefined, rollup: number | undefined) => {
  const problem = retentionProblem(raw, rollup)
  return problem === undefined
    ? Effect.void
    : Effect.fail(Body.invalid([{ field: "rollup_retention_days", reason: problem }]))
}

/** `value` unless `null` (unset) or absent (keep `current`). */
const updated = <A>(value: A | null | undefined, current: A | undefined): A | undefined =>
  value === undefined ? current : (value ?? undefined)

export const HttpTenantsLive = HttpApiBuilder.group(Api, "tenants", (handlers) =>
  Effect.gen(function* () {
    const registry = yield* AdminRegistry
    const store = yield* TelemetryStore
    return handlers
      .handle(
        "list",
        Effect.fn("Admin.tenants.list")(function* () {
          yield* requireOperator
          const state = yield* registry.latest
          const counts = new Map<string, number>()
          for (const d of state.devices.values()) counts.set(d.tenantId, (counts.get(d.tenantId) ?? 0) + 1)
          return { tenants: [...state.tenants.keys()].sort().map((id) => tenantView(state, counts, id)) }
        }),
      )
      .handleRaw(
        "create",
        Effect.fn("Admin.tenants.create")(function* ({ request }) {
          yield* requireOperator
          const body = yield* Body.json(CreateTenant, request)
          yield* checkedRetention(body.raw_retention_days, body.rollup_retention_days)
          return yield* registry.write((draft) =>
            Effect.gen(function* () {
              if (draft.tenants.has(body.id))
                return yield* Effect.fail(
                  new Conflict({ message: `tenant ${JSON.stringify(body.id)} already exists` }),
                )
              draft.tenants.set(body.id, {
                id: body.id,
                ...(body.max_messages_per_second === undefined
                  ? {}
                  : { maxMessagesPerSecond: body.max_messages_per_second }),
                ...(body.raw_retention_days === undefined
                  ? {}
                  : { rawRetentionDays: body.raw_retention_days }),
                ...(body.rollup_retention_days === undefined
                  ? {}
                  : { rollupRetentionDays: body.rollup_retention_days }),
                source: "api",
              })
              return { ...body, source: "api" as const, devices: 0 }
            }),
          )
        }),
      )
      .handleRaw(
        "update",
        Effect.fn("Admin.tenants.update")(function* ({ path, request }) {
          yield* requireOperator
          const body = yield* Body.json(UpdateTenant, request)
          return yield* registry.write((draft) =>
            Effect.gen(function* () {
              const t = draft.tenants.get(path.tenantId)
              if (t === undefined) return yield* Effect.fail(TenantNotFound.instance)
              if (t.source === "config")
                return yield* Effect.fail(managedByFile(`tenant ${JSON.stringify(t.id)}`))
              const max = updated(body.max_messages_per_second, t.maxMessagesPerSecond)
              const raw = updated(body.raw_retention_days, t.rawRetentionDays)
              const rollup = updated(body.rollup_retention_days, t.rollupRetentionDays)
              yield* checkedRetention(raw, rollup)
              draft.tenants.set(t.id, {
                id: t.id,
                ...(max === undefined ? {} : { maxMessagesPerSecond: max }),
                ...(raw === undefined ? {} : { rawRetentionDays: raw }),
                ...(rollup === undefined ? {} : { rollupRetentionDays: rollup }),
                source: t.source,
              })
              const devices = [...draft.devices.values()].filter((d) => d.tenantId === t.id).length
              return tenantView(draft, new Map([[t.id, devices]]), t.id)
            }),
          )
        }),
      )
      .handle(
        "delete",
        Effect.fn("Admin.tenants.delete")(function* ({ path }) {
          yield* requireOperator
          // Data first, while the tenant still exists, so a failure leaves something to retry;
          // then the registry (ingress refuses the tenant within a poll interval); then the data
          // again, for what was stored between the two.
          const exists = (yield* registry.latest).tenants.get(path.tenantId)
          if (exists === undefined) return yield* Effect.fail(TenantNotFound.instance)
          if (exists.source === "config")
            return yield* Effect.fail(managedByFile(`tenant ${JSON.stringify(exists.id)}`))
          yield* store.dropTenant(path.tenantId).pipe(
            Effect.mapError(
              (e) =>
                new StorageUnavailable({
                  operation: e.operation,
                  reason: `${e.reason}; the tenant is still registered and nothing was deleted from the registry: retry`,
                }),
            ),
          )
          yield* registry.write((draft) =>
            Effect.gen(function* () {
              const t = draft.tenants.get(path.tenantId)
              if (t === undefined) return yield* Effect.fail(TenantNotFound.instance)
              if (t.source === "config")
                return yield* Effect.fail(managedByFile(`tenant ${JSON.stringify(t.id)}`))
              draft.removeTenant(t.id)
            }),
          )
          yield* store.dropTenant(path.tenantId).pipe(
            Effect.mapError(
              (e) =>
                new StorageUnavailable({
                  operation: e.operation,
                  reason:
                    `${e.reason}; the tenant was deleted, but data stored while it was being deleted may ` +
                    "remain: its partitions can be dropped by hand (see docs on retention)",
                }),
            ),
          )
        }),
      )
      .handleRaw(
        "createKey",
        Effect.fn("Admin.tenants.createKey")(function* ({ path, request }) {
          yield* requireKeyManager(path.tenantId)
          const body = yield* Body.json(CreateApiKey, request)
          return yield* registry.write((draft) =>
            Effect.gen(function* () {
              if (!draft.tenants.has(path.tenantId)) return yield* Effect.fail(TenantNotFound.instance)
              const key = newSecret()
              const hash = hashSecret(key)
              const row: RegApiKey = {
                hash,
                tenantId: path.tenantId,
                role: body.role,
                name: body.name,
                source: "api",
              }
              draft.apiKeys.set(hash, row)
              return { key, id: publicId(hash), name: body.name, role: body.role }
            }),
          )
        }),
      )
      .handle(
        "listKeys",
        Effect.fn("Admin.tenants.listKeys")(function* ({ path }) {
          yield* requireKeyManager(path.tenantId)
          const state = yield* registry.latest
          if (!state.tenants.has(path.tenantId)) return yield* Effect.fail(TenantNotFound.instance)
          const keys = [...state.apiKeys.values()]
            .filter(
              (k): k is RegApiKey & { role: "admin" | "read" } =>
                k.tenantId === path.tenantId && k.role !== "operator",
            )
            .map((k) => ({ id: publicId(k.hash), name: k.name, role: k.role, source: k.source }))
            .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
          return { keys }
        }),
      )
      .handle(
        "deleteKey",
        Effect.fn("Admin.tenants.deleteKey")(function* ({ path }) {
          yield* requireKeyManager(path.tenantId)
          yield* registry.write((draft) =>
            Effect.gen(function* () {
              if (!draft.tenants.has(path.tenantId)) return yield* Effect.fail(TenantNotFound.instance)
              const matches = [...draft.apiKeys.values()].filter(
                (k) => k.tenantId === path.tenantId && publicId(k.hash) === path.keyId,
              )
              if (matches.length === 0) return yield* Effect.fail(ApiKeyNotFound.instance)
              if (matches.length > 1)
                return yield* Effect.fail(
                  new Conflict({ message: `${matches.length} keys of the tenant have the id ${path.keyId}` }),
                )
              const key = matches[0]!
              if (key.source === "config")
                return yield* Effect.fail(managedByFile(`key ${JSON.stringify(key.name)}`))
              draft.apiKeys.delete(key.hash)
            }),
          )
        }),
      )
  }),
)

export const HttpDeviceAdminLive = HttpApiBuilder.group(Api, "deviceAdmin", (handlers) =>
  Effect.gen(function* () {
    const registry = yield* AdminRegistry
    /** Sets a device's `enabled`. */
    const setEnabled = (deviceId: string, enabled: boolean) =>
      Effect.gen(function* () {
        const tenantId = yield* requireTenantAdmin
        return yield* registry.write((draft) =>
          Effect.gen(function* () {
            const d = yield* ownDevice(draft, tenantId, deviceId)
            const next = { ...d, enabled }
            draft.devices.set(d.id, next)
            return deviceState(next)
          }),
        )
      })
    return handlers
      .handleRaw(
        "create",
        Effect.fn("Admin.devices.create")(function* ({ request }) {
          const tenantId = yield* requireTenantAdmin
          const body = yield* Body.json(CreateDevice, request)
          return yield* registry.write((draft) =>
            Effect.gen(function* () {
              if (visibleClass(draft, body.class, tenantId) === undefined)
                return yield* Effect.fail(
                  Body.invalid([
                    { field: "class", reason: `unknown device class ${JSON.stringify(body.class)}` },
                  ]),
                )
              if (draft.devices.has(body.id))
                return yield* Effect.fail(
                  new Conflict({ message: `device id ${JSON.stringify(body.id)} is already registered` }),
                )
              const credential = newSecret()
              draft.devices.set(body.id, {
                id: body.id,
                tenantId,
                className: body.class,
                enabled: true,
                credentials: [{ hash: hashSecret(credential), expiresAt: null }],
                source: "api",
              })
              return { id: body.id, class: body.class, credential }
            }),
          )
        }),
      )
      .handleRaw(
        "bulk",
        Effect.fn("Admin.devices.bulk")(function* ({ request }) {
          const tenantId = yield* requireTenantAdmin
          const body = yield* Body.text(request, Body.MAX_BULK_BODY_BYTES)
          const contentType = (request.headers["content-type"] ?? "application/json").toLowerCase()
          const rows = yield* contentType.startsWith("text/csv")
            ? Bulk.csvRows(body)
            : contentType.startsWith("application/json")
              ? Bulk.jsonRows(body)
              : Effect.fail(
                  Body.invalid([
                    {
                      field: "",
                      reason: `unsupported Content-Type ${JSON.stringify(contentType)}: use application/json or text/csv`,
                    },
                  ]),
                )
          return yield* registry.write((draft) =>
            Effect.gen(function* () {
              const good = yield* Bulk.check(rows, draft.classes, tenantId, (id) => draft.devices.has(id))
              const devices = good.map((row) => {
                const credential = newSecret()
                draft.devices.set(row.id, {
                  id: row.id,
                  tenantId,
                  className: row.class,
                  enabled: true,
                  credentials: [{ hash: hashSecret(credential), expiresAt: null }],
                  source: "api",
                })
                return { id: row.id, credential }
              })
              return { count: devices.length, devices }
            }),
          )
        }),
      )
      .handle("disable", ({ path }) =>
        setEnabled(path.deviceId, false).pipe(Effect.withSpan("Admin.devices.disable")),
      )
      .handle("enable", ({ path }) =>
        setEnabled(path.deviceId, true).pipe(Effect.withSpan("Admin.devices.enable")),
      )
      .handle(
        "delete",
        Effect.fn("Admin.devices.delete")(function* ({ path }) {
          const tenantId = yield* requireTenantAdmin
          yield* registry.write((draft) =>
            Effect.gen(function* () {
              const d = yield* ownDevice(draft, tenantId, path.deviceId)
              if (d.source === "config")
                return yield* Effect.fail(managedByFile(`device ${JSON.stringify(d.id)}`))
              draft.devices.delete(d.id)
            }),
          )
        }),
      )
      .handleRaw(
        "rotate",
        Effect.fn("Admin.devices.rotate")(function* ({ path, request }) {
          const tenantId = yield* requireTenantAdmin
          const body = yield* Body.json(Rotate, request, {})
          const graceMs = (body.grace_seconds ?? DEFAULT_GRACE_SECONDS) * 1000
          return yield* registry.write((draft) =>
            Effect.gen(function* () {
              const d = yield* ownDevice(draft, tenantId, path.deviceId)
              const now = Date.now()
              const until = now + graceMs
              // The old credentials work until the grace ends (or their own earlier expiry); gone at once with 0.
              const previous: Array<RegCredential> =
                graceMs === 0
                  ? []
                  : d.credentials
                      .filter((c) => c.expiresAt === null || c.expiresAt > now)
                      .map((c) => ({
                        hash: c.hash,
                        expiresAt: c.expiresAt === null ? until : Math.min(c.expiresAt, until),
                      }))
              const credential = newSecret()
              draft.devices.set(d.id, {
                ...d,
                credentials: [{ hash: hashSecret(credential), expiresAt: null }, ...previous],
              })
              return { credential, previous_valid_until: previous.length === 0 ? null : until }
            }),
          )
        }),
      )
  }),
)

const summary = (c: RegDeviceClass) => {
  const current = c.versions.at(-1)!
  return {
    name: c.name,
    shared: c.tenantId === null,
    source: c.source,
    version: current.version,
    definition: definitionOf(current.definition),
  }
}

export const HttpDeviceClassesLive = HttpApiBuilder.group(Api, "deviceClasses", (handlers) =>
  Effect.gen(function* () {
    const registry = yield* AdminRegistry
    return handlers
      .handle(
        "list",
        Effect.fn("Admin.deviceClasses.list")(function* () {
          const tenantId = yield* requireTenantReader
          const state = yield* registry.latest
          const classes = [...state.classes.values()]
            .filter((c) => c.tenantId === null || c.tenantId === tenantId)
            .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
          return { deviceClasses: classes.map(summary) }
        }),
      )
      .handle(
        "get",
        Effect.fn("Admin.deviceClasses.get")(function* ({ path }) {
          const tenantId = yield* requireTenantReader
          const c = visibleClass(yield* registry.latest, path.name, tenantId)
          if (c === undefined) return yield* Effect.fail(DeviceClassNotFound.instance)
          return {
            name: c.name,
            shared: c.tenantId === null,
            source: c.source,
            versions: c.versions.map((v) => ({ version: v.version, definition: definitionOf(v.definition) })),
          }
        }),
      )
      .handleRaw(
        "create",
        Effect.fn("Admin.deviceClasses.create")(function* ({ request }) {
          const tenantId = yield* requireTenantAdmin
          const body = yield* Body.json(CreateDeviceClass, request)
          const definition = yield* checkedDefinition(body.name, body.definition)
          return yield* registry.write((draft) =>
            Effect.gen(function* () {
              if (draft.classes.has(body.name))
                return yield* Effect.fail(
                  new Conflict({ message: `device class name ${JSON.stringify(body.name)} is taken` }),
                )
              draft.classes.set(body.name, {
                name: body.name,
                tenantId,
                versions: [{ version: 1, definition }],
                source: "api",
              })
              return { name: body.name, version: 1 }
            }),
          )
        }),
      )
      .handleRaw(
        "addVersion",
        Effect.fn("Admin.deviceClasses.addVersion")(function* ({ path, request }) {
          const tenantId = yield* requireTenantAdmin
          const body = yield* Body.json(AddClassVersion, request)
          const definition = yield* checkedDefinition(path.name, body.definition)
          return yield* registry.write((draft) =>
            Effect.gen(function* () {
              const c = visibleClass(draft, path.name, tenantId)
              if (c === undefined) return yield* Effect.fail(DeviceClassNotFound.instance)
              if (c.tenantId === null)
                return yield* Effect.fail(
                  new Forbidden({
                    message:
                      "shared device classes belong to the configuration file: change the class there and apply it (a changed definition becomes a new version)",
                  }),
                )
              const newest = c.versions.at(-1)!
              if (canonical(newest.definition) === canonical(definition))
                return yield* Effect.fail(
                  new Conflict({
                    message: `the definition is the same as version ${newest.version}, the current one: nothing to add`,
                  }),
                )
              const version = newest.version + 1
              draft.classes.set(c.name, { ...c, versions: [...c.versions, { version, definition }] })
              return { name: c.name, version }
            }),
          )
        }),
      )
  }),
)

/** The admin groups' handlers, over the registry if the server has one (503 otherwise). */
export const HttpAdminLive = Layer.mergeAll(
  HttpTenantsLive,
  HttpDeviceAdminLive,
  HttpDeviceClassesLive,
  Authorities.layerFor(Api, AdminRegistry),
  Claims.layerFor(Api, AdminRegistry),
).pipe(Layer.provide(Layer.effect(AdminRegistry, Writes.fromContext)))
