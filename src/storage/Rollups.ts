/**
 * The rollups (`telemetry_rollup`, migrations 5 and 6): per (tenant, device, granularity, bucket),
 * granularity 1 min or 1 h, the readings counted and per numeric field the count, sum, min and max,
 * enough for every aggregate function (avg = sum / count). `Aggregates.ts` reads them.
 *
 * Written by the store's `insert`, not by a materialized view (migration 6 dropped migration 5's):
 * each batch is folded here in JavaScript into one partial row per (tenant, device, granularity,
 * bucket) it touches and inserted as a second block after the readings, under the batch's token
 * plus "/rollup", so the dedup of a redelivered batch is explicit rather than resting on a
 * view's derived tokens. A batch of 3,000 readings from 200 devices becomes ~400 rollup rows; the
 * CPU is the same as the view's (~10 ms per INSERT, whatever its rows: a query, a part, its
 * merges), which larger batches pay for (bench/README.md, "Paying for latest and rollups").
 *
 * Exactness, against the raw computation over `telemetry FINAL`:
 * - A batch redelivered under its token is dropped by both tables (each keeps a dedup window), so
 *   a retry after the readings were stored but not their rollup stores the rollup once. The fold
 *   of the same rows is the same block, whichever insert it was.
 * - A replay under ANOTHER token (a batch re-cut after a crash or a lease takeover, or older than
 *   the dedup window) is stored twice: FINAL hides the copy from raw reads, the rollup counts it.
 *   A rollup read therefore checks the readings it counted against `count()` of `telemetry FINAL`
 *   and answers from raw when they differ (`Aggregates.ts`), until `rebuild` recounts.
 * - Floats: sums of partial sums are the raw sum when the partials are exact (integers, binary
 *   fractions); otherwise they may differ in the last bits (the raw sum's order is not fixed
 *   either), and a finite sum that overflows to ±Infinity may do so in one order only. NaN and
 *   ±Infinity otherwise agree: min and max skip NaN (NaN only if every value is), any NaN, or
 *   +Infinity with -Infinity, makes the sum NaN, in any order.
 *
 * `partials` is the same fold in SQL: the rebuild's, and the raw edges of a rollup read. `fold`
 * must agree with it value for value; `test/storage/rollups.test.ts` compares both with raw.
 */
import type { ClickHouseClient } from "@clickhouse/client"
import { Effect } from "effect"
import { copyInsertSettings, encodeFloat } from "./ClickHouseTables.js"
import { StorageUnavailable, type TelemetryRow } from "./TelemetryStore.js"

/**
 * The granularities (bucket widths in ms), coarsest first. Adding one needs a rebuild of the
 * stored history (`rebuild`) as well as an edit of this list.
 */
export const granularities = [3_600_000, 60_000] as const

export const columns = [
  "tenant_id",
  "device_id",
  "granularity",
  "bucket",
  "readings",
  "value_count",
  "value_sum",
  "value_min",
  "value_max",
] as const

/**
 * Each row of `source` once per granularity (`of`, by default all), as a partial rollup row of its bucket: `readings` 1
 * (every reading, numeric fields or not, so a bucket with readings but no number exists as in the
 * raw query, and the readings counted can be checked against `count()` of `telemetry FINAL`) and
 * per numeric field (booleans are stored as 0/1 among them) maps of count 1, sum, min and max the
 * value. Buckets are arithmetic on epoch ms, as the raw query's, so times before 1970 (to 1900)
 * and after 2106 (to 2299) bucket right where date functions would not.
 */
export const partials = (source: string, of: ReadonlyArray<number> = granularities) =>
  `SELECT tenant_id, device_id, granularity,
     toUnixTimestamp64Milli(ts) - positiveModulo(toUnixTimestamp64Milli(ts), granularity) AS bucket,
     toUInt64(1) AS readings, mapApply((k, v) -> (k, toUInt64(1)), num) AS value_count,
     num AS value_sum, num AS value_min, num AS value_max
   FROM ${source}
   ARRAY JOIN CAST([${of.join(", ")}] AS Array(UInt32)) AS granularity`

/**
 * The partials of `source` folded per (tenant, device, granularity, bucket). `sumMap`, `minMap`,
 * `maxMap` fold as a read folds the partials: min and max skip NaN (NaN only if every value is);
 * -0 and 0 compare equal, so which one a min or max keeps depends on the order, in raw reads too.
 * ClickHouse may drop a key whose sum is 0 from `value_sum` (here or in a merge) where `fold`
 * keeps it: a read takes a missing key as 0 (`Aggregates.ts`), so no answer changes, and the
 * count map never sums to 0.
 */
export const states = (source: string) =>
  `SELECT tenant_id, device_id, granularity, bucket, sum(readings) AS readings,
     sumMap(value_count) AS value_count, sumMap(value_sum) AS value_sum,
     minMap(value_min) AS value_min, maxMap(value_max) AS value_max
   FROM (${partials(source)})
   GROUP BY tenant_id, device_id, granularity, bucket`

/** What `rebuild` runs its SQL with: a migration's `MigrationSql`, or `sqlOf` a client. */
export interface Sql<E> {
  readonly command: (statement: string, params?: Record<string, unknown>) => Effect.Effect<void, E>
  readonly query: <A>(
    statement: string,
    params?: Record<string, unknown>,
  ) => Effect.Effect<ReadonlyArray<A>, E>
}

