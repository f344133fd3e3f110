/**
 * Migration 4's program: a table moved to another partition key. ClickHouse cannot change a
 * partition key in place, so the rows are copied into a new table, the two are swapped with
 * `EXCHANGE TABLES` (atomic in an Atomic database, chDB's and a server's default) and the old one
 * is dropped. Materialized views select from their source by name, so `device_latest_mv` reads
 * the new `telemetry` after the swap (tested in test/storage/migrations.test.ts).
 *
 * Re-runnable from any stop, by the state it finds (the partition key in system.tables, and
 * whether `<table>_repartition` exists):
 * - old key: (re)build `<table>_repartition` from scratch, copy, swap, catch up, drop;
 * - new key and `<table>_repartition` left over (stopped after the swap): copy all of it again,
 *   since what reached it after the copy is unknown, then drop it;
 * - new key alone: done.
 * Copies are not deduplicated (`insert_deduplicate = 0`: a block of the copy is not a redelivery)
 * and may span any number of partitions. A row copied twice is a duplicate of the same identity,
 * which FINAL reads once and the ReplacingMergeTree merges away; in `device_latest` a state added
 * twice changes no answer (migration 3).
 *
 * Rows inserted by another process during the copy: the copy takes the parts active when it
 * starts, and after the swap the parts of the old table that were not among them are copied over
 * too. What still escapes is an insert into the old table that commits after that catch-up (it
 * began before the swap): with a ClickHouse server, migrate with `sluice migrate` while the
 * processors are stopped (the stream holds the data meanwhile). The embedded store migrates
 * before its own process inserts anything, and no other process opens its chDB.
 */
import { Effect } from "effect"
import { copyInsertSettings } from "./ClickHouseTables.js"
import type { MigrationSql } from "./Migrations.js"

/** A table's new layout: its columns (for the copies) and its CREATE under another name. */
export interface Layout {
  readonly table: string
  /** As `system.tables.partition_key` shows the new key. */
  readonly partitionKey: string
  readonly columns: ReadonlyArray<string>
  readonly create: (database: string, name: string) => string
}

/** `telemetry` of migrations 1 and 2, partitioned by (tenant, month of device time). */
export const telemetry = (dedupWindow: number): Layout => ({
  table: "telemetry",
  partitionKey: "(tenant_id, toYYYYMM(ts))",
  columns: [
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
  ],
  create: (db, name) =>
    `CREATE TABLE ${db}.${name} (
      tenant_id LowCardinality(String),
      device_id String,
      device_class LowCardinality(String),
      msg_id String,
      ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
      received_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
      num Map(LowCardinality(String), Float64),
      str Map(LowCardinality(String), String),
      bool_fields Array(LowCardinality(String)),
      class_version UInt32 DEFAULT 0
    )
    ENGINE = ReplacingMergeTree
    PARTITION BY (tenant_id, toYYYYMM(ts))
    ORDER BY (tenant_id, device_id, ts, msg_id)
    SETTINGS non_replicated_deduplication_window = ${dedupWindow}`,
})

/** `dead_letters` of migration 1, partitioned by (tenant, month of arrival). */
export const deadLetters = (dedupWindow: number): Layout => ({
  table: "dead_letters",
  partitionKey: "(tenant_id, toYYYYMM(received_at))",
  columns: ["tenant_id", "device_id", "received_at", "shard_id", "sequence_number", "reason", "raw"],
  create: (db, name) =>
    `CREATE TABLE ${db}.${name} (
      tenant_id LowCardinality(String),
      device_id String,
      received_at DateTime64(3, 'UTC'),
      shard_id LowCardinality(String),
      sequence_number String,
      reason String,
      raw String CODEC(ZSTD(3))
    )
    ENGINE = ReplacingMergeTree
    PARTITION BY (tenant_id, toYYYYMM(received_at))
    ORDER BY (tenant_id, received_at, shard_id, sequence_number)
    SETTINGS non_replicated_deduplication_window = ${dedupWindow}`,
})

const copySettings = `SETTINGS ${copyInsertSettings}`

/** Brings `layout.table` to its new partition key from whatever state a previous run left. */
export const repartition = (sql: MigrationSql, db: string, layout: Layout) => {
  const { table } = layout
  const spare = `${table}_repartition`
  const columns = layout.columns.join(", ")
  const copy = (from: string, to: string, where: string, params?: Record<string, unknown>) =>
    sql.command(
      `INSERT INTO ${db}.${to} (${columns}) SELECT ${columns} FROM ${db}.${from} ${where} ${copySettings}`,
      params,
    )
  const keyOf = (name: string) =>
    sql.query<{ partition_key: string }>(
      "SELECT partition_key FROM system.tables WHERE database = {db:String} AND name = {name:String}",
      { db, name },
    )
  const activeParts = Effect.map(
    sql.query<{ name: string }>(
      "SELECT name FROM system.parts WHERE database = {db:String} AND table = {table:String} AND active",
      { db, table },
    ),
    (rows) => rows.map((r) => r.name),
  )
  return Effect.gen(function* () {
    const [current] = yield* keyOf(table)
    if (current === undefined) return yield* sql.fail(`table ${db}.${table} does not exist`)
    if (current.partition_key !== layout.partitionKey) {
      // A spare left by a run stopped before its swap holds a partial copy: start it over.
      yield* sql.command(`DROP TABLE IF EXISTS ${db}.${spare} SYNC`)
      yield* sql.command(layout.create(db, spare))
      const copied = yield* activeParts
      if (copied.length > 0)
        yield* copy(table, spare, "WHERE _part IN {parts:Array(String)}", { parts: copied })
      yield* sql.command(`EXCHANGE TABLES ${db}.${table} AND ${db}.${spare}`)
      // What other processes inserted into the old table during the copy (see the header).
      yield* copy(spare, table, "WHERE _part NOT IN {parts:Array(String)}", { parts: copied })
    } else if ((yield* keyOf(spare)).length > 0) {
      yield* copy(spare, table, "")
    }
    yield* sql.command(`DROP TABLE IF EXISTS ${db}.${spare} SYNC`)
  })
}
