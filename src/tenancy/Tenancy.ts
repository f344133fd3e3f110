/**
 * The shared kernel every tier consults: tenants, their API keys, devices, their credentials and
 * classes. Identity always comes from a credential; a lookup by id is always tenant-scoped.
 *
 * Every lookup is synchronous and in memory (it runs on the hot path of every connection and
 * message): a `Snapshot` of the registry (`Registry.ts`) indexed for the lookups, swapped whole
 * when the registry's revision moves. `live` keeps it current by polling the revision (every
 * `pollMs`, default 1 s) and fetching only what changed; listeners (`watch`) hear which devices'
 * access changed (disabled, removed, a credential replaced), so ingress can close their
 * connections at once. Secrets are hashes here too: a presented credential or key is hashed and
 * looked up (`Secrets.ts`).
 *
 * The tenants' certificate authorities (mutual TLS) are here too (`authorities`), each with its
 * certificate parsed once, for `src/ingress/TenantCertificates.ts`.
 */
import { X509Certificate } from "node:crypto"
import { Context, Duration, Effect, Layer, Option, Schedule } from "effect"
import { editFromConfig } from "./Apply.js"
import type { DeviceClassConfig, PlatformConfig } from "./PlatformConfig.js"
import type { Quotas, Reservation } from "./Quota.js"
import * as Quota from "./Quota.js"
import {
  emptyState,
  type KeyRole,
  type RegCertificateAuthority,
  type RegClassVersion,
  type RegDevice,
  Registry,
  type RegistryState,
} from "./Registry.js"
import { applyChanges, Draft } from "./RegistryState.js"
import { hashSecret } from "./Secrets.js"

export interface Device {
  readonly tenantId: string
  readonly deviceId: string
  readonly deviceClass: string
}

export interface Tenant {
  readonly tenantId: string
  /** Days raw readings are kept (`src/storage/Retention.ts`); unset = forever. */
  readonly rawRetentionDays?: number | undefined
  /** Days rollups are kept; unset = forever. */
  readonly rollupRetentionDays?: number | undefined
}

/** A device as the device list shows it. */
export interface IndexedDevice extends Device {
  readonly enabled: boolean
}

/**
 * A tenant's devices sorted by id, whole and per class: a page of the device list is a binary
 * search and a slice of one of these. Ids compare by UTF-16 code unit, which for the ASCII the id
 * pattern allows is ClickHouse's byte order, so the list and the store page alike.
 */
export interface DeviceIndex {
  readonly all: ReadonlyArray<IndexedDevice>
  readonly byClass: ReadonlyMap<string, ReadonlyArray<IndexedDevice>>
}

/** A tenant's certificate authority with its certificate parsed. */
export interface TenantAuthority extends RegCertificateAuthority {
  readonly certificate: X509Certificate
}

/** Who an API key is: an operator (no tenant), or a tenant's admin or reader. */
export interface Principal {
  readonly tenantId: string | null
  readonly role: KeyRole
}

