/**
 * The SQL of `TelemetryStore.aggregate`: the raw computation over `telemetry FINAL`, or the
 * rollups (`Rollups.ts`: `telemetry_rollup`, 1 min and 1 h) with the range's unaligned edges
 * computed from the readings, so that every answer is the raw one (the one exception, float
 * rounding of inexact sums, is in `Rollups.ts`).
 *
 * Buckets are epoch-aligned: a reading at ts lands in ts - positiveModulo(ts, interval), and a
 * bucket exists when the device has ANY reading in it. A rollup of granularity g answers an
 * interval that g divides, because each interval bucket is then a union of whole g-buckets; the
 * coarsest such rollup reads the fewest rows.
 *
 * Rollup read: the g-buckets wholly inside [from, to) come from the rollup table, the readings in
 * the partial g-buckets at either end from `telemetry FINAL` as the partial rows the insert folds
 * (`Rollups.partials`); both are rows of (bucket, readings, per-field maps of count, sum,
 * min, max). Each row's maps are looked up for the requested fields only, and one GROUP BY of
 * plain sum/min/max merges them into the answer, so the read never merges the maps of fields it
 * was not asked for. The rollup rows need no FINAL: counts and sums add, min and max are
 * idempotent, and unmerged rows of one key merge in the same GROUP BY.
 *
 * The check: a rollup counts every reading that reaches it, so a reading replayed under another
 * dedup token (which FINAL hides from raw reads) counts twice there. Each rollup answer carries
 * the readings the rollup counted in its span and `count()` of `telemetry FINAL` there, in the
 * same query (~4 ms for 30 days of 10,000 readings a day); when they differ the raw plan answers.
 * Months that retention has dropped from `telemetry` but not from the rollups are not checked:
 * the rollups are all there is of them.
 */
import { Effect, Schema } from "effect"
import * as Rollups from "./Rollups.js"
import { type AggregateBucket, type AggregateFn, InvalidQuery, StorageUnavailable } from "./TelemetryStore.js"

/** The most fields one `aggregate` call may ask for. */
export const maxAggregateFields = 64

/** Where an answer is computed from: raw, or the rollup of that granularity (ms). */
export type AggregateSource = "raw" | (typeof Rollups.granularities)[number]

/**
 * Aggregate function -> SQL over the rows that HAVE the field. Through the key and value arrays,
 * not `num[f]`/`mapContains`: on ClickHouse 26.7 those miss the key '' of a
 * Map(LowCardinality(String), …) (0 and false, at least once parts are merged or read FINAL).
 */
const rawSql: Record<AggregateFn, (field: string) => string> = {
  avg: (f) => `avgIfOrNull(${value(f)}, ${has(f)})`,
  min: (f) => `minIfOrNull(${value(f)}, ${has(f)})`,
  max: (f) => `maxIfOrNull(${value(f)}, ${has(f)})`,
  sum: (f) => `sumIfOrNull(${value(f)}, ${has(f)})`,
  count: (f) => `toFloat64(countIf(${has(f)}))`,
}
const has = (f: string) => `indexOf(mapKeys(num), ${f}) > 0`
const value = (f: string) => `mapValues(num)[indexOf(mapKeys(num), ${f})]`

/**
 * Aggregate function -> SQL over the per-row values of the j-th field (`fieldOfRow`). A field
 * without a value in the bucket (count 0) gives null, as raw does.
 */
const rollupSql: Record<AggregateFn, (j: number) => string> = {
  avg: (j) => `if(sum(c${j}) = 0, NULL, sum(s${j}) / sum(c${j}))`,
  min: (j) => `if(sum(c${j}) = 0, NULL, min(mn${j}))`,
  max: (j) => `if(sum(c${j}) = 0, NULL, max(mx${j}))`,
  sum: (j) => `if(sum(c${j}) = 0, NULL, sum(s${j}))`,
  count: (j) => `toFloat64(sum(c${j}))`,
}

/**
 * The j-th field `f` of a rollup row: count, sum, min, max. Through the key and value arrays, as
 * `value` above (the key ''). A missing key reads 0 (`[0]` of an array is its default), right for
 * count and sum; min and max read NaN then, which min and max skip, as raw skips a NaN value.
 */
