/**
 * The device registry: tenants, API keys, device classes (with immutable versions) and devices,
 * as every node reads them. A contract (`Registry`) over a store that every process of the
 * platform reaches (`SqliteRegistry.ts` in the data directory on one machine), so that a device
 * created through the admin API, or a class version added by `sluice apply`, is live in every
 * ingress and processor process within seconds, with no restart.
 *
 * The store holds rows and a revision, nothing more: a commit writes a batch of mutations
 * atomically, only if the registry is still at the revision the writer read (optimistic
 * concurrency), and moves the revision on by one. What a mutation may do — references between
 * rows, immutable class versions, which source owns a row — is decided before the commit by
 * `RegistryState.ts`, one pure function for every backend. Readers poll the revision (one cheap
 * read) and fetch only the rows changed since the revision they hold (`changesSince`).
 *
 * Secrets are only ever hashes here (`Secrets.ts`).
 */
import { Context, Data, type Effect } from "effect"
import type { DeviceClassConfig } from "./PlatformConfig.js"

/**
 * Who manages a row: `config`, the declarative file (`sluice apply`, `--config`), which creates,
 * changes and removes its own rows and never touches the others; `api`, the admin API.
 */
export type Source = "config" | "api"

export interface RegTenant {
  readonly id: string
  /** Ingest quota, messages per second over MQTT and HTTP together; unset = none. */
  readonly maxMessagesPerSecond?: number | undefined
  /** Days raw readings (and dead letters) are kept; unset = forever. See `src/storage/Retention.ts`. */
  readonly rawRetentionDays?: number | undefined
  /** Days rollups are kept; unset = forever. Never shorter than `rawRetentionDays`. */
  readonly rollupRetentionDays?: number | undefined
  readonly source: Source
}

/**
 * `operator`: manages tenants and their keys (no tenant). `admin`: manages one tenant's devices,
 * classes and keys, and reads its data. `read`: reads one tenant's data.
 */
export type KeyRole = "operator" | "admin" | "read"

export interface RegApiKey {
  /** `Secrets.hashSecret` of the key; also the row's id. */
  readonly hash: string
  /** The tenant, or null for an operator key. */
  readonly tenantId: string | null
  readonly role: KeyRole
  /** A label for people (never the key). */
  readonly name: string
  readonly source: Source
}

export interface RegClassVersion {
  /** 1, 2, ...: a version never changes once added. */
  readonly version: number
  readonly definition: DeviceClassConfig
}

export interface RegDeviceClass {
  readonly name: string
  /** The tenant that owns it, or null: a class every tenant may use (from the configuration file). */
  readonly tenantId: string | null
  /** Ascending; devices of the class decode with the last one. */
  readonly versions: ReadonlyArray<RegClassVersion>
  readonly source: Source
}

export interface RegCredential {
  readonly hash: string
  /** After this (epoch ms) the credential no longer works; null = until replaced. */
  readonly expiresAt: number | null
}

export interface RegDevice {
  readonly id: string
  readonly tenantId: string
  readonly className: string
  /** A disabled device is refused at connect and its connections are closed. */
  readonly enabled: boolean
  /** Usually one; two during a rotation's grace period (the old one with an expiry). */
  readonly credentials: ReadonlyArray<RegCredential>
  readonly source: Source
}

/**
 * A tenant's certificate authority: a device certificate it signed whose subject CN (or a SAN) is
 * a device id of the tenant authenticates that device over mutual TLS. With `autoRegister`, a
 * certificate naming a device not yet registered creates it in `defaultClass` on first connect
 * (just-in-time registration).
 */
export interface RegCertificateAuthority {
  /** The SHA-256 fingerprint of the CA certificate (as `X509Certificate.fingerprint256`). */
  readonly id: string
  readonly tenantId: string
  /** The CA certificate, PEM. */
  readonly pem: string
  readonly autoRegister: boolean
  /** The class of devices it registers just in time (required with autoRegister). */
  readonly defaultClass: string | null
  readonly name: string
  readonly source: Source
}

/**
 * A fleet provisioning claim: a token (stored as its hash) that lets up to `remaining` devices
 * register themselves in `className` until `expiresAt`, each receiving its own credential.
 */
