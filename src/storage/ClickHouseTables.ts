/**
 * The ClickHouse tables behind the TelemetryStore, and how rows cross into and out of them. The
 * tables themselves are created and changed by the ordered migrations in `Migrations.ts`.
 *
 * Partitioning (migration 4): `PARTITION BY (tenant_id, toYYYYMM(ts))` for `telemetry`,
 * `(tenant_id, toYYYYMM(received_at))` for `dead_letters`, as the rollups by their bucket. The
 * tenant keeps a tenant's data physically apart; the month makes retention a `DROP PARTITION` of
 * whole months (`Retention.ts`), which rewrites nothing: expiring a week of 10M readings under
 * `PARTITION BY tenant_id` rewrote 92 MB of the tenant's 104 MB (ALTER DELETE, 1.4 s; a row TTL
 * 25 s), against 0 bytes for dropping partitions (bench/README.md, "Retention"). Month, not
 * week: a tenant kept forever accrues 12 partitions a year, not 52, and a batch whose device
 * clocks span a boundary splits into one more part only at month ends; the price is that data is
 * removed up to a month after it expires. FINAL stays per partition
 * (`do_not_merge_across_partitions_select_final`): duplicates of a row share tenant and ts, hence
 * the month. Every query names one tenant and a ts range, so the month also prunes partitions.
 * An insert lifts `max_partitions_per_insert_block` (100 by default): a batch of readings with
 * far-apart device clocks would otherwise be refused on every retry. Past a few thousand tenants
 * the partition count itself becomes the problem; then partition by a hash bucket of the tenant.
 */
import { Schema } from "effect"
import type { DeadLetter, FieldValue, TelemetryRow } from "./TelemetryStore.js"

/**
 * The statements of the settings that follow configuration, re-applied on every start after the
 * migrations (`Migrations.ts`, which create the tables), so a changed `fsync` takes effect on
 * existing tables. Each is idempotent.
 */
export const settings = (database: string, fsync: boolean): ReadonlyArray<string> =>
  // The latest and rollup tables too: the store's insert writes them with the readings (Latest.ts,
  // Rollups.ts), and an acknowledged reading must not be lost from `latest`, `activity` or
  // `aggregate` while it survives in `telemetry`.
  ["telemetry", "dead_letters", "device_latest", "telemetry_rollup"].map(
    (table) =>
      `ALTER TABLE ${database}.${table} MODIFY SETTING ` +
      `fsync_after_insert = ${Number(fsync)}, fsync_part_directory = ${Number(fsync)}`,
  )

export const telemetryColumns = [
  "tenant_id",
  "device_id",
  "device_class",
  "msg_id",
  "ts",
  "received_at",
  "num",
  "str",
  "bool_fields",
  "class_version",
] as const

export const deadLetterColumns = [
  "tenant_id",
  "device_id",
  "received_at",
  "shard_id",
  "sequence_number",
  "reason",
  "raw",
] as const

/**
 * The settings of an INSERT … SELECT that copies or recounts rows (a migration's copy, a backfill,
 * the rollup rebuild): no dedup, since the block is no redelivery — and the token too, since on
 * chDB an earlier insert's token stays set on the session and would make ClickHouse drop the block
 * as that insert's redelivery, insert_deduplicate = 0 or not; no partition limit, since the rows
 * span any number of (tenant, month) partitions.
 */
export const copyInsertSettings =
  "insert_deduplicate = 0, insert_deduplication_token = '', max_partitions_per_insert_block = 0"

/** JSON has no NaN or Infinity; ClickHouse reads these strings into a Float64 and writes them back. */
export const encodeFloat = (n: number): number | string =>
  Number.isFinite(n) ? n : Number.isNaN(n) ? "nan" : n > 0 ? "inf" : "-inf"

// A DateTime64(3) column reads a JSON integer as milliseconds; a fraction would read as seconds.
const encodeTime = (ms: number) => Math.round(ms)

