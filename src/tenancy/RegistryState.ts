/**
 * What a registry change may do, decided once for every backend and every writer (the admin API,
 * `sluice apply`): a writer edits a `Draft` of the state it read, the draft checks the rules, and
 * its difference from that state is the batch of mutations to commit at that state's revision.
 *
 * The rules:
 * - a device's tenant exists; its class exists and is either the tenant's own or a shared one;
 * - a tenant key's tenant exists;
 * - a class version never changes once added, versions are 1, 2, … in order, and a class keeps at
 *   least one; a class still used by a device cannot be removed;
 * - a certificate authority's or claim's tenant exists, and its class (a CA's default class, a
 *   claim's class) exists and is the tenant's own or a shared one; a CA that registers devices
 *   just in time names a default class;
 * - removing a tenant removes its keys, its devices, its own classes, its CAs and its claims;
 * - a tenant's retentions are whole days from 1 to 36,500, and rollups are kept at least as long
 *   as raw readings.
 *
 * Readers catch up with `applyChanges`.
 */
import { Either, Schema } from "effect"
import { maxRetentionDays, RetentionDays, retentionProblem } from "./PlatformConfig.js"
import type { Changes, Kind, Mutation, RegistryState, Row } from "./Registry.js"
import { Mutation as M, rowId } from "./Registry.js"

const decodeRetention = Schema.decodeUnknownEither(RetentionDays)

/** JSON with sorted keys: equality of rows regardless of the order their fields were written in. */
export const canonical = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)))
      : v,
  )

type Maps = {
  tenants: Map<string, RegistryState["tenants"] extends ReadonlyMap<string, infer V> ? V : never>
  apiKeys: Map<string, RegistryState["apiKeys"] extends ReadonlyMap<string, infer V> ? V : never>
  classes: Map<string, RegistryState["classes"] extends ReadonlyMap<string, infer V> ? V : never>
  devices: Map<string, RegistryState["devices"] extends ReadonlyMap<string, infer V> ? V : never>
  authorities: Map<string, RegistryState["authorities"] extends ReadonlyMap<string, infer V> ? V : never>
  claims: Map<string, RegistryState["claims"] extends ReadonlyMap<string, infer V> ? V : never>
}

const MAPS: Record<Kind, keyof Maps> = {
  tenant: "tenants",
  apiKey: "apiKeys",
  class: "classes",
  device: "devices",
  authority: "authorities",
  claim: "claims",
}
const mapOf = (kind: Kind): keyof Maps => MAPS[kind]

/** `state` with `changes` applied (a reader catching up). */
export const applyChanges = (state: RegistryState, changes: Changes): RegistryState => {
  const next: Maps = {
    tenants: new Map(state.tenants),
    apiKeys: new Map(state.apiKeys),
    classes: new Map(state.classes),
    devices: new Map(state.devices),
    authorities: new Map(state.authorities),
    claims: new Map(state.claims),
  }
  for (const { kind, id } of changes.removed) next[mapOf(kind)].delete(id)
  for (const row of changes.put) (next[mapOf(row.kind)] as Map<string, unknown>).set(rowId(row), row.value)
  return { revision: changes.revision, ...next }
}

/** A rule a draft broke, with the row it is about. */
export interface RuleError {
  readonly kind: Kind
  readonly id: string
  readonly reason: string
}

/** A mutable copy of a state: edit, `check`, then commit `mutations()` at `base.revision`. */
export class Draft {
  readonly tenants: Maps["tenants"]
  readonly apiKeys: Maps["apiKeys"]
  readonly classes: Maps["classes"]
  readonly devices: Maps["devices"]
  readonly authorities: Maps["authorities"]
  readonly claims: Maps["claims"]

  constructor(readonly base: RegistryState) {
    this.tenants = new Map(base.tenants)
    this.apiKeys = new Map(base.apiKeys)
    this.classes = new Map(base.classes)
    this.devices = new Map(base.devices)
    this.authorities = new Map(base.authorities)
    this.claims = new Map(base.claims)
  }

  /** Removes a tenant with its keys, devices and own classes. */
  removeTenant(tenantId: string) {
    this.tenants.delete(tenantId)
    for (const [hash, key] of this.apiKeys) if (key.tenantId === tenantId) this.apiKeys.delete(hash)
    for (const [id, device] of this.devices) if (device.tenantId === tenantId) this.devices.delete(id)
    for (const [name, c] of this.classes) if (c.tenantId === tenantId) this.classes.delete(name)
    for (const [id, ca] of this.authorities) if (ca.tenantId === tenantId) this.authorities.delete(id)
    for (const [hash, claim] of this.claims) if (claim.tenantId === tenantId) this.claims.delete(hash)
  }

  /** Why `tenantId` may not use class `name`, or undefined if it may. */
  classProblem(tenantId: string, name: string): string | undefined {
    const c = this.classes.get(name)
    if (c === undefined) return `device class "${name}" does not exist`
    if (c.tenantId !== null && c.tenantId !== tenantId)
      return `device class "${name}" belongs to another tenant`
    return undefined
  }

