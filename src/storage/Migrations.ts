/**
 * The store's schema as an ordered, recorded list of migrations. At every start (`make`) and by
 * `sluice migrate`, the ids recorded in `<db>.schema_migrations` are read and the missing
 * migrations applied in id order, each statement in turn and then the migration's record, so an
 * existing data directory or server upgrades in place. A migration is history: once shipped it is
 * never edited; a schema change is a new migration at the end of the list.
 *
 * Rules for every migration:
 * - ClickHouse DDL is not transactional: a migration stopped half way (a failed statement, a
 *   killed process) leaves the statements before it applied and no record. The next start runs
 *   the whole migration again, so EVERY statement must be idempotent — `IF NOT EXISTS` /
 *   `IF EXISTS` on every CREATE, DROP, ADD/DROP COLUMN, ADD/DROP INDEX… — and re-running the
 *   applied ones changes nothing. A change that cannot be written so is a `program` that checks
 *   the state before each step (migration 4: copy, EXCHANGE TABLES, drop).
 * - A program is not safe against a concurrent run of itself (migration 4 could swap twice): on a
 *   server, upgrade across such a migration with `sluice migrate` alone, processors stopped.
 * - Concurrent starts (the supervisor's processor and a serving process, several processors on
 *   one server) may migrate at the same time. Both run the same idempotent statements and both
 *   write the record: `schema_migrations` may then hold an id twice, which is harmless, because
 *   it is only ever read as a set (`SELECT DISTINCT id`).
 * - Settings that follow configuration (fsync) are not migrations: they are re-applied on every
 *   start (`ClickHouseTables.settings`), so a changed setting reaches existing tables.
 * - A database recording an id this code does not know was migrated by a newer Sluice: the start
 *   is refused rather than run on a schema this code does not understand.
 *
 * Migration 1 is the schema as it was before the list existed, minus `class_version`, with
 * `IF NOT EXISTS` everywhere: an installation that predates `schema_migrations` has all of it,
 * so it records 1 without changing anything, then gets 2 (`ADD COLUMN IF NOT EXISTS`).
 */
import type { ClickHouseClient } from "@clickhouse/client"
import { Effect, Schema } from "effect"
import * as Latest from "./Latest.js"
import * as MigrationLock from "./MigrationLock.js"
import * as Repartition from "./Repartition.js"
import * as Rollups from "./Rollups.js"
import { StorageUnavailable } from "./TelemetryStore.js"

export interface Migration {
  /** Position in the list: 1, 2, 3…, never reused. */
  readonly id: number
  /** What it does, for the log and the record. */
  readonly name: string
  /** The statements, given the database name; each idempotent (see the header). */
  readonly statements: (database: string) => ReadonlyArray<string>
  /**
   * Run after `statements`: a change no idempotent statement can make (EXCHANGE TABLES swaps
   * back when run twice). It reads the state it finds and does only what is still missing, so a
   * re-run after a stop at any point completes it: the header's rule, kept by a program.
   */
  readonly program?: (sql: MigrationSql, database: string) => Effect.Effect<void, MigrationFailed>
}

/** What a migration's `program` runs with; a failure is MigrationFailed naming the statement. */
export interface MigrationSql {
  readonly command: (
    statement: string,
    params?: Record<string, unknown>,
  ) => Effect.Effect<void, MigrationFailed>
  readonly query: <A>(
    statement: string,
    params?: Record<string, unknown>,
  ) => Effect.Effect<ReadonlyArray<A>, MigrationFailed>
  /** Stops the migration with `reason`, no statement. */
  readonly fail: (reason: string) => Effect.Effect<never, MigrationFailed>
}

/**
 * Recent inserted blocks whose tokens ClickHouse remembers to drop a redelivery. A block is one
 * part, i.e. one tenant of one insert, so this covers the last 10,000 (tenant, batch) pairs. A
 * redelivery older than that lands twice on disk, and the FINAL in every read still counts it once.
 * Changing it is a migration (`MODIFY SETTING`), not an edit of migration 1.
 */
const dedupWindow = 10_000

