/**
 * When devices were last heard from, read from `device_latest` (migration 3): per (tenant,
 * device) `maxState(received_at)` states, merged by `maxMerge` at read time. The device list asks
 * for a page of ids (`lastSeen`) or for the devices heard from since an instant (`seenSince`), so
 * its cost follows the page, not the tenant's fleet or history.
 *
 * `seenSince` filters rows before merging: a device was heard from since `since` exactly when one
 * of its partial states (an unmerged part's row) is at or after it, and the row holding its true
 * maximum is one of those, so `WHERE finalizeAggregation(last_seen) >= since` then `maxMerge` gives
 * the same devices and times as `HAVING maxMerge(last_seen) >= since`, while merging only the
 * recent devices (chDB, 100,000 devices of which half recent: 3-4 ms against 20-35 ms).
 */
import { Effect, Schema } from "effect"
import { StoredActivity } from "./ClickHouseTables.js"
import { type DeviceActivity, InvalidQuery, maxPageSize, type StorageUnavailable } from "./TelemetryStore.js"

/** The store's query runner: SQL with `{name:Type}` parameters, the result decoded by `schema`. */
export type Select = <A, I>(
  operation: string,
  schema: Schema.Schema<A, I>,
  query: string,
  params: Record<string, unknown>,
) => Effect.Effect<A, StorageUnavailable>

// Not aliased `last_seen`: ClickHouse would read the alias, not the state column, in WHERE.
const Seen = Schema.Array(
  Schema.Struct({
    device_id: Schema.String,
    // Int64 arrives as a number or, with output_format_json_quote_64bit_integers, a string.
    seen_ms: Schema.Union(Schema.Number, Schema.NumberFromString),
  }),
)
const Count = Schema.Array(Schema.Struct({ n: Schema.Union(Schema.Number, Schema.NumberFromString) }))
const seenSelect = "device_id, toUnixTimestamp64Milli(maxMerge(last_seen)) AS seen_ms"

/** The activity reads of a store on database `db`. */
export const make = (db: string, select: Select) => {
  const activity = Effect.fn("TelemetryStore.activity")(function* (tenantId: string) {
    yield* Effect.annotateCurrentSpan({ tenant: tenantId })
    const rows = yield* select(
      "activity",
      StoredActivity,
      `SELECT device_id, toUnixTimestamp64Milli(maxMerge(last_seen)) AS last_seen
       FROM ${db}.device_latest
       WHERE tenant_id = {tenant:String}
       GROUP BY device_id
       ORDER BY device_id`,
      { tenant: tenantId },
    )
    return rows.map((row) => ({ deviceId: row.device_id, lastSeen: row.last_seen }))
  })

  const lastSeen = Effect.fn("TelemetryStore.lastSeen")(function* (
    tenantId: string,
    deviceIds: ReadonlyArray<string>,
  ) {
    yield* Effect.annotateCurrentSpan({ tenant: tenantId, devices: deviceIds.length })
    if (deviceIds.length > maxPageSize) {
      return yield* new InvalidQuery({ reason: `at most ${maxPageSize} device ids per lastSeen call` })
    }
    if (deviceIds.length === 0) return new Map<string, number>()
    // The IN set is what the primary key (tenant_id, device_id) prunes granules by.
    const rows = yield* select(
      "lastSeen",
      Seen,
      `SELECT ${seenSelect}
       FROM ${db}.device_latest
       WHERE tenant_id = {tenant:String} AND device_id IN {ids:Array(String)}
       GROUP BY device_id`,
      { tenant: tenantId, ids: deviceIds },
    )
    return new Map(rows.map((row) => [row.device_id, row.seen_ms]))
  })

  const seenSince = Effect.fn("TelemetryStore.seenSince")(function* (
    tenantId: string,
    query: {
      readonly since: number
      readonly after?: string | undefined
      readonly prefix?: string | undefined
      readonly limit: number
    },
  ) {
    yield* Effect.annotateCurrentSpan({ tenant: tenantId })
    const { since, limit } = query
    if (!Number.isSafeInteger(since)) {
      return yield* new InvalidQuery({ reason: "since must be an integer (epoch ms)" })
    }
    if (!Number.isInteger(limit) || limit < 1 || limit > maxPageSize) {
      return yield* new InvalidQuery({ reason: `limit must be an integer from 1 to ${maxPageSize}` })
    }
    // Aggregating in key order lets LIMIT stop the read once enough devices are found; the
    // startsWith and > conditions narrow the key range the read starts and ends at.
    const rows = yield* select(
      "seenSince",
      Seen,
      `SELECT ${seenSelect}
       FROM ${db}.device_latest
       WHERE tenant_id = {tenant:String}
         AND device_id > {after:String}
         AND startsWith(device_id, {prefix:String})
         AND finalizeAggregation(last_seen) >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
       GROUP BY device_id
       ORDER BY device_id
       LIMIT {limit:UInt32}
       SETTINGS optimize_aggregation_in_order = 1`,
      { tenant: tenantId, after: query.after ?? "", prefix: query.prefix ?? "", since, limit },
    )
    return rows.map((row): DeviceActivity => ({ deviceId: row.device_id, lastSeen: row.seen_ms }))
  })

  const countSeenSince = Effect.fn("TelemetryStore.countSeenSince")(function* (
    tenantId: string,
    since: number,
  ) {
    yield* Effect.annotateCurrentSpan({ tenant: tenantId })
    if (!Number.isSafeInteger(since)) {
      return yield* new InvalidQuery({ reason: "since must be an integer (epoch ms)" })
    }
    // A device is recent exactly when one of its partial rows is (that row holds its maximum),
    // so the rows can be filtered before any merge, and a device counted once by its id.
    const rows = yield* select(
      "countSeenSince",
      Count,
      `SELECT uniqExact(device_id) AS n
       FROM ${db}.device_latest
       WHERE tenant_id = {tenant:String}
         AND finalizeAggregation(last_seen) >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')`,
      { tenant: tenantId, since },
    )
    return rows[0]?.n ?? 0
  })

  return { activity, lastSeen, seenSince, countSeenSince }
}
