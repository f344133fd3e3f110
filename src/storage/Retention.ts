/**
 * Per-tenant retention and tenant deletion on the ClickHouse tables, by dropping partitions.
 *
 * `telemetry` and `dead_letters` (migration 4) and the rollups (`telemetry_rollup`, migration 5)
 * are partitioned by (tenant, month of device time / arrival / bucket), so a tenant's expired data
 * is a set of whole partitions: `DROP PARTITION` unlinks their parts and rewrites nothing else
 * (a mutation, lightweight DELETE or row TTL rewrites every part of the tenant it touches;
 * measured in bench/README.md, "Retention"). The price: a month goes only once ALL of it is past
 * the retention, so data is removed up to one month (31 days) after it expires, plus up to one
 * expiry interval (SLUICE_RETENTION_INTERVAL_MS, default 1 h).
 *
 * Dead letters follow the raw retention: they hold raw payloads. `device_latest` (one row per
 * device) is kept, so `latest` still answers for a device whose history has expired; it goes
 * with the tenant.
 *
 * DROP PARTITION of a partition already gone is a no-op, so several processors may expire at the
 * same time. A table that does not exist (the rollups before their migration) is skipped, and so
 * is one not partitioned by (tenant_id, toYYYYMM(…)) (`telemetry` before migration 4).
 */
import type { ClickHouseClient } from "@clickhouse/client"
import { Config, Duration, Effect, Layer, Schedule } from "effect"
import { Counter } from "prom-client"
import { Metrics } from "../observability/Metrics.js"
import { Tenancy } from "../tenancy/Tenancy.js"
import {
  type DroppedPartition,
  type RetentionPolicy,
  StorageUnavailable,
  TelemetryStore,
} from "./TelemetryStore.js"

/** Tables of raw data (expired by `rawRetentionDays`) and rollups (by `rollupRetentionDays`). */
export const rawTables = ["telemetry", "dead_letters"] as const
export const rollupTables = ["telemetry_rollup"] as const
/** Every table holding a tenant's rows: all of them go with the tenant. */
export const tenantTables = [...rawTables, "device_latest", ...rollupTables] as const

const day = 86_400_000

/**
 * SLUICE_RETENTION_INTERVAL_MS: how often a processor expires data, ms; default 1 hour. It also
 * expires once at start.
 */
export const interval = Config.integer("interval_ms").pipe(
  Config.withDefault(3_600_000),
  Config.validate({ message: "must be a positive number of milliseconds", validation: (n) => n > 0 }),
  Config.nested("retention"),
  Config.nested("sluice"),
)

/** One active partition of a table, as `system.parts` names it. */
interface Partition {
  readonly table: string
  readonly partition_key: string
  readonly partition: string
  readonly partition_id: string
  readonly rows: number | string
  readonly bytes: number | string
}