const fieldOfRow = (f: string, j: number) =>
  `${entry("value_count", f)} AS c${j}, ${entry("value_sum", f)} AS s${j},
   if(c${j} = 0, nan, ${entry("value_min", f)}) AS mn${j}, if(c${j} = 0, nan, ${entry("value_max", f)}) AS mx${j}`
const entry = (map: string, f: string) => `mapValues(${map})[indexOf(mapKeys(${map}), ${f})]`

// Duplicates of a row share its tenant, hence its partition: FINAL need not merge across them.
const settings =
  "SETTINGS do_not_merge_across_partitions_select_final = 1, output_format_json_quote_denormals = 1"

const deviceRange = `tenant_id = {tenant:String} AND device_id = {device:String}`
const tsFrom = (param: string) => `ts >= fromUnixTimestamp64Milli({${param}:Int64}, 'UTC')`
const tsBefore = (param: string) => `ts < fromUnixTimestamp64Milli({${param}:Int64}, 'UTC')`

const positiveMod = (n: number, m: number) => ((n % m) + m) % m

/** The coarsest rollup whose granularity divides `intervalMs`, or raw. */
export const sourceFor = (intervalMs: number): AggregateSource =>
  Rollups.granularities.find((g) => intervalMs % g === 0) ?? "raw"

export interface AggregatePlan {
  /** What the answer is computed from ("raw" also when the range holds no whole rollup bucket). */
  readonly source: AggregateSource
  readonly sql: string
  readonly params: Record<string, unknown>
  /** The buckets of the rows of `sql` (`bucket`, then `v<i>` positionally), or undefined if malformed. */
  readonly decode: (rows: ReadonlyArray<Row>) => ReadonlyArray<AggregateBucket> | undefined
  /**
   * A rollup plan's check: its rows also carry `stored` (count() of `telemetry FINAL` in the
   * rollup's span) and `counted` (the readings the rollup counted there, per bucket); `sql` gives
   * both alone (for an empty answer); `fallback` answers when they differ.
   */
  readonly verify?: { readonly sql: string; readonly fallback: AggregatePlan } | undefined
}

/** A result row, its values checked by `decode` (cheaper than a Schema per value, ~1,000s of them). */
type Row = Readonly<Record<string, unknown>>
const Rows = Schema.Array(Schema.Record({ key: Schema.String, value: Schema.Unknown }))

/**
 * A Float64 or UInt64 as ClickHouse writes it in JSON (`output_format_json_quote_denormals`,
 * quoted 64-bit integers), null kept; undefined when it is none of those.
 */
const toNumber = (v: unknown): number | null | undefined => {
  if (typeof v === "number" || v === null) return v
  if (typeof v !== "string") return undefined
  if (v.endsWith("nan")) return Number.NaN
  if (v === "inf" || v === "+inf") return Number.POSITIVE_INFINITY
  if (v === "-inf") return Number.NEGATIVE_INFINITY
  return /^-?\d+$/.test(v) ? Number(v) : undefined
}

/** `TelemetryStore`'s query runner (a select decoded with a schema). */
export type Select = <A, I>(
  operation: string,
  schema: Schema.Schema<A, I>,
  query: string,
  params: Record<string, unknown>,
) => Effect.Effect<A, StorageUnavailable>

const malformed = (rows: ReadonlyArray<Row>) =>
  new StorageUnavailable({
    operation: "aggregate",
    reason: `unexpected result: ${JSON.stringify(rows.slice(0, 1)).slice(0, 500)}`,
  })

/**
 * Below this many stored rows in the range, raw is the cheaper path: a rollup read has a fixed
 * cost (its edges from raw, its readings check, a larger query) that raw only pays past a few
 * hundred thousand rows. Measured with `bench:history` on chDB (one device reading every
 * second): a 1-day aggregate at 1-minute buckets (86,400 rows) took 17 ms raw against 35 ms
 * through the rollup, a 22-day one at 1-hour buckets (1.9 M rows) 58 ms raw against 39 ms.
 */
export const rawRowsBelow = 250_000

/**
 * The stored rows of the device in [from, to), duplicates included: an estimate for choosing
 * the path, read from the primary index and the ts column only (no FINAL).
 */
