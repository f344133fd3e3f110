/**
 * Schema migrations (src/storage/Migrations.ts): an installation made before the migrations
 * existed upgrades in place with every row read back; a database newer than the code, and a
 * failing migration, stop the start with the reason. On chDB (one data directory for the file,
 * a database per test) and, for the upgrade, on the ClickHouse HTTP peer.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { hostname, tmpdir } from "node:os"
import { join } from "node:path"
import { type ClickHouseClient, createClient } from "@clickhouse/client"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option } from "effect"
import { encodeDeadLetter, encodeRow } from "../../src/storage/ClickHouseTables.js"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import * as Migrations from "../../src/storage/Migrations.js"
import type { ClickHouseConfig } from "../../src/storage/StorageConfig.js"
import { type DeadLetter, type TelemetryRow, TelemetryStore } from "../../src/storage/TelemetryStore.js"
import { peerForFile } from "../support/clickhouseHttpPeer.js"
import { everyValueType, historyOf, reading, t0 } from "./fixtures.js"

const dataDir = mkdtempSync(join(tmpdir(), "sluice-migrations-"))
afterAll(() => rmSync(dataDir, { recursive: true, force: true }))

const peer = peerForFile()

const chdb = (database: string) => ClickHouseTelemetryStore.embedded(dataDir, database)
const server = (database: string): ClickHouseConfig => ({
  target: { _tag: "Server", url: peer().url, user: undefined, password: undefined },
  database,
  fsync: true,
})

/** A raw client of the config's ClickHouse, closed with the scope. */
const clientOf = (config: ClickHouseConfig) =>
  Effect.acquireRelease(
    Effect.sync(() => ClickHouseTelemetryStore.openClient(config.target)),
    (client) => Effect.promise(() => client.close()),
  )

const command = (client: ClickHouseClient, query: string) => Effect.promise(() => client.command({ query }))
const select = (client: ClickHouseClient, query: string) =>
  Effect.promise(async () =>
    (await client.query({ query, format: "JSONEachRow" })).json<Record<string, unknown>>(),
  )
const recorded = (client: ClickHouseClient, database: string) =>
  Effect.map(select(client, `SELECT id, name FROM ${database}.schema_migrations ORDER BY id`), (rows) =>
    rows.map((r) => [Number(r.id), r.name]),
  )

const byId = (id: number) => Migrations.migrations.find((m) => m.id === id)!
const allIds = Migrations.migrations.map((m) => m.id)
const newest = allIds.at(-1)!

const letters: ReadonlyArray<DeadLetter> = [
  {
    tenantId: "acme",
    deviceId: "d1",
    receivedAt: t0,
    shardId: "shardId-000000000001",
    sequenceNumber: "7",
    reason: "field t: expected number",
    raw: `{"t":"hot"}`,
  },
]

/**
 * The installation before migrations and class versions: migration 1's statements run by hand
 * (no schema_migrations), rows and dead letters inserted without class_version, then the store
 * opened on it: migration 2 is applied, 1 and 2 recorded, everything reads back identical.
 */
const upgradesAnOldInstallation = (config: ClickHouseConfig) =>
  Effect.gen(function* () {
    const db = config.database
    const client = yield* clientOf(config)
    for (const statement of byId(1).statements(db)) yield* command(client, statement)
    const rows = [
      reading(t0, { values: everyValueType }),
      reading(t0 + 1, { values: {} }),
      reading(t0 + 2, { deviceId: "d2", values: { t: 3 } }),
    ]
    yield* Effect.promise(() =>
      client.insert({
        table: `${db}.telemetry`,
        values: rows.map((row) => {
          const { class_version: _, ...old } = encodeRow(row)
          return old
        }),
        format: "JSONEachRow",
        clickhouse_settings: { insert_deduplication_token: "old-rows" },
      }),
    )
    yield* Effect.promise(() =>
      client.insert({
        table: `${db}.dead_letters`,
        values: letters.map(encodeDeadLetter),
        format: "JSONEachRow",
        clickhouse_settings: { insert_deduplication_token: "old-letters" },
      }),
    )
    expect(yield* select(client, `SHOW TABLES FROM ${db}`)).toEqual([
      { name: "dead_letters" },
      { name: "telemetry" },
    ])

    const versioned = reading(t0 + 5, { msgId: "new", classVersion: 4, values: { t: 9 } })
    yield* Effect.gen(function* () {
      const store = yield* TelemetryStore
      expect(yield* historyOf(store)).toEqual([rows[0], rows[1]])
      expect(yield* historyOf(store, "acme", "d2")).toEqual([rows[2]])
      expect((yield* historyOf(store)).some((r) => "classVersion" in r)).toBe(false)
      expect(yield* store.deadLetters("acme", 10)).toEqual(letters)
      yield* store.insert([versioned], "new-row")
      expect(yield* historyOf(store)).toEqual([rows[0], rows[1], versioned])
    }).pipe(Effect.provide(ClickHouseTelemetryStore.layerWith(config)))
    expect(yield* recorded(client, db)).toEqual(Migrations.migrations.map((m) => [m.id, m.name]))

    // Started again: nothing pending, nothing recorded twice, everything still there.
    yield* Effect.gen(function* () {
      const store = yield* TelemetryStore
      expect(yield* historyOf(store)).toEqual([rows[0], rows[1], versioned])
    }).pipe(Effect.provide(ClickHouseTelemetryStore.layerWith(config)))
    expect(yield* recorded(client, db)).toHaveLength(newest)
  })