  /** Every rule the draft breaks (empty: it may be committed). */
  check(): ReadonlyArray<RuleError> {
    const errors: Array<RuleError> = []
    for (const [id, t] of this.tenants) {
      // The API and the file decode these already; this guards every writer, the same way.
      for (const [field, days] of [
        ["raw_retention_days", t.rawRetentionDays],
        ["rollup_retention_days", t.rollupRetentionDays],
      ] as const) {
        if (days !== undefined && Either.isLeft(decodeRetention(days))) {
          errors.push({
            kind: "tenant",
            id,
            reason: `${field} must be a whole number of days from 1 to ${maxRetentionDays}, got ${days}`,
          })
        }
      }
      const problem = retentionProblem(t.rawRetentionDays, t.rollupRetentionDays)
      if (problem !== undefined) errors.push({ kind: "tenant", id, reason: problem })
    }
    for (const [hash, key] of this.apiKeys) {
      if (key.role === "operator" ? key.tenantId !== null : !this.tenants.has(key.tenantId ?? "")) {
        errors.push({
          kind: "apiKey",
          id: key.name || hash.slice(0, 15),
          reason:
            key.role === "operator"
              ? "an operator key belongs to no tenant"
              : `tenant "${key.tenantId}" does not exist`,
        })
      }
    }
    const used = new Set<string>()
    for (const [id, device] of this.devices) {
      if (!this.tenants.has(device.tenantId)) {
        errors.push({ kind: "device", id, reason: `tenant "${device.tenantId}" does not exist` })
        continue
      }
      const c = this.classes.get(device.className)
      if (c === undefined) {
        errors.push({ kind: "device", id, reason: `device class "${device.className}" does not exist` })
      } else if (c.tenantId !== null && c.tenantId !== device.tenantId) {
        errors.push({
          kind: "device",
          id,
          reason: `device class "${device.className}" belongs to another tenant`,
        })
      }
      used.add(device.className)
    }
    for (const [name, c] of this.classes) {
      if (c.tenantId !== null && !this.tenants.has(c.tenantId)) {
        errors.push({ kind: "class", id: name, reason: `tenant "${c.tenantId}" does not exist` })
      }
      if (c.versions.length === 0) errors.push({ kind: "class", id: name, reason: "a class needs a version" })
      c.versions.forEach((v, i) => {
        if (v.version !== i + 1) {
          errors.push({
            kind: "class",
            id: name,
            reason: `versions must be 1, 2, … in order (found ${v.version})`,
          })
        }
      })
      const before = this.base.classes.get(name)
      for (const old of before?.versions ?? []) {
        const now = c.versions.find((v) => v.version === old.version)
        if (now === undefined || canonical(now.definition) !== canonical(old.definition)) {
          errors.push({
            kind: "class",
            id: name,
            reason: `version ${old.version} cannot change or go: add a new version instead`,
          })
        }
      }
    }
    for (const [id, ca] of this.authorities) {
      if (!this.tenants.has(ca.tenantId)) {
        errors.push({ kind: "authority", id, reason: `tenant "${ca.tenantId}" does not exist` })
        continue
      }
      if (ca.autoRegister && ca.defaultClass === null) {
        errors.push({
          kind: "authority",
          id,
          reason: "registering devices just in time needs a default class",
        })
      }
      const problem = ca.defaultClass === null ? undefined : this.classProblem(ca.tenantId, ca.defaultClass)
      if (problem !== undefined) errors.push({ kind: "authority", id, reason: problem })
      if (ca.defaultClass !== null) used.add(ca.defaultClass)
    }
    for (const [hash, claim] of this.claims) {
      const id = claim.name || hash.slice(0, 15)
      if (!this.tenants.has(claim.tenantId)) {
        errors.push({ kind: "claim", id, reason: `tenant "${claim.tenantId}" does not exist` })
        continue
      }
      const problem = this.classProblem(claim.tenantId, claim.className)
      if (problem !== undefined) errors.push({ kind: "claim", id, reason: problem })
      used.add(claim.className)
    }
    for (const name of this.base.classes.keys()) {
      if (!this.classes.has(name) && used.has(name)) {
        errors.push({ kind: "class", id: name, reason: "devices still use this class" })
      }
    }
    return errors
  }

  /**
   * The mutations that turn `base` into this draft. A row that is still the very object of the
   * base is unchanged without serializing it (a write of one device among 40,000 costs a few ms,
   * not the ~200 ms of comparing every row's JSON).
   */
  mutations(): ReadonlyArray<Mutation> {
    const out: Array<Mutation> = []
    const diff = <V>(kind: Kind, before: ReadonlyMap<string, V>, after: ReadonlyMap<string, V>) => {
      for (const [id, value] of after) {
        const old = before.get(id)
        if (old === value) continue
        if (old === undefined || canonical(old) !== canonical(value)) {
          out.push(M.Put({ row: { kind, value } as Row }))
        }
      }
      for (const id of before.keys()) if (!after.has(id)) out.push(M.Remove({ kind, id }))
    }
    diff("tenant", this.base.tenants, this.tenants)
    diff("apiKey", this.base.apiKeys, this.apiKeys)
    diff("class", this.base.classes, this.classes)
    diff("device", this.base.devices, this.devices)
    diff("authority", this.base.authorities, this.authorities)
    diff("claim", this.base.claims, this.claims)
    return out
  }
}
