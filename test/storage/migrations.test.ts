/**
 * Schema migrations (src/storage/Migrations.ts): an installation made before the migrations
 * existed upgrades in place with every row read back; a database newer than the code, and a
 * failing migration, stop the start with the reason. On chDB (one data directory for the file,
 * a database per test) and, for the upgrade, on the ClickHouse HTTP peer.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type ClickHouseClient, createClient } from "@clickhouse/client"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { encodeDeadLetter, encodeRow } from "../../src/storage/ClickHouseTables.js"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import * as Migrations from "../../src/storage/Migrations.js"
import type { ClickHouseConfig } from "../../src/storage/StorageConfig.js"
import { type DeadLetter, TelemetryStore } from "../../src/storage/TelemetryStore.js"
import { type ClickHouseHttpPeer, startClickHouseHttpPeer } from "../support/clickhouseHttpPeer.js"
import { everyValueType, historyOf, reading, t0 } from "./fixtures.js"

const dataDir = mkdtempSync(join(tmpdir(), "sluice-migrations-"))
afterAll(() => rmSync(dataDir, { recursive: true, force: true }))

let peer: ClickHouseHttpPeer
beforeAll(async () => {
  peer = await startClickHouseHttpPeer()
}, 60_000)
afterAll(async () => {
  expect(await peer?.stop()).toBe(0)
})

const chdb = (database: string) => ClickHouseTelemetryStore.embedded(dataDir, database)
const server = (database: string): ClickHouseConfig => ({
  target: { _tag: "Server", url: peer.url, user: undefined, password: undefined },
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
    expect(yield* recorded(client, db)).toEqual([
      [1, byId(1).name],
      [2, byId(2).name],
      [3, byId(3).name],
    ])

    // Started again: nothing pending, nothing recorded twice, everything still there.
    yield* Effect.gen(function* () {
      const store = yield* TelemetryStore
      expect(yield* historyOf(store)).toEqual([rows[0], rows[1], versioned])
    }).pipe(Effect.provide(ClickHouseTelemetryStore.layerWith(config)))
    expect(yield* recorded(client, db)).toHaveLength(3)
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
      expect((yield* recorded(client, config.database)).map(([id]) => id)).toEqual([1, 2, 3])
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
        "the database from_the_future is at schema 999, newer than this Sluice (3): upgrade Sluice",
      )
    }),
  )

  it.scoped("stop at a failing migration, naming it and its statement, and record nothing for it", () =>
    Effect.gen(function* () {
      const config = chdb("failing")
      const db = config.database
      const client = yield* clientOf(config)
      const broken: Migrations.Migration = {
        id: 4,
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
        migration: { id: 4, name: "broken on purpose" },
        statement: `ALTER TABLE ${db}.no_such_table ADD COLUMN IF NOT EXISTS x UInt8`,
      })
      expect(error?.message).toContain("schema migration 4 (broken on purpose) failed")
      expect(error?.message).toContain(`statement: ALTER TABLE ${db}.no_such_table`)
      // The server's own words: "Could not find table: no_such_table" (chDB 3.4).
      expect(error?.message).toMatch(/\nserver: .*no_such_table/)
      expect((yield* recorded(client, db)).map(([id]) => id)).toEqual([1, 2, 3])

      // Fixed, it runs again from its first statement, which is idempotent, and is recorded.
      const fixed: Migrations.Migration = { ...broken, statements: (d) => broken.statements(d).slice(0, 1) }
      const again = yield* Migrations.migrate(client, db, { migrations: [...Migrations.migrations, fixed] })
      expect(again.pending.map((m) => m.id)).toEqual([4])
      expect((yield* recorded(client, db)).map(([id]) => id)).toEqual([1, 2, 3, 4])
    }),
  )

  it.scoped("list pending migrations with dryRun, creating nothing", () =>
    Effect.gen(function* () {
      const config = chdb("dry_run")
      const client = yield* clientOf(config)
      const planned = yield* Migrations.migrate(client, config.database, { dryRun: true })
      expect(planned).toMatchObject({ from: 0 })
      expect(planned.pending.map((m) => m.id)).toEqual([1, 2, 3])
      expect(yield* select(client, "SELECT name FROM system.databases WHERE name = 'dry_run'")).toEqual([])
      yield* Migrations.migrate(client, config.database)
      const after = yield* Migrations.migrate(client, config.database, { dryRun: true })
      expect(after).toEqual({ from: 3, pending: [] })
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
      expect([...new Set(ids)]).toEqual([1, 2, 3])
      expect(yield* Migrations.migrate(client, config.database, { dryRun: true })).toEqual({
        from: 3,
        pending: [],
      })
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
      const client = createClient({ url: peer.url })
      yield* Effect.addFinalizer(() => Effect.promise(() => client.close()))
      yield* Migrations.migrate(client, config.database)
      yield* command(
        client,
        `INSERT INTO ${config.database}.schema_migrations (id, name, applied_at) VALUES (7, 'later', now64(3))`,
      )
      const result = yield* Effect.either(Effect.scoped(ClickHouseTelemetryStore.make(config)))
      expect(Either.isLeft(result) && result.left.message).toMatch(/at schema 7, newer than this Sluice/)
    }),
  )
})