export interface TenancyApi {
  /** The device whose id and credential match, or none (unknown id, wrong credential, disabled, expired look alike). */
  readonly authenticateDevice: (deviceId: string, credential: string) => Option.Option<Device>
  /** The device a bearer credential belongs to (HTTP ingress), or none. */
  readonly deviceByCredential: (credential: string) => Option.Option<Device>
  /** The tenant an API key (admin or read) belongs to, or none; operator keys have no tenant. */
  readonly authenticateApiKey: (apiKey: string) => Option.Option<Tenant>
  /** Who an API key is, operator keys included. */
  readonly principal: (apiKey: string) => Option.Option<Principal>
  /** A device of this tenant; another tenant's device is none, exactly like a missing one. */
  readonly device: (tenantId: string, deviceId: string) => Option.Option<Device>
  /** A device by id alone, whatever its tenant (records that name only a device: AWS IoT Core's). */
  readonly deviceById: (deviceId: string) => Option.Option<Device>
  /** The tenant's devices. */
  readonly devices: (tenantId: string) => ReadonlyArray<Device>
  /** The tenant's devices sorted by id, built on first use once per registry revision. */
  readonly deviceIndex: (tenantId: string) => DeviceIndex
  /** A device class's current definition (its newest version) by name. */
  readonly deviceClass: (name: string) => Option.Option<DeviceClassConfig>
  /** A device class's newest version, with its number. */
  readonly deviceClassVersion: (name: string) => Option.Option<RegClassVersion>
  readonly tenants: ReadonlyArray<Tenant>
  /**
   * Reserves one message of the tenant's ingest quota (`max_messages_per_second`), shared by
   * every transport: granted after `waitMs`, or refused if that would exceed `maxWaitMs`.
   */
  readonly reserve: (tenantId: string, maxWaitMs: number) => Reservation
  /**
   * Whether a connection opened with the credential hashed `credentialHash` may stay open: the
   * device exists, is enabled, and that credential has not expired or been replaced (null: a
   * connection admitted by a client certificate: the device exists, is enabled, and its tenant
   * still has a certificate authority).
   */
  readonly stillOpens: (deviceId: string, credentialHash: string | null) => boolean
  /**
   * Every tenant's certificate authorities (mutual TLS), each with its certificate parsed (once per
   * row); a row whose PEM does not parse is left out.
   */
  readonly authorities: () => ReadonlyArray<TenantAuthority>
  /** The registry revision the lookups answer from. */
  readonly revision: () => number
  /**
   * Calls `listener` with the ids of devices whose access changed (disabled, removed, moved to
   * another tenant, a credential replaced) after each refresh that has any; returns the unsubscribe.
   */
  readonly watch: (listener: (deviceIds: ReadonlySet<string>) => void) => () => void
}

export class Tenancy extends Context.Tag("sluice/Tenancy")<Tenancy, TenancyApi>() {}

/** The registry state indexed for the lookups. */
interface Snapshot {
  readonly state: RegistryState
  /** Credential hash -> device (every credential of every device). */
  readonly byCredential: ReadonlyMap<string, RegDevice>
  readonly byTenant: ReadonlyMap<string, ReadonlyArray<Device>>
  readonly tenants: ReadonlyArray<Tenant>
  /** Devices with a credential that expires (a rotation's grace period). */
  readonly expiring: ReadonlyArray<RegDevice>
  readonly authorities: ReadonlyArray<TenantAuthority>
  /** Tenants with at least one certificate authority. */
  readonly authorityTenants: ReadonlySet<string>
  /** `deviceIndex` per tenant, filled on first use: a tenant nobody lists costs nothing. */
  readonly sorted: Map<string, DeviceIndex>
}

/** Parsed certificates, by row: a row is parsed once, whatever the revisions it lives through. */
const parsed = new WeakMap<RegCertificateAuthority, TenantAuthority | null>()

const parseAuthority = (row: RegCertificateAuthority): TenantAuthority | null => {
  let authority = parsed.get(row)
  if (authority === undefined) {
    try {
      authority = { ...row, certificate: new X509Certificate(row.pem) }
    } catch {
      authority = null
    }
    parsed.set(row, authority)
  }
  return authority
}

const toDevice = (d: RegDevice): Device => ({
  tenantId: d.tenantId,
  deviceId: d.id,
  deviceClass: d.className,
})

const index = (state: RegistryState): Snapshot => {
  const byCredential = new Map<string, RegDevice>()
  const byTenant = new Map<string, Array<Device>>()
  const expiring: Array<RegDevice> = []
  for (const d of state.devices.values()) {
    if (d.credentials.some((c) => c.expiresAt !== null)) expiring.push(d)
    for (const c of d.credentials) byCredential.set(c.hash, d)
    let list = byTenant.get(d.tenantId)
    if (list === undefined) {
      list = []
      byTenant.set(d.tenantId, list)
    }
    list.push(toDevice(d))
  }
  const authorities: Array<TenantAuthority> = []
  for (const row of state.authorities.values()) {
    const authority = parseAuthority(row)
    if (authority !== null) authorities.push(authority)
  }
  return {
    state,
    byCredential,
    byTenant,
    tenants: [...state.tenants.values()].map((t) => ({
      tenantId: t.id,
      rawRetentionDays: t.rawRetentionDays,
      rollupRetentionDays: t.rollupRetentionDays,
    })),
    expiring,
    authorities,
    authorityTenants: new Set(authorities.map((a) => a.tenantId)),
    sorted: new Map(),
  }
}