describe("schema migrations on chDB", () => {
  it("are ordered by id, from 1, without gaps", () => {
    expect(Migrations.migrations.map((m) => m.id)).toEqual(
      Array.from({ length: Migrations.migrations.length }, (_, i) => i + 1),
    )
  })

  it.scoped("upgrade an installation older than the migrations, every row read back identical", () =>
    upgradesAnOldInstallation(chdb("old_schema")),
  )

  it.scoped("record today's schema (made by hand, class_version included) without changing it", () =>
    Effect.gen(function* () {
      const config = chdb("todays_schema")
      const client = yield* clientOf(config)
      for (const m of Migrations.migrations) {
        for (const statement of m.statements(config.database)) yield* command(client, statement)
      }
      const row = reading(t0, { classVersion: 2 })
      yield* Effect.gen(function* () {
        const store = yield* TelemetryStore
        yield* store.insert([row], "r")
        expect(yield* historyOf(store)).toEqual([row])
      }).pipe(Effect.provide(ClickHouseTelemetryStore.layerWith(config)))
      expect((yield* recorded(client, config.database)).map(([id]) => id)).toEqual(allIds)
    }),
  )

  it.scoped("refuse a database at a migration newer than this code, saying so", () =>
    Effect.gen(function* () {
      const config = chdb("from_the_future")
      yield* Effect.scoped(ClickHouseTelemetryStore.make(config))
      const client = yield* clientOf(config)
      yield* command(
        client,
        `INSERT INTO ${config.database}.schema_migrations (id, name, applied_at) VALUES (999, 'later', now64(3))`,
      )
      const result = yield* Effect.either(Effect.scoped(ClickHouseTelemetryStore.make(config)))
      expect(Either.isLeft(result) && result.left).toMatchObject({ _tag: "MigrationFailed" })
      expect(Either.isLeft(result) && result.left.message).toBe(
        `the database from_the_future is at schema 999, newer than this Sluice (${newest}): upgrade Sluice`,
      )
    }),
  )

  it.scoped("stop at a failing migration, naming it and its statement, and record nothing for it", () =>
    Effect.gen(function* () {
      const config = chdb("failing")
      const db = config.database
      const client = yield* clientOf(config)
      const broken: Migrations.Migration = {
        id: newest + 1,
        name: "broken on purpose",
        statements: (d) => [
          `ALTER TABLE ${d}.telemetry ADD COLUMN IF NOT EXISTS extra UInt8 DEFAULT 0`,
          `ALTER TABLE ${d}.no_such_table ADD COLUMN IF NOT EXISTS x UInt8`,
        ],
      }
      const result = yield* Effect.either(
        Migrations.migrate(client, db, { migrations: [...Migrations.migrations, broken] }),
      )
      const error = Either.isLeft(result) ? result.left : undefined
      expect(error).toMatchObject({
        _tag: "MigrationFailed",
        migration: { id: newest + 1, name: "broken on purpose" },
        statement: `ALTER TABLE ${db}.no_such_table ADD COLUMN IF NOT EXISTS x UInt8`,
      })
      expect(error?.message).toContain(`schema migration ${newest + 1} (broken on purpose) failed`)
      expect(error?.message).toContain(`statement: ALTER TABLE ${db}.no_such_table`)
      // The server's own words: "Could not find table: no_such_table" (chDB 3.4).
      expect(error?.message).toMatch(/\nserver: .*no_such_table/)
      expect((yield* recorded(client, db)).map(([id]) => id)).toEqual(allIds)

      // Fixed, it runs again from its first statement, which is idempotent, and is recorded.
      const fixed: Migrations.Migration = { ...broken, statements: (d) => broken.statements(d).slice(0, 1) }
      const again = yield* Migrations.migrate(client, db, { migrations: [...Migrations.migrations, fixed] })
      expect(again.pending.map((m) => m.id)).toEqual([newest + 1])
      expect((yield* recorded(client, db)).map(([id]) => id)).toEqual([...allIds, newest + 1])
    }),
  )

  it.scoped("list pending migrations with dryRun, creating nothing", () =>
    Effect.gen(function* () {
      const config = chdb("dry_run")
      const client = yield* clientOf(config)
      const planned = yield* Migrations.migrate(client, config.database, { dryRun: true })
      expect(planned).toMatchObject({ from: 0 })
      expect(planned.pending.map((m) => m.id)).toEqual(allIds)
      expect(yield* select(client, "SELECT name FROM system.databases WHERE name = 'dry_run'")).toEqual([])
      yield* Migrations.migrate(client, config.database)
      const after = yield* Migrations.migrate(client, config.database, { dryRun: true })
      expect(after).toEqual({ from: newest, pending: [] })
    }),
  )

  it.scoped("tolerate concurrent starts: the record may repeat, it is read as a set", () =>
    Effect.gen(function* () {
      const config = chdb("concurrent")
      const client = yield* clientOf(config)
      yield* Effect.all(
        Array.from({ length: 3 }, () => Migrations.migrate(client, config.database)),
        { concurrency: "unbounded" },
      )
      const ids = (yield* recorded(client, config.database)).map(([id]) => id)
      expect([...new Set(ids)]).toEqual(allIds)
      expect(yield* Migrations.migrate(client, config.database, { dryRun: true })).toEqual({
        from: newest,
        pending: [],
      })
    }),
  )
})