export interface RegClaim {
  /** `Secrets.hashSecret` of the token; also the row's id. */
  readonly hash: string
  readonly tenantId: string
  readonly className: string
  readonly remaining: number
  /** Epoch ms. */
  readonly expiresAt: number
  readonly revoked: boolean
  readonly name: string
  readonly source: Source
}

/** Every row, at one revision. */
export interface RegistryState {
  readonly revision: number
  readonly tenants: ReadonlyMap<string, RegTenant>
  /** By hash. */
  readonly apiKeys: ReadonlyMap<string, RegApiKey>
  readonly classes: ReadonlyMap<string, RegDeviceClass>
  readonly devices: ReadonlyMap<string, RegDevice>
  /** By fingerprint. */
  readonly authorities: ReadonlyMap<string, RegCertificateAuthority>
  /** By hash. */
  readonly claims: ReadonlyMap<string, RegClaim>
}

export const emptyState: RegistryState = {
  revision: 0,
  tenants: new Map(),
  apiKeys: new Map(),
  classes: new Map(),
  devices: new Map(),
  authorities: new Map(),
  claims: new Map(),
}

/** The kinds of rows, as the store keys them. */
export type Kind = "tenant" | "apiKey" | "class" | "device" | "authority" | "claim"

/** One row written (created or replaced) or removed. */
export type Mutation = Data.TaggedEnum<{
  Put: { readonly row: Row }
  Remove: { readonly kind: Kind; readonly id: string }
}>
export const Mutation = Data.taggedEnum<Mutation>()

export type Row =
  | { readonly kind: "tenant"; readonly value: RegTenant }
  | { readonly kind: "apiKey"; readonly value: RegApiKey }
  | { readonly kind: "class"; readonly value: RegDeviceClass }
  | { readonly kind: "device"; readonly value: RegDevice }
  | { readonly kind: "authority"; readonly value: RegCertificateAuthority }
  | { readonly kind: "claim"; readonly value: RegClaim }

/** The id a row is stored under. */
export const rowId = (row: Row): string => {
  switch (row.kind) {
    case "tenant":
      return row.value.id
    case "apiKey":
      return row.value.hash
    case "class":
      return row.value.name
    case "device":
      return row.value.id
    case "authority":
      return row.value.id
    case "claim":
      return row.value.hash
  }
}

/** What changed after a revision: rows written and rows removed, up to `revision`. */
export interface Changes {
  readonly revision: number
  readonly put: ReadonlyArray<Row>
  readonly removed: ReadonlyArray<{ readonly kind: Kind; readonly id: string }>
}

/** The store did not answer (locked past its timeout, unreachable, a disk error). */
export class RegistryUnavailable extends Data.TaggedError("RegistryUnavailable")<{
  readonly operation: string
  readonly reason: string
}> {
  override get message() {
    return `device registry unavailable during ${this.operation}: ${this.reason}`
  }
}

/** Another writer committed first: read again and retry. */
export class RegistryConflict extends Data.TaggedError("RegistryConflict")<{
  readonly expected: number
  readonly actual: number
}> {
  override get message() {
    return `the device registry moved from revision ${this.expected} to ${this.actual} meanwhile`
  }
}

export interface RegistryApi {
  /** Every row, at the current revision. */
  readonly load: Effect.Effect<RegistryState, RegistryUnavailable>
  /** The current revision: what readers poll. */
  readonly revision: Effect.Effect<number, RegistryUnavailable>
  /**
   * What changed after `revision` (a reader that holds it catches up with this). A reader whose
   * revision is above the store's (the store was replaced) must `load` instead.
   */
  readonly changesSince: (revision: number) => Effect.Effect<Changes, RegistryUnavailable>
  /**
   * Writes `mutations` atomically if the registry is still at `expectedRevision`; returns the
   * new revision (expectedRevision + 1). An empty batch writes nothing and returns the revision
   * (still RegistryConflict unless at `expectedRevision`).
   */
  readonly commit: (
    mutations: ReadonlyArray<Mutation>,
    expectedRevision: number,
  ) => Effect.Effect<number, RegistryUnavailable | RegistryConflict>
}

export class Registry extends Context.Tag("sluice/tenancy/Registry")<Registry, RegistryApi>() {}