/** Every migration, in order. Append only. */
export const migrations: ReadonlyArray<Migration> = [
  {
    id: 1,
    name: "create telemetry and dead_letters",
    statements: (db) => [
      `CREATE DATABASE IF NOT EXISTS ${db}`,
      // The sort key is the row's identity: a redelivered row has the same tenant, device, device
      // time and msgId, so ReplacingMergeTree (and FINAL at read time) keeps one. Partitioning:
      // see ClickHouseTables.
      `CREATE TABLE IF NOT EXISTS ${db}.telemetry (
        tenant_id LowCardinality(String),
        device_id String,
        device_class LowCardinality(String),
        msg_id String,
        ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
        received_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
        num Map(LowCardinality(String), Float64),
        str Map(LowCardinality(String), String),
        bool_fields Array(LowCardinality(String))
      )
      ENGINE = ReplacingMergeTree
      PARTITION BY tenant_id
      ORDER BY (tenant_id, device_id, ts, msg_id)
      SETTINGS non_replicated_deduplication_window = ${dedupWindow}`,
      // One stream record gives at most one dead letter, so its stream position is its identity.
      // received_at leads the key because the only read is "a tenant's newest".
      `CREATE TABLE IF NOT EXISTS ${db}.dead_letters (
        tenant_id LowCardinality(String),
        device_id String,
        received_at DateTime64(3, 'UTC'),
        shard_id LowCardinality(String),
        sequence_number String,
        reason String,
        raw String CODEC(ZSTD(3))
      )
      ENGINE = ReplacingMergeTree
      PARTITION BY tenant_id
      ORDER BY (tenant_id, received_at, shard_id, sequence_number)
      SETTINGS non_replicated_deduplication_window = ${dedupWindow}`,
    ],
  },
  {
    id: 2,
    name: "telemetry.class_version",
    // Rows stored before class versions were recorded read 0: not recorded.
    statements: (db) => [
      `ALTER TABLE ${db}.telemetry ADD COLUMN IF NOT EXISTS class_version UInt32 DEFAULT 0`,
    ],
  },
  {
    id: 3,
    name: "device_latest: latest reading and last seen per device",
    // The table of Latest.ts (what it holds; why duplicates, hence a backfill run twice or
    // overlapping the view, change no answer), fed by a view on every stored reading until
    // migration 7 rebuilt it in smaller granules, fed from each batch's newest rows.
    statements: (db) => [
      `CREATE TABLE IF NOT EXISTS ${db}.device_latest (
        tenant_id LowCardinality(String),
        device_id String,
        latest AggregateFunction(argMax, ${Latest.tuple}, Tuple(DateTime64(3, 'UTC'), String)),
        last_seen AggregateFunction(max, DateTime64(3, 'UTC'))
      )
      ENGINE = AggregatingMergeTree
      PARTITION BY tenant_id
      ORDER BY (tenant_id, device_id)`,
      // Created before the backfill, so a row inserted meanwhile is in one or both. The one gap: an
      // insert already running (by another process) when the view appears and committed after the
      // backfill read `telemetry` reaches neither: that device lags until it sends a newer reading.
      `CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.device_latest_mv TO ${db}.device_latest AS
       ${Latest.states(`${db}.telemetry`)}`,
      // The rows stored before the view existed. No FINAL: a duplicate changes no answer (above).
      // No partition limit: device_latest is partitioned by tenant (added after a store of more
      // than 100 tenants failed here; the statement is otherwise as first shipped).
      `INSERT INTO ${db}.device_latest (tenant_id, device_id, latest, last_seen) ${Latest.states(`${db}.telemetry`)}
       SETTINGS max_partitions_per_insert_block = 0`,
    ],
  },
  {
    id: 4,
    name: "telemetry and dead_letters partitioned by (tenant, month)",
    // So retention drops a tenant's old months whole instead of rewriting its data (Retention.ts;
    // the choice and its measurement: ClickHouseTables, bench/README.md "Retention"). A partition
    // key cannot change in place: each table is copied into a new one and swapped (Repartition.ts).
    statements: () => [],
    program: (sql, db) =>
      Effect.zipRight(
        Repartition.repartition(sql, db, Repartition.telemetry(dedupWindow)),
        Repartition.repartition(sql, db, Repartition.deadLetters(dedupWindow)),
      ),
  },
  {
    id: 5,
    name: "telemetry_rollup: per-minute and hourly rollups per device",
    // The table of Rollups.ts (what it holds, why it is exact); one table for both granularities,
    // a row per device and bucket rather than per field (two chained per-field tables cost ~5.5
    // µs of CPU per inserted row against ~3.5). PARTITION BY (tenant, month of the bucket) so
    // retention drops a tenant's old months whole; toYYYYMM of a DateTime64 is right over
    // 1900-2299. ORDER BY (tenant, device, granularity, bucket): "one device, one granularity, a
    // range of buckets" is one range of the key. `non_replicated_deduplication_window`: a
    // redelivered block is dropped here as its readings are in `telemetry`; without a window the
    // table keeps no tokens and counts it twice.
    //
    // Written by a view until migration 6 replaced it with the store's own insert. View, then
    // TRUNCATE, then the backfill from `telemetry FINAL`: whatever the view counted before the
    // truncation the backfill counts again, so a re-run of this migration leaves exactly the raw
    // answer. An insert by ANOTHER process meanwhile may be counted twice or not at all (reads
    // then answer from raw: Rollups.ts), so migrate a server once with ingest stopped.
    statements: (db) => [
      `CREATE TABLE IF NOT EXISTS ${db}.telemetry_rollup (
        tenant_id LowCardinality(String),
        device_id String,
        granularity UInt32,
        bucket Int64,
        readings SimpleAggregateFunction(sum, UInt64),
        value_count SimpleAggregateFunction(sumMap, Map(String, UInt64)),
        value_sum SimpleAggregateFunction(sumMap, Map(String, Float64)),
        value_min SimpleAggregateFunction(minMap, Map(String, Float64)),
        value_max SimpleAggregateFunction(maxMap, Map(String, Float64))
      )
      ENGINE = AggregatingMergeTree
      PARTITION BY (tenant_id, toYYYYMM(fromUnixTimestamp64Milli(bucket, 'UTC')))
      ORDER BY (tenant_id, device_id, granularity, bucket)
      SETTINGS non_replicated_deduplication_window = ${dedupWindow}`,
      `CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.telemetry_rollup_mv TO ${db}.telemetry_rollup AS
       ${Rollups.states(`${db}.telemetry`)}`,
    ],
    // The backfill empties the table first, so that a re-run (this migration interrupted)
    // recounts everything once instead of adding to what the view and the last run counted.
    program: (sql, db) => Effect.asVoid(Rollups.rebuild(sql, db)),
  },
  {
    id: 6,
    name: "telemetry_rollup written by the store's insert, not a view",
    // The store folds each batch into its rollup rows in JavaScript and inserts them under the
    // batch's token (Rollups.ts): an explicit dedup instead of the view's derived tokens, at the
    // same CPU (bench/README.md, "Paying for latest and rollups"). No recount: the view's rows were exact. A reading stored by an older Sluice after this point
    // reaches no rollup; reads notice the count mismatch and answer from raw until
    // `sluice migrate --rebuild-rollups` (so upgrade a server with its processors stopped).
    statements: (db) => [`DROP VIEW IF EXISTS ${db}.telemetry_rollup_mv`],
  },
  {
    id: 7,
    name: "device_latest in granules of 256, written from each batch's newest rows",
    // A read of one device decoded a whole 8,192-row granule of argMax states (~13 ms in a
    // 10,000-device tenant). The view on `telemetry` goes too: the store inserts per device only the rows that can win into the Null table
    // `latest_input`, whose view folds them into `device_latest` (Latest.ts, and its program).
    statements: () => [],
    program: Latest.migrate,
  },
]

