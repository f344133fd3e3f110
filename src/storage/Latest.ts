/**
 * Each device's latest reading and last seen (`device_latest`, migrations 3 and 7): per (tenant,
 * device) an `argMaxState` of the reading by (ts, msg_id) — latest by device time, ties to the
 * greatest msg_id — and a `maxState(received_at)` — last seen by arrival. Read by `latest`, the
 * device list and the overview (`DeviceActivity.ts`), so their cost does not grow with history.
 *
 * Written through `latest_input`, a Null table (it stores nothing) whose materialized view folds
 * what is inserted into states: the store's insert sends it only the rows of a batch that can win,
 * per device the newest by (ts, msg_id) and the newest by arrival (`pick`, at most two of them),
 * so the view folds ~200 rows of a 3,000-reading batch from 200 devices instead of all 3,000, as
 * migration 3's view on `telemetry` did. That is not what costs: the table costs ~10 ms of CPU
 * per INSERT either way (a query, a part, its merges), which larger batches pay for
 * (bench/README.md, "Paying for latest and rollups").
 *
 * Duplicates are harmless: argMax and max give the same answer however often a row is counted,
 * so neither a redelivered batch, a replay under another token, nor a backfill run twice (or
 * overlapping the inserts) changes an answer; none needs a dedup token or FINAL. Two rows with the
 * same identity (tenant, device, ts, msg_id) are the same reading.
 *
 * The value is cast to an explicit tuple type so the state type does not depend on how a server
 * version types `tuple()` of LowCardinality columns. A column added to `telemetry` later reaches
 * `latest` only by a migration that changes this tuple.
 */
import { Effect } from "effect"
import { copyInsertSettings } from "./ClickHouseTables.js"
import type { MigrationSql } from "./Migrations.js"
import type { TelemetryRow } from "./TelemetryStore.js"

/** A reading as `device_latest` keeps it (LowCardinality dropped, names kept). */
export const tuple =
  "Tuple(msg_id String, device_class String, ts DateTime64(3, 'UTC'), received_at DateTime64(3, 'UTC'), " +
  "num Map(String, Float64), str Map(String, String), bool_fields Array(String), class_version UInt32)"

/** The states of `device_latest` from rows of `source` with `telemetry`'s columns. */
export const states = (source: string) =>
  `SELECT tenant_id, device_id,
     argMaxState(
       CAST(tuple(msg_id, device_class, ts, received_at, num, str, bool_fields, class_version) AS ${tuple}),
       tuple(ts, msg_id)
     ) AS latest,
     maxState(received_at) AS last_seen
   FROM ${source}
   GROUP BY tenant_id, device_id`

/**
 * `device_latest` as migration 7 creates it. `index_granularity = 256`: a read of one device
 * decodes the states of one granule, and migration 3's 8,192 argMax states (whole readings) made
 * `latest` cost ~13 ms in a 10,000-device tenant (bench/README.md, `bench/history`).
 */
const create = (db: string, name: string) =>
  `CREATE TABLE IF NOT EXISTS ${db}.${name} (
    tenant_id LowCardinality(String),
    device_id String,
    latest AggregateFunction(argMax, ${tuple}, Tuple(DateTime64(3, 'UTC'), String)),
    last_seen AggregateFunction(max, DateTime64(3, 'UTC'))
  )
  ENGINE = AggregatingMergeTree
  PARTITION BY tenant_id
  ORDER BY (tenant_id, device_id)
  SETTINGS index_granularity = ${granularity}`

export const granularity = 256

/** The Null table the store inserts the winning rows into, and its view into `device_latest`. */
const input = (db: string) => [
  `CREATE TABLE IF NOT EXISTS ${db}.latest_input (
    tenant_id LowCardinality(String),
    device_id String,
    device_class LowCardinality(String),
    msg_id String,
    ts DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    num Map(LowCardinality(String), Float64),
    str Map(LowCardinality(String), String),
    bool_fields Array(LowCardinality(String)),
    class_version UInt32 DEFAULT 0
  )
  ENGINE = Null`,
  `CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.latest_input_mv TO ${db}.device_latest AS
   ${states(`${db}.latest_input`)}`,
]

