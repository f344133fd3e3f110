/**
 * The TelemetryStore on ClickHouse through `@clickhouse/client`: a server over HTTP, or chDB
 * in-process through `chdb/connection` (the embedded default). Same SQL on both.
 *
 * Exactly-once on at-least-once delivery, in two layers: each insert carries the caller's
 * deterministic `insert_deduplication_token`, so a retried batch is dropped by ClickHouse; and
 * every read of a row goes through FINAL, so a duplicate that slipped past the token (a replay
 * cut into different batches, or older than the dedup window) is still counted once.
 *
 * No value from a caller is ever spliced into SQL: tenants, devices, times, limits and even field
 * names are `{name:Type}` query parameters (a field is `num[{f0:String}]`); the only name in SQL
 * text is the configured database, validated as an identifier.
 *
 * chDB quirks, all measured with chdb 3.4 (ClickHouse 26.7):
 * - One data directory per PROCESS. A second store on the SAME path opens its own session on the
 *   shared engine: both see the same data, and closing one leaves the other working. A store on
 *   a DIFFERENT path while one is open fails with StorageUnavailable("open", "chdb: only one active
 *   data directory per process…"), so tests run one directory per test file (vitest's forks pool
 *   gives each file its own process) and isolate tests by database.
 * - `clickhouse_settings` become `SET k = v; <query>` on the session's connection and stay set
 *   after the call. Every insert here passes its own token, and reads put their settings in the
 *   SQL, so a leftover token never applies to anything else. Don't insert through this client
 *   without one.
 * - `client.query` buffers the whole result in memory; pages are capped at `maxPageSize`.
 * - ClickHouse does not fsync inserted parts by default; the store turns it on (`fsync`) so an
 *   acknowledged insert survives power loss like the stream's records, for ~3 ms per insert.
 */
import { mkdirSync } from "node:fs"
import { type ClickHouseClient, createClient } from "@clickhouse/client"
import { createChdbConnection } from "chdb/connection"
import { Effect, Layer, Option, Redacted, Schema } from "effect"
import * as Aggregates from "./Aggregates.js"
import {
  deadLetterColumns,
  decodeRow,
  encodeDeadLetter,
  encodeRow,
  StoredDeadLetters,
  StoredRows,
  settings,
  storedRowSelect,
  telemetryColumns,
} from "./ClickHouseTables.js"
import * as DeviceActivity from "./DeviceActivity.js"
import * as HistoryCursor from "./HistoryCursor.js"
import * as Latest from "./Latest.js"
import * as Migrations from "./Migrations.js"
import * as Retention from "./Retention.js"
import * as Rollups from "./Rollups.js"
import * as StorageConfig from "./StorageConfig.js"
import {
  type DeadLetterFilter,
  InvalidQuery,
  maxPageSize,
  StorageUnavailable,
  TelemetryStore,
  type TelemetryStoreApi,
  type TimeRange,
} from "./TelemetryStore.js"

const unavailable = (operation: string) => (cause: unknown) =>
  new StorageUnavailable({
    operation,
    reason: (cause instanceof Error ? cause.message : String(cause)).slice(0, 2000),
  })

// Duplicates of a row share its tenant, hence its partition: FINAL need not merge across them.
const finalSettings =
  "SETTINGS do_not_merge_across_partitions_select_final = 1, output_format_json_quote_denormals = 1"

// Every stored time is a safe integer of ms (the JS side cannot hold others), so clamping a bound
// to that span changes no answer; ceil keeps "ts >= from" and "ts < to" exact for fractions.
const clampTime = (ms: number) =>
  Math.min(Math.max(Math.ceil(ms), Number.MIN_SAFE_INTEGER), Number.MAX_SAFE_INTEGER)

/** The bounds of a `TimeRange` as whole milliseconds ClickHouse can hold, or InvalidQuery. */
const timeBounds = (range: TimeRange) =>
  Number.isNaN(range.from) || Number.isNaN(range.to)
    ? Effect.fail(new InvalidQuery({ reason: "the time range must be numbers (epoch ms)" }))
    : Effect.succeed({ from: clampTime(range.from), to: clampTime(range.to) })

const pageLimit = (limit: number) =>
  Number.isInteger(limit) && limit >= 1 && limit <= maxPageSize
    ? Effect.succeed(limit)
    : Effect.fail(new InvalidQuery({ reason: `limit must be an integer from 1 to ${maxPageSize}` }))

type ClientConnection = NonNullable<NonNullable<Parameters<typeof createClient>[0]>["connection"]>