/** A migration could not be applied, or the database is newer than this code: do not start. */
export class MigrationFailed extends Schema.TaggedError<MigrationFailed>()("MigrationFailed", {
  /** The migration that failed (absent when the database is newer than this code). */
  migration: Schema.optional(Schema.Struct({ id: Schema.Number, name: Schema.String })),
  /** The statement that failed. */
  statement: Schema.optional(Schema.String),
  reason: Schema.String,
}) {
  override get message() {
    return this.migration === undefined
      ? this.reason
      : `schema migration ${this.migration.id} (${this.migration.name}) failed, nothing recorded for it; ` +
          `fix the cause and start again (its statements are safe to re-run)\n` +
          `statement: ${this.statement ?? "(none)"}\nserver: ${this.reason}`
  }
}

export interface MigrateOptions {
  /** List the pending migrations; create and change nothing. */
  readonly dryRun?: boolean
  /** Tests only: another list than `migrations`. */
  readonly migrations?: ReadonlyArray<Migration>
}

export interface MigrateResult {
  /** The highest migration id recorded before this run (0: none). */
  readonly from: number
  /** The migrations applied by this run, in order (with `dryRun`: the ones it would apply). */
  readonly pending: ReadonlyArray<Migration>
}

const messageOf = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause)).slice(0, 2000)

const unavailable = (cause: unknown) =>
  new StorageUnavailable({ operation: "migrate", reason: messageOf(cause) })

/**
 * Brings `database` to the newest migration of the list: creates `schema_migrations` if missing,
 * refuses a database newer than the list, applies the missing migrations in order. Reaching the
 * server fails with StorageUnavailable("migrate"); a failing migration with MigrationFailed.
 */