// `('acme',202601)`: a tenant (a quoted string, \-escaped) and a YYYYMM month.
const monthlyPartition = /^\('((?:[^'\\]|\\.)*)',(\d{6})\)$/
const unquote = (s: string) => s.replace(/\\(.)/g, "$1")
const isMonthly = (key: string) => /^\(?tenant_id, toYYYYMM\(/.test(key)

/** The tenant and month of a partition, or undefined if the table is not partitioned so. */
const parse = (p: Partition): { tenantId: string; month?: number } | undefined => {
  if (p.partition_key === "tenant_id") return { tenantId: p.partition }
  if (!isMonthly(p.partition_key)) return undefined
  const m = monthlyPartition.exec(p.partition)
  return m === null ? undefined : { tenantId: unquote(m[1]!), month: Number(m[2]) }
}

/** The first instant after month YYYYMM, epoch ms. */
const monthEnd = (month: number) => Date.UTC(Math.floor(month / 100), month % 100, 1)

const unavailable = (operation: string) => (cause: unknown) =>
  new StorageUnavailable({
    operation,
    reason: (cause instanceof Error ? cause.message : String(cause)).slice(0, 2000),
  })

/** `expire` and `dropTenant` of the store on `client`, database `db` (a validated identifier). */
export const make = (client: ClickHouseClient, db: string) => {
  const partitions = (operation: string, tables: ReadonlyArray<string>) =>
    Effect.tryPromise({
      try: async (signal) => {
        const result = await client.query({
          query: `SELECT p.table AS table, t.partition_key AS partition_key, p.partition AS partition,
                    p.partition_id AS partition_id, sum(p.rows) AS rows, sum(p.bytes_on_disk) AS bytes
                  FROM system.parts AS p
                  INNER JOIN system.tables AS t ON t.database = p.database AND t.name = p.table
                  WHERE p.database = {db:String} AND p.table IN {tables:Array(String)} AND p.active
                  GROUP BY table, partition_key, partition, partition_id
                  ORDER BY table, partition`,
          query_params: { db, tables },
          format: "JSONEachRow",
          abort_signal: signal,
        })
        return result.json<Partition>()
      },
      catch: unavailable(operation),
    })

  const drop = (operation: string, p: Partition, tenantId: string) =>
    // partition_id is ClickHouse's own hex (or digits and '-'), checked before it enters SQL.
    /^[0-9A-Za-z_-]+$/.test(p.partition_id)
      ? Effect.tryPromise({
          try: (signal) =>
            client.command({
              query: `ALTER TABLE ${db}.${p.table} DROP PARTITION ID '${p.partition_id}'`,
              abort_signal: signal,
            }),
          catch: unavailable(operation),
        }).pipe(
          Effect.as<DroppedPartition>({
            table: p.table,
            tenantId,
            partition: p.partition,
            rows: Number(p.rows),
            bytes: Number(p.bytes),
          }),
        )
      : Effect.fail(unavailable(operation)(`unexpected partition id ${JSON.stringify(p.partition_id)}`))

  const expire = Effect.fn("TelemetryStore.expire")(function* (
    now: number,
    policies: ReadonlyArray<RetentionPolicy>,
  ) {
    const cutoffs = new Map<string, { raw?: number | undefined; rollup?: number | undefined }>()
    for (const p of policies) {
      if (p.rawRetentionDays === undefined && p.rollupRetentionDays === undefined) continue
      cutoffs.set(p.tenantId, {
        raw: p.rawRetentionDays === undefined ? undefined : now - p.rawRetentionDays * day,
        rollup: p.rollupRetentionDays === undefined ? undefined : now - p.rollupRetentionDays * day,
      })
    }
    if (cutoffs.size === 0) return []
    const found = yield* partitions("expire", [...rawTables, ...rollupTables])
    const expired = found.filter((p) => {
      const at = parse(p)
      const cutoff = at === undefined ? undefined : cutoffs.get(at.tenantId)
      if (at?.month === undefined || cutoff === undefined) return false
      const limit = (rawTables as ReadonlyArray<string>).includes(p.table) ? cutoff.raw : cutoff.rollup
      // Wholly before: the month's last instant is older than the cutoff.
      return limit !== undefined && monthEnd(at.month) <= limit
    })
    return yield* Effect.forEach(expired, (p) => drop("expire", p, parse(p)!.tenantId))
  })

  const dropTenant = Effect.fn("TelemetryStore.dropTenant")(function* (tenantId: string) {
    yield* Effect.annotateCurrentSpan({ tenant: tenantId })
    const found = yield* partitions("dropTenant", tenantTables)
    const unknown = found.filter((p) => parse(p) === undefined)
    if (unknown.length > 0) {
      // A table partitioned some other way could hold the tenant's rows in a shared partition.
      return yield* unavailable("dropTenant")(
        `cannot tell the tenant's partitions of ${[...new Set(unknown.map((p) => p.table))].join(", ")}: ` +
          "partitioned neither by tenant_id nor by (tenant_id, toYYYYMM(…)); run the schema migrations",
      )
    }
    const own = found.filter((p) => parse(p)?.tenantId === tenantId)
    return yield* Effect.forEach(own, (p) => drop("dropTenant", p, tenantId))
  })

  return { expire, dropTenant }
}

/** A tenant's retention settings as the store takes them. */
export const policiesOf = (
  tenants: ReadonlyArray<{
    readonly tenantId: string
    readonly rawRetentionDays?: number | undefined
    readonly rollupRetentionDays?: number | undefined
  }>,
): ReadonlyArray<RetentionPolicy> =>
  tenants.map((t) => ({
    tenantId: t.tenantId,
    rawRetentionDays: t.rawRetentionDays,
    rollupRetentionDays: t.rollupRetentionDays,
  }))

const counterOf = (metrics: typeof Metrics.Service) => {
  const name = "sluice_retention_dropped_partitions_total"
  // One per registry: a process that builds this layer twice shares the counter.
  const existing = metrics.registry.getSingleMetric(name)
  return existing instanceof Counter
    ? (existing as Counter<"table">)
    : new Counter({
        name,
        help: "Partitions dropped by retention (each a tenant's month of a table)",
        labelNames: ["table"],
        registers: [metrics.registry],
      })
}

/**
 * The expiry loop of a processor: at start and every SLUICE_RETENTION_INTERVAL_MS, drops each
 * tenant's expired partitions (tenants and retentions from Tenancy, current at each pass). A
 * failed pass is logged and retried at the next one; the loop ends with its scope.
 */
export const layer = Layer.scopedDiscard(
  Effect.gen(function* () {
    const store = yield* TelemetryStore
    const tenancy = yield* Tenancy
    const dropped = counterOf(yield* Metrics)
    const every = yield* interval
    const pass = Effect.gen(function* () {
      const now = Date.now()
      const gone = yield* store.expire(now, policiesOf(tenancy.tenants))
      for (const p of gone) {
        dropped.inc({ table: p.table })
        yield* Effect.logInfo(`retention dropped ${p.table} ${p.partition}: ${p.rows} rows`).pipe(
          Effect.annotateLogs({ tenant: p.tenantId, table: p.table, rows: p.rows, bytes: p.bytes }),
        )
      }
    }).pipe(
      Effect.catchAll((e) => Effect.logWarning(`retention pass failed, retried in ${every} ms`, e)),
      Effect.withSpan("Retention.pass"),
    )
    yield* pass.pipe(Effect.repeat(Schedule.spaced(Duration.millis(every))), Effect.forkScoped)
  }),
)