const upTo3 = Migrations.migrations.filter((m) => m.id <= 3)

/**
 * Every row of a table as reads see it, in order: FINAL (a merge may drop a duplicate any time);
 * device_latest's states merged per device (a merge, or a copy, may fold them any time).
 */
const dump = (client: ClickHouseClient, db: string, table: string) =>
  Effect.map(
    select(
      client,
      table === "device_latest"
        ? `SELECT tenant_id, device_id, toString(argMaxMerge(latest)) AS latest,
             toString(maxMerge(last_seen)) AS last_seen FROM ${db}.${table}
           GROUP BY tenant_id, device_id ORDER BY ALL`
        : `SELECT * FROM ${db}.${table} FINAL ORDER BY ALL`,
    ),
    (rows) => JSON.stringify(rows),
  )

const partitionKeys = (client: ClickHouseClient, db: string) =>
  select(
    client,
    `SELECT name, partition_key FROM system.tables WHERE database = '${db}'
     AND name IN ('telemetry', 'dead_letters', 'telemetry_repartition', 'dead_letters_repartition') ORDER BY name`,
  )

const day = 86_400_000
/** Two tenants, two devices, readings over three months, one stored twice (a redelivery past its token). */
const history = [
  ...[0, 1, 2, 40, 41, 75].map((d) => reading(t0 + d * day, { values: { t: d, on: d % 2 === 0 } })),
  reading(t0 + 3 * day, { deviceId: "d2", values: { t: -1 } }),
  reading(t0 + 5 * day, { tenantId: "globex", values: { t: 5, label: "x" } }),
]
/** Rows by 30-day bucket from 1970, in time order (the rows are sorted). */
const bucketsOf = (rows: ReadonlyArray<TelemetryRow>) => {
  const buckets = new Map<number, Array<TelemetryRow>>()
  for (const r of rows) {
    const start = r.ts - (r.ts % (30 * day))
    buckets.set(start, [...(buckets.get(start) ?? []), r])
  }
  return [...buckets.values()]
}
const insertRaw = (client: ClickHouseClient, db: string, rows: ReadonlyArray<TelemetryRow>, token: string) =>
  Effect.promise(() =>
    client.insert({
      table: `${db}.telemetry`,
      values: rows.map(encodeRow),
      format: "JSONEachRow",
      clickhouse_settings: { insert_deduplication_token: token },
    }),
  )