export const migrate = (client: ClickHouseClient, database: string, options: MigrateOptions = {}) =>
  Effect.gen(function* () {
    const list = [...(options.migrations ?? migrations)].sort((a, b) => a.id - b.id)
    const table = `${database}.schema_migrations`
    const run = (query: string, params?: Record<string, unknown>) =>
      Effect.tryPromise({
        try: (signal) =>
          client.command({
            query,
            abort_signal: signal,
            ...(params === undefined ? {} : { query_params: params }),
          }),
        catch: (cause) => cause,
      })
    const rows = <A>(query: string, params: Record<string, unknown>) =>
      Effect.tryPromise({
        try: async (signal) => {
          const result = await client.query({
            query,
            query_params: params,
            format: "JSONEachRow",
            abort_signal: signal,
          })
          return result.json<A>()
        },
        catch: unavailable,
      })

    let exists = true
    if (options.dryRun === true) {
      const found = yield* rows<{ n: number | string }>(
        "SELECT count() AS n FROM system.tables WHERE database = {db:String} AND name = 'schema_migrations'",
        { db: database },
      )
      exists = Number(found[0]?.n ?? 0) > 0
    } else {
      yield* Effect.mapError(run(`CREATE DATABASE IF NOT EXISTS ${database}`), unavailable)
      yield* Effect.mapError(
        run(
          `CREATE TABLE IF NOT EXISTS ${table} (id UInt32, name String, applied_at DateTime64(3, 'UTC'))
           ENGINE = MergeTree ORDER BY id`,
        ),
        unavailable,
      )
    }
    // A set: concurrent starts may each have recorded the same migration (see the header).
    const applied = exists
      ? (yield* rows<{ id: number | string }>(`SELECT DISTINCT id FROM ${table} ORDER BY id`, {})).map((r) =>
          Number(r.id),
        )
      : []
    const known = new Set(list.map((m) => m.id))
    const newest = list.at(-1)?.id ?? 0
    const unknown = applied.filter((id) => !known.has(id))
    if (unknown.length > 0) {
      return yield* new MigrationFailed({
        reason:
          `the database ${database} is at schema ${Math.max(...unknown)}, newer than this Sluice ` +
          `(${newest}): upgrade Sluice`,
      })
    }
    const done = new Set(applied)
    const pending = list.filter((m) => !done.has(m.id))
    const result: MigrateResult = { from: applied.length === 0 ? 0 : Math.max(...applied), pending }
    if (options.dryRun === true) return result
    for (const migration of pending) {
      const failed = (statement: string) => (cause: unknown) =>
        new MigrationFailed({
          migration: { id: migration.id, name: migration.name },
          statement,
          reason: messageOf(cause),
        })
      for (const statement of migration.statements(database)) {
        yield* Effect.mapError(run(statement), failed(statement))
      }
      if (migration.program !== undefined) {
        const program = migration.program(
          {
            command: (statement, params) => Effect.mapError(run(statement, params), failed(statement)),
            query: <A>(statement: string, params?: Record<string, unknown>) =>
              Effect.tryPromise({
                try: async (signal) => {
                  const result = await client.query({
                    query: statement,
                    format: "JSONEachRow",
                    abort_signal: signal,
                    ...(params === undefined ? {} : { query_params: params }),
                  })
                  return result.json<A>()
                },
                catch: failed(statement),
              }),
            fail: (reason) =>
              Effect.fail(
                new MigrationFailed({ migration: { id: migration.id, name: migration.name }, reason }),
              ),
          },
          database,
        )
        yield* MigrationLock.withLock(
          {
            tryCommand: (statement) =>
              run(statement).pipe(
                Effect.as(true),
                // TABLE_ALREADY_EXISTS: another run holds the lock.
                Effect.catchIf(
                  (cause) => (cause as { code?: unknown } | undefined)?.code === "57",
                  () => Effect.succeed(false),
                ),
                Effect.mapError(failed(statement)),
              ),
            command: (statement) => Effect.mapError(run(statement), failed(statement)),
            comment: (name) =>
              Effect.map(
                rows<{ comment: string }>(
                  "SELECT comment FROM system.tables WHERE database = {db:String} AND name = {name:String}",
                  { db: database, name },
                ),
                (found) => found[0]?.comment,
              ).pipe(Effect.mapError((e) => failed("SELECT comment FROM system.tables")(e.reason))),
            fail: (reason) =>
              Effect.fail(
                new MigrationFailed({ migration: { id: migration.id, name: migration.name }, reason }),
              ),
          },
          database,
          program,
        )
      }
      const record = `INSERT INTO ${table} (id, name, applied_at) SELECT {id:UInt32}, {name:String}, now64(3)`
      yield* Effect.mapError(run(record, { id: migration.id, name: migration.name }), failed(record))
      yield* Effect.logInfo(`schema migration ${migration.id} applied: ${migration.name}`).pipe(
        Effect.annotateLogs({ database }),
      )
    }
    return result
  })
