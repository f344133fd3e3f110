/**
 * The configuration file as a declarative source applied to the registry (`sluice apply FILE`, and
 * `--config` at start). Idempotent: applying the same file twice changes nothing the second time.
 *
 * The file owns the rows it creates (`source: "config"`): applying creates what is new, changes
 * what differs and removes its rows that the file no longer lists. Rows the admin API created are
 * never touched; a file naming an id the API owns is refused with that reason. Two choices:
 * - A class whose definition in the file differs from its newest version gets a new version (a
 *   version never changes), so devices decode the next message with it.
 * - Whether a device is enabled is not in the file: the API may disable and enable any device,
 *   the file's too, and applying the file again keeps that.
 * Secrets from the file are stored as hashes only (fleet devices: the hash of the credential each
 * derives from the fleet secret).
 */
import { Effect, Schedule } from "effect"
import { allDevices } from "./Fleet.js"
import type { PlatformConfig } from "./PlatformConfig.js"
import {
  type Kind,
  type RegApiKey,
  Registry,
  type RegistryConflict,
  type RegistryState,
  type RegistryUnavailable,
  type Source,
} from "./Registry.js"
import { canonical, Draft, type RuleError } from "./RegistryState.js"
import { hashSecret } from "./Secrets.js"

/** What an apply did (or would do, dry): ids per kind and change. */
export interface ApplyReport {
  readonly revision: number
  readonly created: ReadonlyArray<{ kind: Kind; id: string }>
  readonly changed: ReadonlyArray<{ kind: Kind; id: string }>
  readonly removed: ReadonlyArray<{ kind: Kind; id: string }>
}

/** The file cannot be applied: each row's reason. Nothing was written. */
export class ApplyRefused extends Error {
  readonly _tag = "ApplyRefused"
  constructor(readonly problems: ReadonlyArray<RuleError>) {
    super(
      `the configuration cannot be applied:\n${problems.map((p) => `  ${p.kind} ${p.id}: ${p.reason}`).join("\n")}`,
    )
  }
}

const CONFIG: Source = "config"

/** Edits `draft` so that its config-owned rows are exactly the file's; returns ownership conflicts. */
export const editFromConfig = (draft: Draft, config: PlatformConfig): ReadonlyArray<RuleError> => {
  const conflicts: Array<RuleError> = []
  const owned = <V extends { source: Source }>(
    kind: Kind,
    map: Map<string, V>,
    id: string,
  ): V | undefined | "api" => {
    const row = map.get(id)
    if (row !== undefined && row.source !== CONFIG) {
      conflicts.push({
        kind,
        id,
        reason: "is managed by the admin API; remove it there or rename it in the file",
      })
      return "api"
    }
    return row
  }

  // Tenants.
  const tenantIds = new Set(config.tenants.map((t) => t.id))
  for (const t of config.tenants) {
    if (owned("tenant", draft.tenants, t.id) === "api") continue
    draft.tenants.set(t.id, {
      id: t.id,
      ...(t.max_messages_per_second === undefined ? {} : { maxMessagesPerSecond: t.max_messages_per_second }),
      ...(t.raw_retention_days === undefined ? {} : { rawRetentionDays: t.raw_retention_days }),
      ...(t.rollup_retention_days === undefined ? {} : { rollupRetentionDays: t.rollup_retention_days }),
      source: CONFIG,
    })
  }
  for (const [id, t] of draft.tenants) if (t.source === CONFIG && !tenantIds.has(id)) draft.removeTenant(id)

  // Keys: the file's, by hash.
  const keys = new Map<string, RegApiKey>()
  for (const [i, key] of (config.operator_keys ?? []).entries()) {
    const hash = hashSecret(key)
    keys.set(hash, { hash, tenantId: null, role: "operator", name: `operator key ${i + 1}`, source: CONFIG })
  }
  for (const t of config.tenants) {
    for (const [i, key] of t.api_keys.entries()) {
      const hash = hashSecret(key)
      keys.set(hash, {
        hash,
        tenantId: t.id,
        role: "admin",
        name: `${t.id} api key ${i + 1}`,
        source: CONFIG,
      })
    }
    for (const [i, key] of (t.read_keys ?? []).entries()) {
      const hash = hashSecret(key)
      keys.set(hash, {
        hash,
        tenantId: t.id,
        role: "read",
        name: `${t.id} read key ${i + 1}`,
        source: CONFIG,
      })
    }
  }
  for (const [hash, key] of keys)
    if (owned("apiKey", draft.apiKeys, hash) !== "api") draft.apiKeys.set(hash, key)
  for (const [hash, key] of draft.apiKeys)
    if (key.source === CONFIG && !keys.has(hash)) draft.apiKeys.delete(hash)

  // Classes: a changed definition is a new version.
  const classNames = new Set(config.device_classes.map((c) => c.name))
  for (const definition of config.device_classes) {
    const existing = owned("class", draft.classes, definition.name)
    if (existing === "api") continue
    const newest = existing?.versions.at(-1)
    if (newest !== undefined && canonical(newest.definition) === canonical(definition)) continue
    draft.classes.set(definition.name, {
      name: definition.name,
      tenantId: null,
      versions: [...(existing?.versions ?? []), { version: (newest?.version ?? 0) + 1, definition }],
      source: CONFIG,
    })
  }

  // Devices, the fleets' included.
  const deviceIds = new Set<string>()
  for (const d of allDevices(config)) {
    deviceIds.add(d.id)
    const existing = owned("device", draft.devices, d.id)
    if (existing === "api") continue
    draft.devices.set(d.id, {
      id: d.id,
      tenantId: d.tenant,
      className: d.class,
      enabled: existing?.enabled ?? true,
      credentials: [{ hash: hashSecret(d.credential), expiresAt: null }],
      source: CONFIG,
    })
  }
  for (const [id, d] of draft.devices) if (d.source === CONFIG && !deviceIds.has(id)) draft.devices.delete(id)
  // After the devices: a class the file dropped goes once no device of the file uses it.
  for (const [name, c] of draft.classes)
    if (c.source === CONFIG && !classNames.has(name)) draft.classes.delete(name)
  return conflicts
}