describe("migration 4: telemetry and dead_letters repartitioned by (tenant, month)", () => {
  it.scoped(
    "upgrades today's schema with data in place: every read identical, key changed, the view firing",
    () =>
      Effect.gen(function* () {
        const config = chdb("upgrade_to_4")
        const db = config.database
        const client = yield* clientOf(config)
        yield* Migrations.migrate(client, db, { migrations: upTo3 })
        yield* insertRaw(client, db, history, "a")
        yield* insertRaw(client, db, [history[1]!], "b") // the duplicate
        yield* Effect.promise(() =>
          client.insert({
            table: `${db}.dead_letters`,
            values: [...letters, { ...letters[0]!, tenantId: "globex", sequenceNumber: "9" }].map(
              encodeDeadLetter,
            ),
            format: "JSONEachRow",
            clickhouse_settings: { insert_deduplication_token: "l" },
          }),
        )
        // A copy stopped half way before its swap: junk the next run must not keep.
        yield* command(client, `CREATE TABLE ${db}.telemetry_repartition AS ${db}.telemetry`)
        yield* Effect.promise(() =>
          client.insert({
            table: `${db}.telemetry_repartition`,
            values: [encodeRow(reading(t0 + 9 * day, { msgId: "junk" }))],
            format: "JSONEachRow",
          }),
        )

        const rawBefore = yield* dump(client, db, "telemetry")
        const lettersBefore = yield* dump(client, db, "dead_letters")
        const latestBefore = yield* dump(client, db, "device_latest")

        const range = { from: t0 - day, to: t0 + 100 * day }
        const aggregateQuery = {
          intervalMs: 30 * day,
          fields: ["t", "on"],
          fns: ["count", "sum", "min"] as const,
        }
        const acmeD1 = history.filter((r) => r.tenantId === "acme" && r.deviceId === "d1")
        yield* Effect.gen(function* () {
          const store = yield* TelemetryStore
          expect(
            yield* store.history("acme", "d1", range, { limit: 100 }).pipe(Effect.map((p) => p.rows)),
          ).toEqual(acmeD1)
          expect(
            yield* store.history("acme", "d2", range, { limit: 100 }).pipe(Effect.map((p) => p.rows)),
          ).toEqual([history[6]])
          expect(
            yield* store.history("globex", "d1", range, { limit: 100 }).pipe(Effect.map((p) => p.rows)),
          ).toEqual([history[7]])
          expect(yield* store.latest("acme", "d1")).toEqual(Option.some(acmeD1.at(-1)))
          expect(yield* store.latest("globex", "d1")).toEqual(Option.some(history[7]))
          expect((yield* store.activity("acme")).map((a) => a.deviceId)).toEqual(["d1", "d2"])
          // The duplicate is counted once, as before: 30-day buckets from 1970 hold days 0-2, 40-41, 75.
          const buckets = yield* store.aggregate("acme", "d1", range, {
            ...aggregateQuery,
            fns: [...aggregateQuery.fns],
            source: "raw",
          })
          expect(buckets.map((b) => b.values.count_t)).toEqual(bucketsOf(acmeD1).map((rows) => rows.length))
          expect(buckets.map((b) => b.values.sum_t)).toEqual(
            bucketsOf(acmeD1).map((rows) => rows.reduce((n, r) => n + Number(r.values.t), 0)),
          )
          expect(yield* store.deadLetters("acme", 10)).toEqual(letters)
          expect((yield* store.deadLetters("globex", 10)).map((l) => l.sequenceNumber)).toEqual(["9"])

          // The tables hold exactly what they held, under the new keys.
          expect(yield* dump(client, db, "telemetry")).toBe(rawBefore)
          expect(yield* dump(client, db, "dead_letters")).toBe(lettersBefore)
          expect(yield* dump(client, db, "device_latest")).toBe(latestBefore)
          expect(yield* partitionKeys(client, db)).toEqual([
            { name: "dead_letters", partition_key: "(tenant_id, toYYYYMM(received_at))" },
            { name: "telemetry", partition_key: "(tenant_id, toYYYYMM(ts))" },
          ])
          const months = yield* select(
            client,
            `SELECT DISTINCT partition FROM system.parts WHERE database = '${db}' AND table = 'telemetry' AND active ORDER BY partition`,
          )
          expect(months.map((r) => r.partition)).toEqual([
            "('acme',202501)",
            "('acme',202502)",
            "('acme',202503)",
            "('globex',202501)",
          ])

          // Migration 7: device_latest in granules of 256, fed through latest_input; no view left
          // on telemetry (6 and 7 dropped them), no spare table.
          const tables = yield* select(
            client,
            `SELECT name, engine, create_table_query LIKE '%index_granularity = 256%' AS small
             FROM system.tables WHERE database = '${db}' ORDER BY name`,
          )
          expect(tables.map((t) => [t.name, t.engine, Number(t.small)])).toEqual([
            ["dead_letters", "ReplacingMergeTree", 0],
            ["device_latest", "AggregatingMergeTree", 1],
            ["latest_input", "Null", 0],
            ["latest_input_mv", "MaterializedView", 0],
            ["schema_migrations", "MergeTree", 0],
            ["telemetry", "ReplacingMergeTree", 0],
            ["telemetry_rollup", "AggregatingMergeTree", 0],
          ])
          // Latest still follows: a newer reading through the store is the latest.
          const newer = reading(t0 + 90 * day, { msgId: "after" })
          yield* store.insert([newer], "after-upgrade")
          expect(yield* store.latest("acme", "d1")).toEqual(Option.some(newer))
        }).pipe(Effect.provide(ClickHouseTelemetryStore.layerWith(config)))
        expect((yield* recorded(client, db)).map(([id]) => id)).toEqual(allIds)
      }),
  )

  it.scoped("a run stopped after its swap completes on the next start, the old table's rows kept", () =>
    Effect.gen(function* () {
      const config = chdb("stopped_after_swap")
      const db = config.database
      const client = yield* clientOf(config)
      const upTo4 = Migrations.migrations.filter((m) => m.id <= 4)
      yield* Migrations.migrate(client, db, { migrations: upTo4 })
      const copied = reading(t0, { msgId: "copied" })
      yield* insertRaw(client, db, [copied], "copied")
      // The state of a stop between the swap and the drop: the old table (tenant-partitioned)
      // under the spare's name, holding a row that reached it after the copy, and 4 unrecorded.
      yield* command(
        client,
        `CREATE TABLE ${db}.telemetry_repartition AS ${db}.telemetry ENGINE = ReplacingMergeTree
         PARTITION BY tenant_id ORDER BY (tenant_id, device_id, ts, msg_id)`,
      )
      const late = reading(t0 + 1, { msgId: "late" })
      yield* Effect.promise(() =>
        client.insert({
          table: `${db}.telemetry_repartition`,
          values: [copied, late].map(encodeRow),
          format: "JSONEachRow",
        }),
      )
      yield* command(
        client,
        `ALTER TABLE ${db}.schema_migrations DELETE WHERE id = 4 SETTINGS mutations_sync = 2`,
      )
      // The killed run's lock (this host; a container restarts as the same pid): taken over.
      yield* command(
        client,
        `CREATE TABLE ${db}.schema_migration_lock (held UInt8) ENGINE = Memory
         COMMENT '${JSON.stringify({ host: hostname(), pid: process.pid })}'`,
      )

      const again = yield* Migrations.migrate(client, db, { migrations: upTo4 })
      expect(again.pending.map((m) => m.id)).toEqual([4])
      expect(yield* select(client, `SHOW TABLES FROM ${db} LIKE '%lock%'`)).toEqual([])
      expect(yield* partitionKeys(client, db)).toEqual([
        { name: "dead_letters", partition_key: "(tenant_id, toYYYYMM(received_at))" },
        { name: "telemetry", partition_key: "(tenant_id, toYYYYMM(ts))" },
      ])
      yield* Effect.gen(function* () {
        const store = yield* TelemetryStore
        // `copied` is on disk twice now; every read counts it once.
        expect(yield* historyOf(store)).toEqual([copied, late])
      }).pipe(Effect.provide(ClickHouseTelemetryStore.layerWith(config)))
    }),
  )
})