export const storedRows = (
  select: Select,
  db: string,
  tenantId: string,
  deviceId: string,
  bounds: { readonly from: number; readonly to: number },
) =>
  Effect.map(
    select(
      "aggregate",
      Rows,
      `SELECT count() AS n FROM ${db}.telemetry WHERE ${deviceRange} AND ${tsFrom("from")} AND ${tsBefore("to")}`,
      { tenant: tenantId, device: deviceId, ...bounds },
    ),
    (rows) => toNumber(rows[0]?.n) ?? Number.POSITIVE_INFINITY,
  )

/**
 * Runs a plan. A rollup plan answers only when the rollup counted exactly the stored readings in
 * its span; otherwise (a replay under another dedup token, see `Rollups.ts`) the raw plan does.
 */
export const run = (select: Select, plan: AggregatePlan) =>
  Effect.gen(function* () {
    const rows = yield* select("aggregate", Rows, plan.sql, plan.params)
    const verify = plan.verify
    const answer = plan.decode(rows)
    if (answer === undefined) return yield* malformed(rows)
    if (verify === undefined) return answer
    // The check rides on every row; an empty answer has none, so ask for it alone.
    const check = rows.length > 0 ? rows : yield* select("aggregate", Rows, verify.sql, plan.params)
    const stored = toNumber(check[0]?.stored)
    const counted = check.reduce((n, row) => n + (toNumber(row.counted) ?? Number.NaN), 0)
    if (stored === counted) return answer
    yield* Effect.annotateCurrentSpan({ rollup_mismatch: true })
    yield* Effect.logWarning(
      `the ${plan.source} ms rollup counted ${counted} readings where telemetry holds ${stored}: answered from raw; ` +
        "`sluice migrate --rebuild-rollups` (ingest stopped) recounts it",
    )
    const raw = verify.fallback
    const rawRows = yield* select("aggregate", Rows, raw.sql, raw.params)
    return raw.decode(rawRows) ?? (yield* malformed(rawRows))
  })

/**
 * The query answering `aggregate` for one device over whole-ms bounds [from, to), or InvalidQuery
 * for an interval, field list or function out of domain. `source: "raw"` forces the raw path.
 */