const sortedIndex = (snapshot: Snapshot, tenantId: string): DeviceIndex => {
  let found = snapshot.sorted.get(tenantId)
  if (found === undefined) {
    // Fields spelled out, not spread: one object shape, several times faster to build at 100,000.
    const all = (snapshot.byTenant.get(tenantId) ?? [])
      .map(
        (d): IndexedDevice => ({
          tenantId: d.tenantId,
          deviceId: d.deviceId,
          deviceClass: d.deviceClass,
          enabled: snapshot.state.devices.get(d.deviceId)?.enabled ?? false,
        }),
      )
      .sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0))
    const byClass = new Map<string, Array<IndexedDevice>>()
    for (const d of all) {
      const list = byClass.get(d.deviceClass)
      if (list === undefined) byClass.set(d.deviceClass, [d])
      else list.push(d)
    }
    found = { all, byClass }
    snapshot.sorted.set(tenantId, found)
  }
  return found
}

/** Whether `hash` opens `device` now: enabled, and a credential with that hash not expired. */
const opens = (device: RegDevice, hash: string, now: number) =>
  device.enabled &&
  device.credentials.some((c) => c.hash === hash && (c.expiresAt === null || c.expiresAt > now))

/**
 * Devices whose access differs between two states; with every device of a tenant that lost its
 * last certificate authority (its certificate connections may not stay, `stillOpens`).
 */
const accessChanged = (before: Snapshot, after: Snapshot): ReadonlySet<string> => {
  const ids = new Set<string>()
  const key = (d: RegDevice) =>
    `${d.enabled}|${d.tenantId}|${d.credentials.map((c) => `${c.hash}@${c.expiresAt}`).join(",")}`
  for (const [id, d] of before.state.devices) {
    const now = after.state.devices.get(id)
    if (now === undefined || key(now) !== key(d)) ids.add(id)
  }
  for (const tenantId of before.authorityTenants) {
    if (after.authorityTenants.has(tenantId)) continue
    for (const d of after.byTenant.get(tenantId) ?? []) ids.add(d.deviceId)
  }
  return ids
}

/** Each tenant's `max_messages_per_second` in `state`, the rates a quota backend needs. */
const ratesOf =
  (current: () => RegistryState) =>
  (tenantId: string): number | undefined =>
    current().tenants.get(tenantId)?.maxMessagesPerSecond

/**
 * A Tenancy answering from `current()` (a snapshot swapped by its owner). Quotas are this
 * process's alone unless `quotas` is shared (`SharedQuota`, `DynamoQuota`).
 */
const make = (current: () => Snapshot, quotas: Quotas, watch: TenancyApi["watch"]): TenancyApi => {
  const device = (deviceId: string) => Option.fromNullable(current().state.devices.get(deviceId))
  return {
    authenticateDevice: (deviceId, credential) =>
      Option.map(
        Option.filter(device(deviceId), (d) => opens(d, hashSecret(credential), Date.now())),
        toDevice,
      ),
    deviceByCredential: (credential) => {
      const hash = hashSecret(credential)
      const d = current().byCredential.get(hash)
      return d !== undefined && opens(d, hash, Date.now()) ? Option.some(toDevice(d)) : Option.none()
    },
    authenticateApiKey: (apiKey) => {
      const key = current().state.apiKeys.get(hashSecret(apiKey))
      return key?.tenantId == null ? Option.none() : Option.some({ tenantId: key.tenantId })
    },
    principal: (apiKey) =>
      Option.map(Option.fromNullable(current().state.apiKeys.get(hashSecret(apiKey))), (k) => ({
        tenantId: k.tenantId,
        role: k.role,
      })),
    device: (tenantId, deviceId) =>
      Option.map(
        Option.filter(device(deviceId), (d) => d.tenantId === tenantId),
        toDevice,
      ),
    deviceById: (deviceId) => Option.map(device(deviceId), toDevice),
    devices: (tenantId) => current().byTenant.get(tenantId) ?? [],
    deviceIndex: (tenantId) => sortedIndex(current(), tenantId),
    deviceClass: (name) =>
      Option.map(
        Option.fromNullable(current().state.classes.get(name)?.versions.at(-1)),
        (v) => v.definition,
      ),
    deviceClassVersion: (name) => Option.fromNullable(current().state.classes.get(name)?.versions.at(-1)),
    get tenants() {
      return current().tenants
    },
    reserve: quotas.reserve,
    stillOpens: (deviceId, credentialHash) => {
      const d = current().state.devices.get(deviceId)
      if (d === undefined) return false
      return credentialHash === null
        ? d.enabled && current().authorityTenants.has(d.tenantId)
        : opens(d, credentialHash, Date.now())
    },
    authorities: () => current().authorities,
    revision: () => current().state.revision,
    watch,
  }
}