/** `Sql` over a ClickHouse client; a failure is StorageUnavailable(`operation`). */
export const sqlOf = (client: ClickHouseClient, operation: string): Sql<StorageUnavailable> => {
  const unavailable = (cause: unknown) =>
    new StorageUnavailable({ operation, reason: cause instanceof Error ? cause.message : String(cause) })
  return {
    command: (statement, params) =>
      Effect.tryPromise({
        try: () =>
          client.command({ query: statement, ...(params === undefined ? {} : { query_params: params }) }),
        catch: unavailable,
      }).pipe(Effect.asVoid),
    query: <A>(statement: string, params?: Record<string, unknown>) =>
      Effect.tryPromise({
        try: async () => {
          const result = await client.query({
            query: statement,
            format: "JSONEachRow",
            ...(params === undefined ? {} : { query_params: params }),
          })
          return result.json<A>()
        },
        catch: unavailable,
      }),
  }
}

/**
 * Recounts the rollups from the stored readings, each once (`telemetry FINAL`): after a replay
 * under another token, or to fill a rollup that missed inserts (an older Sluice writing without
 * it). One INSERT … SELECT per (tenant, month) of `telemetry`, so its GROUP BY holds one
 * partition's buckets (about one per reading at 1-minute granularity), not the history's, and
 * spills to disk past 1 GB. Run with ingest stopped (`sluice migrate --rebuild-rollups`): a batch
 * stored between the TRUNCATE and the backfill's read of its month would be counted twice, one
 * after that read not at all; a read meanwhile answers from raw (its check fails), never wrong.
 */
export const rebuild = <E>(sql: Sql<E>, db: string) =>
  Effect.gen(function* () {
    yield* sql.command(`TRUNCATE TABLE ${db}.telemetry_rollup`)
    const months = yield* sql.query<{ tenant_id: string; month: number | string }>(
      `SELECT DISTINCT tenant_id, toYYYYMM(ts) AS month FROM ${db}.telemetry ORDER BY tenant_id, month`,
    )
    for (const { tenant_id, month } of months) {
      yield* sql.command(
        `INSERT INTO ${db}.telemetry_rollup (${columns.join(", ")})
         ${states(`(SELECT * FROM ${db}.telemetry FINAL
           WHERE tenant_id = {tenant:String} AND toYYYYMM(ts) = {month:UInt32})`)}
         SETTINGS do_not_merge_across_partitions_select_final = 1,
           max_bytes_before_external_group_by = 1000000000, ${copyInsertSettings}`,
        { tenant: tenant_id, month: Number(month) },
      )
    }
    return months.length
  })

interface Field {
  count: number
  sum: number
  min: number
  max: number
}

interface Bucket {
  readonly tenantId: string
  readonly deviceId: string
  readonly granularity: number
  readonly bucket: number
  readings: number
  // A Map, not an object: a field may be called "__proto__".
  readonly fields: Map<string, Field>
}

/**
 * `rows` folded as `states` folds them, one JSONEachRow object (columns as `columns`) per
 * (tenant, device, granularity, bucket), in the order each key first appears, so the same rows
 * in the same order give the same block (the dedup token's premise). Times are rounded to whole
 * ms as `telemetry` stores them.
 */
export const fold = (rows: ReadonlyArray<TelemetryRow>) => {
  const buckets = new Map<string, Bucket>()
  for (const row of rows) {
    const ts = Math.round(row.ts)
    for (const granularity of granularities) {
      const bucket = ts - (((ts % granularity) + granularity) % granularity)
      // \u0000 cannot occur in a tenant id (an identifier); a device id may hold anything after it.
      const key = `${row.tenantId}\u0000${granularity}\u0000${bucket}\u0000${row.deviceId}`
      let b = buckets.get(key)
      if (b === undefined) {
        b = {
          tenantId: row.tenantId,
          deviceId: row.deviceId,
          granularity,
          bucket,
          readings: 0,
          fields: new Map(),
        }
        buckets.set(key, b)
      }
      b.readings++
      for (const name in row.values) {
        if (!Object.hasOwn(row.values, name)) continue
        const raw = row.values[name]
        if (typeof raw === "string") continue
        const v = typeof raw === "boolean" ? (raw ? 1 : 0) : raw
        const f = b.fields.get(name)
        if (f === undefined) {
          b.fields.set(name, { count: 1, sum: v, min: v, max: v })
        } else {
          f.count++
          f.sum += v
          // NaN is skipped unless every value is NaN: a NaN min is replaced by any number.
          if (v < f.min || (Number.isNaN(f.min) && !Number.isNaN(v))) f.min = v
          if (v > f.max || (Number.isNaN(f.max) && !Number.isNaN(v))) f.max = v
        }
      }
    }
  }
  const out = []
  for (const b of buckets.values()) {
    const count: Array<[string, number]> = []
    const sum: Array<[string, number | string]> = []
    const min: Array<[string, number | string]> = []
    const max: Array<[string, number | string]> = []
    for (const [name, f] of b.fields) {
      count.push([name, f.count])
      sum.push([name, encodeFloat(f.sum)])
      min.push([name, encodeFloat(f.min)])
      max.push([name, encodeFloat(f.max)])
    }
    out.push({
      tenant_id: b.tenantId,
      device_id: b.deviceId,
      granularity: b.granularity,
      bucket: b.bucket,
      readings: b.readings,
      value_count: Object.fromEntries(count),
      value_sum: Object.fromEntries(sum),
      value_min: Object.fromEntries(min),
      value_max: Object.fromEntries(max),
    })
  }
  return out
}