export const plan = (
  db: string,
  tenantId: string,
  deviceId: string,
  bounds: { readonly from: number; readonly to: number },
  query: {
    readonly intervalMs: number
    readonly fields: ReadonlyArray<string>
    readonly fns: ReadonlyArray<AggregateFn>
    readonly source?: "auto" | "raw" | "rollup" | undefined
  },
): Effect.Effect<AggregatePlan, InvalidQuery> =>
  Effect.gen(function* () {
    const interval = query.intervalMs
    if (!Number.isSafeInteger(interval) || interval < 1) {
      return yield* new InvalidQuery({ reason: "intervalMs must be a positive integer" })
    }
    const fields = [...new Set(query.fields)]
    const fns = [...new Set(query.fns)]
    if (fields.length > maxAggregateFields) {
      return yield* new InvalidQuery({ reason: `at most ${maxAggregateFields} fields per query` })
    }
    const unknown = fns.find((fn) => !Object.hasOwn(rawSql, fn))
    if (unknown !== undefined) {
      return yield* new InvalidQuery({ reason: `unknown aggregate function ${JSON.stringify(unknown)}` })
    }
    const params: Record<string, unknown> = { tenant: tenantId, device: deviceId, ...bounds, interval }
    fields.forEach((field, j) => {
      params[`f${j}`] = field
    })
    // Column i is fns[i / fields.length] of fields[i % fields.length]; aliases are positional.
    const columns = (sql: (fn: AggregateFn, j: number) => string) =>
      fns
        .flatMap((fn) => fields.map((_, j) => sql(fn, j)))
        .map((expr, i) => `, ${expr} AS v${i}`)
        .join("")
    const decode = (rows: ReadonlyArray<Row>) => {
      const buckets: Array<AggregateBucket> = []
      for (const row of rows) {
        const start = toNumber(row.bucket)
        if (typeof start !== "number") return undefined
        // Entries, not assignment: a field may be called "__proto__".
        const values: Array<readonly [string, number | null]> = []
        for (let i = 0; i < fns.length; i++) {
          for (let j = 0; j < fields.length; j++) {
            const v = toNumber(row[`v${i * fields.length + j}`])
            if (v === undefined) return undefined
            values.push([`${fns[i]}_${fields[j]}`, v])
          }
        }
        buckets.push({ start, values: Object.fromEntries(values) })
      }
      return buckets
    }
    const rawPlan: AggregatePlan = {
      source: "raw",
      sql: `SELECT toUnixTimestamp64Milli(ts) - positiveModulo(toUnixTimestamp64Milli(ts), {interval:Int64}) AS bucket
          ${columns((fn, j) => rawSql[fn](`{f${j}:String}`))}
        FROM ${db}.telemetry FINAL
        WHERE ${deviceRange} AND ${tsFrom("from")} AND ${tsBefore("to")}
        GROUP BY bucket
        ORDER BY bucket
        ${settings}`,
      params,
      decode,
    }
    const source = query.source === "raw" ? "raw" : sourceFor(interval)
    const rollup = source === "raw" ? undefined : wholeBuckets(bounds, source)
    if (source === "raw" || rollup === undefined) return rawPlan

    const g = source
    // The interval bucket of a g-bucket: g divides the interval, so it is that of all its readings.
    const start = "bucket - positiveModulo(bucket, {interval:Int64}) AS start"
    const maps = "value_count, value_sum, value_min, value_max"
    // The readings of the partial g-buckets at either end, when the bounds are not aligned to g:
    // a range each, as one OR of two ranges makes the primary key read everything between them.
    const edges = [
      ...(rollup.from > bounds.from ? [["from", "rollup_from"]] : []),
      ...(rollup.to < bounds.to ? [["rollup_to", "to"]] : []),
    ].map(
      ([a, b]) =>
        `SELECT ${start}, 0 AS counted, ${maps}
         FROM (${Rollups.partials(
           `(SELECT tenant_id, device_id, ts, num FROM ${db}.telemetry FINAL
             WHERE ${deviceRange} AND ${tsFrom(a!)} AND ${tsBefore(b!)})`,
           [g],
         )})`,
    )
    const edgeRows = edges.map((sql) => `UNION ALL ${sql}`).join(" ")
    // The check's span: [rollup_from, rollup_to), from the first month telemetry still holds there
    // (retention drops its months before the rollups', which then answer alone for those).
    const rawSpan = `(SELECT tuple(count(), toYYYYMM(minOrNull(ts))) FROM ${db}.telemetry FINAL
      WHERE ${deviceRange} AND ${tsFrom("rollup_from")} AND ${tsBefore("rollup_to")}) AS raw_span`
    const checked = `toYYYYMM(fromUnixTimestamp64Milli(bucket, 'UTC')) >= raw_span.2`
    const rollupRows = `FROM ${db}.telemetry_rollup
      WHERE ${deviceRange} AND granularity = {granularity:UInt32}
        AND bucket >= {rollup_from:Int64} AND bucket < {rollup_to:Int64}`
    const perField = fields.map((_, j) => `, ${fieldOfRow(`{f${j}:String}`, j)}`).join("")
    const sql = `WITH ${rawSpan}
      SELECT start AS bucket ${columns((fn, j) => rollupSql[fn](j))}, sum(counted) AS counted,
        raw_span.1 AS stored
      FROM (
        SELECT start, counted ${perField}
        FROM (
          SELECT ${start}, if(${checked}, readings, 0) AS counted, ${maps}
          ${rollupRows}
          ${edgeRows}
        )
      )
      GROUP BY start
      ORDER BY start
      ${settings}`
    const verify = `WITH ${rawSpan}
      SELECT raw_span.1 AS stored, (SELECT sumIf(readings, ${checked}) ${rollupRows}) AS counted
      ${settings}`
    return {
      source,
      sql,
      params: { ...params, granularity: g, rollup_from: rollup.from, rollup_to: rollup.to },
      decode,
      verify: { sql: verify, fallback: rawPlan },
    }
  })

/**
 * The span of whole g-buckets inside [from, to), or undefined when there is none (a range inside
 * one or two g-buckets is cheaper raw) or its bounds would not be exact in a double.
 */
const wholeBuckets = (bounds: { readonly from: number; readonly to: number }, g: number) => {
  const from = bounds.from + positiveMod(-bounds.from, g)
  const to = bounds.to - positiveMod(bounds.to, g)
  return Number.isSafeInteger(from) && Number.isSafeInteger(to) && from < to ? { from, to } : undefined
}