describe("migration 7: device_latest in granules of 256, fed through latest_input", () => {
  it.scoped(
    "a run stopped before its swap (a partial copy left) completes on the next start, 121 tenants",
    () =>
      Effect.gen(function* () {
        const config = chdb("latest_stopped_before_swap")
        const db = config.database
        const client = yield* clientOf(config)
        yield* Migrations.migrate(client, db, { migrations: Migrations.migrations.filter((m) => m.id <= 6) })
        const rows = [
          reading(t0 + 5, { receivedAt: t0 + 10 }),
          reading(t0 + 1, { msgId: "late", receivedAt: t0 + 90 }),
          reading(t0 + 2, { deviceId: "d2" }),
        ]
        yield* insertRaw(client, db, rows, "before-7") // through migration 3's view
        // 120 more tenants: the copy into the new table spans more than 100 partitions (tenants).
        for (const part of [0, 60]) {
          const others = Array.from({ length: 60 }, (_, i) => reading(t0, { tenantId: `t${part + i}` }))
          yield* insertRaw(client, db, others, `tenants-${part}`)
        }
        // The state of a stop mid-copy: the old view already dropped, a spare holding a wrong state.
        yield* command(client, `DROP VIEW ${db}.device_latest_mv`)
        yield* command(client, `CREATE TABLE ${db}.device_latest_regranulate AS ${db}.device_latest`)
        yield* command(
          client,
          `INSERT INTO ${db}.device_latest_regranulate
         SELECT tenant_id, 'ghost', latest, last_seen FROM ${db}.device_latest
         SETTINGS max_partitions_per_insert_block = 0`,
        )
        const again = yield* Migrations.migrate(client, db)
        expect(again.pending.map((m) => m.id)).toEqual([7])
        const tables = yield* select(
          client,
          `SELECT name, create_table_query LIKE '%index_granularity = 256%' AS small
         FROM system.tables WHERE database = '${db}' AND name LIKE '%latest%' ORDER BY name`,
        )
        expect(tables.map((t) => [t.name, Number(t.small)])).toEqual([
          ["device_latest", 1],
          ["latest_input", 0],
          ["latest_input_mv", 0],
        ])
        yield* Effect.gen(function* () {
          const store = yield* TelemetryStore
          expect(yield* store.latest("acme", "d1")).toEqual(Option.some(rows[0]))
          expect(yield* store.latest("acme", "ghost")).toEqual(Option.none())
          expect(yield* store.latest("t119", "d1")).toEqual(Option.some(reading(t0, { tenantId: "t119" })))
          expect(yield* store.activity("acme")).toEqual([
            { deviceId: "d1", lastSeen: t0 + 90 },
            { deviceId: "d2", lastSeen: t0 + 52 },
          ])
          // And the store's insert feeds it: a newer reading is the latest, an older one is not.
          const newer = reading(t0 + 9, { msgId: "newer", receivedAt: t0 + 95 })
          yield* store.insert([newer, reading(t0, { msgId: "old", receivedAt: t0 + 99 })], "after-7")
          expect(yield* store.latest("acme", "d1")).toEqual(Option.some(newer))
          expect((yield* store.activity("acme"))[0]).toEqual({ deviceId: "d1", lastSeen: t0 + 99 })
        }).pipe(Effect.provide(ClickHouseTelemetryStore.layerWith(config)))
      }),
  )
})

describe("schema migrations on a server target (the ClickHouse HTTP peer)", () => {
  it.scoped("upgrade an installation older than the migrations, every row read back identical", () =>
    upgradesAnOldInstallation(server("old_schema_server")),
  )

  it.scoped("refuse a database at a migration newer than this code", () =>
    Effect.gen(function* () {
      const config = server("future_server")
      const client = createClient({ url: peer().url })
      yield* Effect.addFinalizer(() => Effect.promise(() => client.close()))
      yield* Migrations.migrate(client, config.database)
      yield* command(
        client,
        `INSERT INTO ${config.database}.schema_migrations (id, name, applied_at) VALUES (999, 'later', now64(3))`,
      )
      const result = yield* Effect.either(Effect.scoped(ClickHouseTelemetryStore.make(config)))
      expect(Either.isLeft(result) && result.left.message).toMatch(/at schema 999, newer than this Sluice/)
    }),
  )
})