/** The registry state a configuration file alone describes (tests, tools: no store). */
export const stateOfConfig = (config: PlatformConfig): RegistryState => {
  const draft = new Draft(emptyState)
  editFromConfig(draft, config)
  return {
    revision: 0,
    tenants: draft.tenants,
    apiKeys: draft.apiKeys,
    classes: draft.classes,
    devices: draft.devices,
    authorities: draft.authorities,
    claims: draft.claims,
  }
}

/** Each tenant's `max_messages_per_second` in a configuration. */
export const quotaRates = (config: PlatformConfig): ((tenantId: string) => number | undefined) => {
  const state = stateOfConfig(config)
  return ratesOf(() => state)
}

/** A fixed Tenancy over a validated configuration (tests, benchmarks, tools). */
export const fromConfig = (config: PlatformConfig, quotas?: Quotas): TenancyApi => {
  const snapshot = index(stateOfConfig(config))
  return make(
    () => snapshot,
    quotas ?? Quota.make(ratesOf(() => snapshot.state)),
    () => () => {},
  )
}

/** The fixed Tenancy layer over a configuration already loaded and validated. */
export const layer = (config: PlatformConfig, quotas?: Quotas) =>
  Layer.succeed(Tenancy, fromConfig(config, quotas))

/**
 * The Tenancy of a running process: the registry's state, followed every `pollMs`. Quotas come
 * from `makeQuotas(rates)` with the live rates. Requires Registry.
 */
export const live = <E = never, R = never>(options: {
  readonly pollMs?: number
  readonly makeQuotas?:
    | ((rates: (tenantId: string) => number | undefined) => Effect.Effect<Quotas, E, R>)
    | undefined
}) =>
  Effect.gen(function* () {
    const registry = yield* Registry
    let snapshot = index(yield* registry.load)
    const listeners = new Set<(deviceIds: ReadonlySet<string>) => void>()
    const rates = ratesOf(() => snapshot.state)
    const quotas = options.makeQuotas === undefined ? Quota.make(rates) : yield* options.makeQuotas(rates)

    const notify = (ids: ReadonlySet<string>) => {
      if (ids.size > 0) for (const listener of listeners) listener(ids)
    }
    // A rotated-out credential stops working at its expiry: its connections are told then.
    let checkedAt = Date.now()
    const expired = () => {
      const now = Date.now()
      const ids = new Set<string>()
      for (const d of snapshot.expiring) {
        if (
          d.credentials.some((c) => c.expiresAt !== null && c.expiresAt > checkedAt && c.expiresAt <= now)
        ) {
          ids.add(d.id)
        }
      }
      checkedAt = now
      return ids
    }

    const refresh = Effect.gen(function* () {
      notify(expired())
      const revision = yield* registry.revision
      if (revision === snapshot.state.revision) return
      const before = snapshot
      // Behind: catch up with what changed. Ahead of the store (its data was replaced): reload.
      snapshot = index(
        revision > before.state.revision
          ? applyChanges(before.state, yield* registry.changesSince(before.state.revision))
          : yield* registry.load,
      )
      yield* Effect.logInfo(`device registry at revision ${snapshot.state.revision}`)
      notify(accessChanged(before, snapshot))
    })
    yield* refresh.pipe(
      Effect.catchAll((e) => Effect.logWarning("device registry refresh failed; keeping the last state", e)),
      Effect.repeat(Schedule.spaced(Duration.millis(options.pollMs ?? 1000))),
      Effect.forkScoped,
    )
    return make(
      () => snapshot,
      quotas,
      (listener) => {
        listeners.add(listener)
        return () => listeners.delete(listener)
      },
    )
  })