/**
 * Adds the states of every stored reading (`telemetry`, no FINAL: duplicates change nothing), for
 * readings stored without going through `latest_input`: a copy into a server, generated data.
 */
export const backfill = (db: string) =>
  `INSERT INTO ${db}.device_latest (tenant_id, device_id, latest, last_seen)
   ${states(`${db}.telemetry`)}
   SETTINGS ${copyInsertSettings}`

/**
 * Migration 7's program, re-runnable from any stop by the state it finds: `device_latest` is
 * rebuilt with `index_granularity = 256` (a table's granularity cannot change in place: new
 * table, copy the states, `EXCHANGE TABLES`, drop the old one), migration 3's view on `telemetry`
 * is dropped, and `latest_input` with its view takes over. The view is created after the swap, so
 * it writes to the new table. The copy needs no care for duplicates (see the header); a reading
 * stored by ANOTHER process between the old view's drop and the new view reaches neither (the
 * device's latest lags until its next reading), so a server migrates with its processors stopped.
 */
export const migrate = (sql: MigrationSql, db: string) =>
  Effect.gen(function* () {
    const spare = "device_latest_regranulate"
    const createQuery = (name: string) =>
      Effect.map(
        sql.query<{ create_table_query: string }>(
          "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {name:String}",
          { db, name },
        ),
        (rows) => rows[0]?.create_table_query,
      )
    yield* sql.command(`DROP VIEW IF EXISTS ${db}.device_latest_mv`)
    const current = yield* createQuery("device_latest")
    if (current === undefined) return yield* sql.fail(`table ${db}.device_latest does not exist`)
    if (/index_granularity = (\d+)/.exec(current)?.[1] !== String(granularity)) {
      // A spare left by a run stopped before its swap holds a partial copy: start it over.
      yield* sql.command(`DROP TABLE IF EXISTS ${db}.${spare} SYNC`)
      yield* sql.command(create(db, spare))
      yield* sql.command(
        `INSERT INTO ${db}.${spare} SELECT tenant_id, device_id, latest, last_seen FROM ${db}.device_latest
         SETTINGS ${copyInsertSettings}`,
      )
      yield* sql.command(`EXCHANGE TABLES ${db}.device_latest AND ${db}.${spare}`)
    }
    yield* sql.command(`DROP TABLE IF EXISTS ${db}.${spare} SYNC`)
    for (const statement of input(db)) yield* sql.command(statement)
  })

/** Orders two rows as argMax's key tuple(ts, msg_id) does: msg_id by its UTF-8 bytes, as ClickHouse. */
const newer = (a: TelemetryRow, b: TelemetryRow) => {
  const ta = Math.round(a.ts)
  const tb = Math.round(b.ts)
  if (ta !== tb) return ta > tb
  return a.msgId !== b.msgId && Buffer.compare(Buffer.from(a.msgId), Buffer.from(b.msgId)) > 0
}

/**
 * The rows of `rows` that can change a device's state: per (tenant, device) the newest by (ts,
 * msg_id) and the newest by arrival (one row when they are the same), in the order devices first
 * appear. argMax and max over them equal argMax and max over all of `rows`.
 */
export const pick = (rows: ReadonlyArray<TelemetryRow>): Array<TelemetryRow> => {
  const byDevice = new Map<string, { latest: TelemetryRow; arrived: TelemetryRow }>()
  for (const row of rows) {
    // \u0000 cannot occur in a tenant id (an identifier); a device id may hold anything after it.
    const key = `${row.tenantId}\u0000${row.deviceId}`
    const seen = byDevice.get(key)
    if (seen === undefined) {
      byDevice.set(key, { latest: row, arrived: row })
      continue
    }
    if (newer(row, seen.latest)) seen.latest = row
    if (Math.round(row.receivedAt) > Math.round(seen.arrived.receivedAt)) seen.arrived = row
  }
  const out: Array<TelemetryRow> = []
  for (const { latest, arrived } of byDevice.values()) {
    out.push(latest)
    if (arrived !== latest) out.push(arrived)
  }
  return out
}