/** A client of `target`: chDB in this process, or a server over HTTP(S). */
export const openClient = (target: StorageConfig.ClickHouseTarget): ClickHouseClient => {
  if (target._tag === "Embedded") {
    mkdirSync(target.path, { recursive: true })
    // chdb types its connection against @clickhouse/client-common, which @clickhouse/client
    // 1.23 bundles a private copy of: the same interface, nominally different (a private field).
    const connection = createChdbConnection({ path: target.path }) as unknown as ClientConnection
    return createClient({ connection })
  }
  return createClient({
    url: target.url,
    application: "sluice",
    ...(target.user === undefined ? {} : { username: target.user }),
    ...(target.password === undefined ? {} : { password: Redacted.value(target.password) }),
  })
}

/**
 * Opens the store: applies the schema migrations it is missing (creating the database and tables
 * on a new installation) and the configured settings; the scope closes the client.
 */
export const make = (config: StorageConfig.ClickHouseConfig) =>
  Effect.gen(function* () {
    const db = config.database
    if (!StorageConfig.databaseNamePattern.test(db)) {
      return yield* new StorageUnavailable({ operation: "open", reason: `invalid database name ${db}` })
    }
    const client = yield* Effect.acquireRelease(
      Effect.try({ try: () => openClient(config.target), catch: unavailable("open") }),
      (client) =>
        Effect.tryPromise(() => client.close()).pipe(
          Effect.catchAll((e) => Effect.logWarning("closing the ClickHouse client failed", e)),
        ),
    )
    // The schema: the missing migrations, in order; a failing one stops the start (MigrationFailed).
    yield* Migrations.migrate(client, db)
    for (const statement of settings(db, config.fsync)) {
      yield* Effect.tryPromise({
        try: (signal) => client.command({ query: statement, abort_signal: signal }),
        catch: unavailable("configure"),
      })
    }

    const select = <A, I>(
      operation: string,
      schema: Schema.Schema<A, I>,
      query: string,
      params: Record<string, unknown>,
    ) =>
      Effect.tryPromise({
        try: async (signal) => {
          const result = await client.query({
            query,
            query_params: params,
            format: "JSONEachRow",
            abort_signal: signal,
          })
          return result.json<unknown>()
        },
        catch: unavailable(operation),
      }).pipe(
        Effect.flatMap(Schema.decodeUnknown(schema)),
        Effect.catchTag("ParseError", (e) =>
          Effect.fail(unavailable(operation)(`unexpected result: ${e.message}`)),
        ),
      )

    // Rows as JSON arrays in `columns` order (JSONCompactEachRow): ClickHouse parses no keys, ~1
    // µs of CPU less per stored reading than JSONEachRow (bench/README.md, "Paying for latest and rollups").
    const insertInto = <Column extends string>(
      operation: string,
      table: string,
      columns: ReadonlyArray<Column>,
      values: ReadonlyArray<Readonly<Record<Column, unknown>>>,
      dedupToken: string,
    ) =>
      values.length === 0
        ? Effect.void
        : Effect.tryPromise({
            try: (signal) =>
              client.insert({
                table: `${db}.${table}`,
                columns: [...columns] as Array<string> as [string, ...Array<string>],
                values: values.map((row) => columns.map((column) => row[column])),
                format: "JSONCompactEachRow",
                clickhouse_settings: {
                  insert_deduplication_token: dedupToken,
                  // A part per (tenant, month): past the default 100, a batch of readings with
                  // far-apart device clocks would be refused on every retry, stalling its shard.
                  max_partitions_per_insert_block: "0",
                },
                abort_signal: signal,
              }),
            catch: unavailable(operation),
          })

    const insert = Effect.fn("TelemetryStore.insert")(function* (
      rows: Parameters<TelemetryStoreApi["insert"]>[0],
      dedupToken: string,
    ) {
      yield* Effect.annotateCurrentSpan({ rows: rows.length })
      yield* insertInto("insert", "telemetry", telemetryColumns, rows.map(encodeRow), dedupToken)
      // Each device's rows that can change its latest reading or last seen (Latest.ts): states
      // merge idempotently, so a retry adds nothing and needs no token of its own to be right.
      yield* insertInto(
        "insert",
        "latest_input",
        telemetryColumns,
        Latest.pick(rows).map(encodeRow),
        `${dedupToken}/latest`,
      )
      // The batch's rollup rows, after its readings and under a token of its own, so a retry after
      // a failure between the two stores the rollup once and the readings once (Rollups.ts).
      yield* insertInto(
        "insert",
        "telemetry_rollup",
        Rollups.columns,
        Rollups.fold(rows),
        `${dedupToken}/rollup`,
      )
    })

    const insertDeadLetters = Effect.fn("TelemetryStore.insertDeadLetters")(function* (
      rows: Parameters<TelemetryStoreApi["insertDeadLetters"]>[0],
      dedupToken: string,
    ) {
      yield* Effect.annotateCurrentSpan({ rows: rows.length })
      yield* insertInto(
        "insertDeadLetters",
        "dead_letters",
        deadLetterColumns,
        rows.map(encodeDeadLetter),
        dedupToken,
      )
    })

    const history = Effect.fn("TelemetryStore.history")(function* (
      tenantId: string,
      deviceId: string,
      range: TimeRange,
      page: Parameters<TelemetryStoreApi["history"]>[3],
    ) {
      yield* Effect.annotateCurrentSpan({ tenant: tenantId, device: deviceId })
      const limit = yield* pageLimit(page.limit)
      const bounds = yield* timeBounds(range)
      const after = page.cursor === undefined ? undefined : yield* HistoryCursor.decode(page.cursor)
      // One more than the page tells whether there is a next page without a count query.
      const rows = yield* select(
        "history",
        StoredRows,
        `SELECT ${storedRowSelect} FROM ${db}.telemetry FINAL
         WHERE tenant_id = {tenant:String} AND device_id = {device:String}
           AND ts >= fromUnixTimestamp64Milli({from:Int64}, 'UTC')
           AND ts < fromUnixTimestamp64Milli({to:Int64}, 'UTC')
           ${
             // The first conjunct alone is what the primary index can use.
             after === undefined
               ? ""
               : `AND ts >= fromUnixTimestamp64Milli({after_ts:Int64}, 'UTC')
                  AND (ts > fromUnixTimestamp64Milli({after_ts:Int64}, 'UTC') OR msg_id > {after_msg:String})`
           }
         ORDER BY ts, msg_id
         LIMIT {limit:UInt32}
         ${finalSettings}`,
        {
          tenant: tenantId,
          device: deviceId,
          ...bounds,
          limit: limit + 1,
          ...(after === undefined ? {} : { after_ts: after.ts, after_msg: after.msgId }),
        },
      )
      const pageRows = rows.slice(0, limit).map((row) => decodeRow(tenantId, deviceId, row))
      const last = pageRows.at(-1)
      return rows.length > limit && last !== undefined
        ? { rows: pageRows, nextCursor: HistoryCursor.encode({ ts: last.ts, msgId: last.msgId }) }
        : { rows: pageRows }
    })

    // The SQL (raw, or a rollup with raw edges) is `Aggregates.plan`'s; every path answers as raw.
    const aggregate = Effect.fn("TelemetryStore.aggregate")(function* (
      tenantId: string,
      deviceId: string,
      range: TimeRange,
      query: Parameters<TelemetryStoreApi["aggregate"]>[3],
    ) {
      yield* Effect.annotateCurrentSpan({ tenant: tenantId, device: deviceId })
      const bounds = yield* timeBounds(range)
      let plan = yield* Aggregates.plan(db, tenantId, deviceId, bounds, query)
      // A range of few stored rows is cheaper raw than through a rollup (`rawRowsBelow`).
      if (plan.source !== "raw" && (query.source ?? "auto") === "auto") {
        const rows = yield* Aggregates.storedRows(select, db, tenantId, deviceId, bounds)
        if (rows < Aggregates.rawRowsBelow) {
          plan = yield* Aggregates.plan(db, tenantId, deviceId, bounds, { ...query, source: "raw" })
        }
      }
      yield* Effect.annotateCurrentSpan({ source: plan.source })
      return yield* Aggregates.run(select, plan)
    })

    // `latest` and the activity reads (`DeviceActivity.ts`) read `device_latest` (Latest.ts): per
    // device, argMax states of the reading by (ts, msg_id) and max states of received_at, kept as
    // rows are stored (`insert`), so their cost does not grow with history.
    // Duplicates cannot change a max, so none needs FINAL. GROUP BY merges the states of a device
    // not yet merged on disk.
    const latest = Effect.fn("TelemetryStore.latest")(function* (tenantId: string, deviceId: string) {
      yield* Effect.annotateCurrentSpan({ tenant: tenantId, device: deviceId })
      const rows = yield* select(
        "latest",
        StoredRows,
        `SELECT r.msg_id AS msg_id, r.device_class AS device_class,
                toUnixTimestamp64Milli(r.ts) AS ts_ms, toUnixTimestamp64Milli(r.received_at) AS received_ms,
                r.num AS num, r.str AS str, r.bool_fields AS bool_fields, r.class_version AS class_version
         FROM (
           SELECT argMaxMerge(latest) AS r
           FROM ${db}.device_latest
           WHERE tenant_id = {tenant:String} AND device_id = {device:String}
           GROUP BY device_id
         )
         SETTINGS output_format_json_quote_denormals = 1`,
        { tenant: tenantId, device: deviceId },
      )
      return Option.map(Option.fromNullable(rows[0]), (row) => decodeRow(tenantId, deviceId, row))
    })

    const deadLetters = Effect.fn("TelemetryStore.deadLetters")(function* (
      tenantId: string,
      limit: number,
      filter: DeadLetterFilter = {},
    ) {
      yield* Effect.annotateCurrentSpan({ tenant: tenantId })
      const n = yield* pageLimit(limit)
      const { after, deviceId, reason } = filter
      if (
        after !== undefined &&
        !(Number.isSafeInteger(after.receivedAt) && /^\d+$/.test(after.sequenceNumber))
      ) {
        return yield* new InvalidQuery({
          reason: "after: receivedAt must be an integer, sequenceNumber decimal digits",
        })
      }
      // Sequence numbers are decimal strings: longer is larger, then lexicographic. The keyset is
      // the whole sort tuple; `received_at <=` alone is what the primary key can prune by.
      const conditions = [
        ...(after === undefined
          ? []
          : [
              "received_at <= fromUnixTimestamp64Milli({at:Int64}, 'UTC')",
              `(received_at, shard_id, length(sequence_number), sequence_number) <
               (fromUnixTimestamp64Milli({at:Int64}, 'UTC'), {shard:String}, {seq_len:UInt64}, {seq:String})`,
            ]),
        ...(deviceId === undefined ? [] : ["device_id = {device:String}"]),
        ...(reason === undefined ? [] : ["positionCaseInsensitiveUTF8(reason, {reason:String}) > 0"]),
      ]
      const rows = yield* select(
        "deadLetters",
        StoredDeadLetters,
        `SELECT device_id, toUnixTimestamp64Milli(received_at) AS received_ms, shard_id, sequence_number, reason, raw
         FROM ${db}.dead_letters FINAL
         WHERE tenant_id = {tenant:String} ${conditions.map((c) => `AND ${c}`).join(" ")}
         ORDER BY received_at DESC, shard_id DESC, length(sequence_number) DESC, sequence_number DESC
         LIMIT {limit:UInt32}
         ${finalSettings}`,
        {
          tenant: tenantId,
          limit: n,
          ...(after === undefined
            ? {}
            : {
                at: after.receivedAt,
                shard: after.shardId,
                seq_len: after.sequenceNumber.length,
                seq: after.sequenceNumber,
              }),
          ...(deviceId === undefined ? {} : { device: deviceId }),
          ...(reason === undefined ? {} : { reason }),
        },
      )
      return rows.map((row) => ({
        tenantId,
        deviceId: row.device_id,
        receivedAt: row.received_ms,
        shardId: row.shard_id,
        sequenceNumber: row.sequence_number,
        reason: row.reason,
        raw: row.raw,
      }))
    })

    const { activity, lastSeen, seenSince, countSeenSince } = DeviceActivity.make(db, select)

    return TelemetryStore.of({
      insert,
      insertDeadLetters,
      history,
      aggregate,
      latest,
      activity,
      lastSeen,
      seenSince,
      countSeenSince,
      deadLetters,
      ...Retention.make(client, db),
    })
  })

/** The store configured from the environment (SLUICE_CLICKHOUSE_*, SLUICE_DATA_DIR). */
export const layer = Layer.scoped(TelemetryStore, Effect.flatMap(StorageConfig.clickhouse, make))

/** The store with explicit settings (tests, benchmarks). */
export const layerWith = (config: StorageConfig.ClickHouseConfig) =>
  Layer.scoped(TelemetryStore, make(config))

/** Embedded chDB at `path` with database `database` (default `sluice`), for `layerWith`. */
export const embedded = (path: string, database = "sluice"): StorageConfig.ClickHouseConfig => ({
  target: { _tag: "Embedded", path },
  database,
  fsync: true,
})