/** A TelemetryRow as one JSONEachRow object (columns as `telemetryColumns`). */
export const encodeRow = (row: TelemetryRow) => {
  // Entries, not assignment: a field may be called "__proto__".
  const num: Array<[string, number | string]> = []
  const str: Array<[string, string]> = []
  const bools: Array<string> = []
  for (const [field, value] of Object.entries(row.values)) {
    if (typeof value === "number") num.push([field, encodeFloat(value)])
    else if (typeof value === "boolean") {
      num.push([field, value ? 1 : 0])
      bools.push(field)
    } else str.push([field, value])
  }
  return {
    tenant_id: row.tenantId,
    device_id: row.deviceId,
    device_class: row.deviceClass,
    msg_id: row.msgId,
    ts: encodeTime(row.ts),
    received_at: encodeTime(row.receivedAt),
    num: Object.fromEntries(num),
    str: Object.fromEntries(str),
    bool_fields: bools,
    class_version: row.classVersion ?? 0,
  }
}

/** A DeadLetter as one JSONEachRow object (columns as `deadLetterColumns`). */
export const encodeDeadLetter = (row: DeadLetter) => ({
  tenant_id: row.tenantId,
  device_id: row.deviceId,
  received_at: encodeTime(row.receivedAt),
  shard_id: row.shardId,
  sequence_number: row.sequenceNumber,
  reason: row.reason,
  raw: row.raw,
})

// --- reading back -------------------------------------------------------------------------------

/** Int64 arrives as a JSON number or, with output_format_json_quote_64bit_integers, a string. */
const Int64 = Schema.Union(Schema.Number, Schema.NumberFromString)

/** Float64 with `output_format_json_quote_denormals = 1`: NaN and ±Infinity arrive as strings. */
export const Float = Schema.transform(
  Schema.Union(Schema.Number, Schema.Literal("nan", "-nan", "inf", "+inf", "-inf")),
  Schema.Number,
  {
    strict: true,
    decode: (v) =>
      typeof v === "number" ? v : v.endsWith("nan") ? Number.NaN : v === "-inf" ? -Infinity : Infinity,
    encode: (n) => n,
  },
)

/** The select list `StoredRow` decodes (ms aliases differ from the columns, which WHERE uses). */
export const storedRowSelect =
  "msg_id, device_class, toUnixTimestamp64Milli(ts) AS ts_ms, " +
  "toUnixTimestamp64Milli(received_at) AS received_ms, num, str, bool_fields, class_version"

const StoredRow = Schema.Struct({
  msg_id: Schema.String,
  device_class: Schema.String,
  ts_ms: Int64,
  received_ms: Int64,
  num: Schema.Record({ key: Schema.String, value: Float }),
  str: Schema.Record({ key: Schema.String, value: Schema.String }),
  bool_fields: Schema.Array(Schema.String),
  class_version: Int64,
})
export const StoredRows = Schema.Array(StoredRow)

/** Rebuilds a TelemetryRow; the tenant and device are the ones the query was filtered by. */
export const decodeRow = (tenantId: string, deviceId: string, row: typeof StoredRow.Type): TelemetryRow => {
  const bools = new Set(row.bool_fields)
  const values: Record<string, FieldValue> = Object.fromEntries([
    ...Object.entries(row.str),
    ...Object.entries(row.num).map(([field, n]) => [field, bools.has(field) ? n !== 0 : n] as const),
  ])
  return {
    tenantId,
    deviceId,
    deviceClass: row.device_class,
    ...(row.class_version > 0 ? { classVersion: row.class_version } : {}),
    msgId: row.msg_id,
    ts: row.ts_ms,
    receivedAt: row.received_ms,
    values,
  }
}

export const StoredDeadLetters = Schema.Array(
  Schema.Struct({
    device_id: Schema.String,
    received_ms: Int64,
    shard_id: Schema.String,
    sequence_number: Schema.String,
    reason: Schema.String,
    raw: Schema.String,
  }),
)

export const StoredActivity = Schema.Array(Schema.Struct({ device_id: Schema.String, last_seen: Int64 }))