const report = (before: RegistryState, draft: Draft, revision: number): ApplyReport => {
  const created: Array<{ kind: Kind; id: string }> = []
  const changed: Array<{ kind: Kind; id: string }> = []
  const removed: Array<{ kind: Kind; id: string }> = []
  const sides: ReadonlyArray<
    [Kind, ReadonlyMap<string, unknown>, ReadonlyMap<string, unknown>, (id: string) => string]
  > = [
    ["tenant", before.tenants, draft.tenants, (id) => id],
    [
      "apiKey",
      before.apiKeys,
      draft.apiKeys,
      (id) => (draft.apiKeys.get(id) ?? before.apiKeys.get(id))!.name,
    ],
    ["class", before.classes, draft.classes, (id) => id],
    ["device", before.devices, draft.devices, (id) => id],
  ]
  for (const [kind, old, now, label] of sides) {
    for (const [id, value] of now) {
      const was = old.get(id)
      if (was === undefined) created.push({ kind, id: label(id) })
      else if (canonical(was) !== canonical(value)) changed.push({ kind, id: label(id) })
    }
    for (const id of old.keys()) if (!now.has(id)) removed.push({ kind, id: label(id) })
  }
  return { revision, created, changed, removed }
}

/**
 * Applies `config` to the registry (or, `dryRun`, says what it would do): refused as a whole with
 * every reason if any row breaks a rule; retried when another writer committed meanwhile.
 */
export const apply = (config: PlatformConfig, options: { readonly dryRun?: boolean } = {}) =>
  Effect.gen(function* () {
    const registry = yield* Registry
    const attempt = Effect.gen(function* () {
      const state = yield* registry.load
      const draft = new Draft(state)
      const conflicts = editFromConfig(draft, config)
      const problems = [...conflicts, ...draft.check()]
      if (problems.length > 0) return yield* Effect.fail(new ApplyRefused(problems))
      const mutations = draft.mutations()
      const revision =
        options.dryRun === true || mutations.length === 0
          ? state.revision
          : yield* registry.commit(mutations, state.revision)
      return report(state, draft, revision)
    })
    return yield* attempt.pipe(
      Effect.retry({
        while: (e: ApplyRefused | RegistryUnavailable | RegistryConflict) => e._tag === "RegistryConflict",
        schedule: Schedule.recurs(20),
      }),
    )
  })

/** The report as lines for people: counts, then each id. */
export const describeReport = (r: ApplyReport, dryRun: boolean): string => {
  const verb = dryRun ? "would be" : ""
  const lines = [
    `${dryRun ? "dry run: " : ""}${r.created.length} created, ${r.changed.length} changed, ${r.removed.length} removed${
      dryRun ? " (nothing written)" : ` (registry revision ${r.revision})`
    }`,
  ]
  for (const [what, rows] of [
    ["created", r.created],
    ["changed", r.changed],
    ["removed", r.removed],
  ] as const) {
    const shown = rows.slice(0, 50)
    for (const row of shown) lines.push(`  ${verb ? `${verb} ` : ""}${what}: ${row.kind} ${row.id}`)
    if (rows.length > shown.length) lines.push(`  … and ${rows.length - shown.length} more ${what}`)
  }
  return lines.join("\n")
}
