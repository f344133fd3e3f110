/**
 * The ClickHouse TelemetryStore's `Server` target: `@clickhouse/client` over HTTP, against chDB
 * behind ClickHouse's HTTP interface in a separate process (a test peer, not clickhouse-server;
 * `test/support/clickhouse-http-peer.ts` says what it serves). It proves the store's HTTP path —
 * DDL, JSONEachRow inserts with `insert_deduplication_token` as a URL setting, `param_*` query
 * parameters, JSONEachRow reads — end to end; it does not prove a real server's behaviour beyond
 * what chDB shares with it. Each test has a database of its own on the one peer.
 */
import { createClient } from "@clickhouse/client"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option } from "effect"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import type { ClickHouseConfig } from "../../src/storage/StorageConfig.js"
import { type DeadLetter, TelemetryStore, type TelemetryStoreApi } from "../../src/storage/TelemetryStore.js"
import { peerForFile } from "../support/clickhouseHttpPeer.js"
import { all, everyValueType, historyOf, rawSql, reading, t0 } from "./fixtures.js"

const peer = peerForFile()

const server = (url: string, database: string): ClickHouseConfig => ({
  target: { _tag: "Server", url, user: undefined, password: undefined },
  database,
  fsync: true,
})

let databases = 0
/** A store on the peer in a database of its own; its name is passed to the test for raw SQL. */
const withStore = <A, E>(test: (store: TelemetryStoreApi, database: string) => Effect.Effect<A, E>) => {
  const database = `server_${++databases}`
  return Effect.flatMap(TelemetryStore, (store) => test(store, database)).pipe(
    Effect.provide(ClickHouseTelemetryStore.layerWith(server(peer().url, database))),
  )
}

/** Raw SQL through a client of its own, bypassing FINAL. */
const { raw, rawCount } = rawSql(() => createClient({ url: peer().url }))

describe("ClickHouseTelemetryStore on a server target: chDB behind ClickHouse's HTTP interface in a separate process (a test peer, not clickhouse-server)", () => {
  it.scoped("creates its tables and round-trips rows with every value type, inside [from, to)", () =>
    withStore((store, database) =>
      Effect.gen(function* () {
        expect(yield* raw(`SHOW TABLES FROM ${database}`)).toEqual([
          { name: "dead_letters" },
          { name: "device_latest" },
          { name: "latest_input" },
          { name: "latest_input_mv" },
          { name: "schema_migrations" },
          { name: "telemetry" },
          { name: "telemetry_rollup" },
        ])
        const values = everyValueType
        const rows = [
          reading(t0, { values }),
          reading(t0 + 1, { values: {} }),
          reading(t0 + 2, { msgId: "last", values: { x: 1 } }),
        ]
        yield* store.insert(rows, "tok-1")
        expect(yield* historyOf(store)).toEqual(rows)
        const window = yield* store.history("acme", "d1", { from: t0 + 1, to: t0 + 2 }, { limit: 10 })
        expect(window).toEqual({ rows: [rows[1]] })
      }),
    ),
  )

  it.scoped(
    "stores a batch retried with the same token once; another token writes again, FINAL counts once",
    () =>
      withStore((store, database) =>
        Effect.gen(function* () {
          const batch = [
            ...Array.from({ length: 10 }, (_, i) => reading(t0 + i)),
            ...Array.from({ length: 5 }, (_, i) => reading(t0 + i, { tenantId: "globex" })),
          ]
          yield* store.insert(batch, "shardId-000000000000:1-15")
          yield* store.insert(batch, "shardId-000000000000:1-15")
          // Below FINAL: the second insert never reached the table.
          expect(yield* rawCount(database)).toBe(15)
          expect(yield* historyOf(store)).toHaveLength(10)
          expect(yield* historyOf(store, "globex")).toHaveLength(5)
          yield* raw(`SYSTEM STOP MERGES ${database}.telemetry`)
          yield* store.insert(batch, "shardId-000000000000:16-30")
          expect(yield* rawCount(database)).toBe(30)
          expect(yield* historyOf(store)).toHaveLength(10)
        }),
      ),
  )

  it.scoped("concurrent inserts keep their own tokens (settings are per request)", () =>
    withStore((store, database) =>
      Effect.gen(function* () {
        yield* Effect.forEach(
          Array.from({ length: 20 }, (_, i) => i),
          (i) => store.insert([reading(t0 + i)], `concurrent-${i}`),
          { concurrency: "unbounded" },
        )
        expect(yield* rawCount(database)).toBe(20)
        expect(yield* historyOf(store)).toHaveLength(20)
      }),
    ),
  )

  it.scoped("pages history, aggregates per bucket, latest by device time, activity by arrival", () =>
    withStore((store) =>
      Effect.gen(function* () {
        yield* store.insert(
          [
            reading(t0, { values: { t: 1, on: true } }),
            reading(t0 + 100, { values: { t: 2, on: false } }),
            reading(t0 + 999, { values: { t: 6, on: true } }),
            reading(t0 + 1500, { values: { t: 4 }, receivedAt: t0 + 9000 }),
            reading(t0 + 1600, { values: { h: 7 } }),
            reading(t0 + 10, { deviceId: "d2", values: { t: 1000 }, receivedAt: t0 + 20 }),
          ],
          "agg",
        )
        const first = yield* store.history("acme", "d1", all, { limit: 3 })
        const rest = yield* store.history("acme", "d1", all, { limit: 3, cursor: first.nextCursor })
        expect([...first.rows, ...rest.rows].map((r) => r.ts)).toEqual([
          t0,
          t0 + 100,
          t0 + 999,
          t0 + 1500,
          t0 + 1600,
        ])
        expect(rest.nextCursor).toBeUndefined()
        const buckets = yield* store.aggregate(
          "acme",
          "d1",
          { from: t0, to: t0 + 2000 },
          { intervalMs: 1000, fields: ["t", "on"], fns: ["avg", "count", "max"] },
        )
        expect(buckets).toEqual([
          { start: t0, values: { avg_t: 3, avg_on: 2 / 3, count_t: 3, count_on: 3, max_t: 6, max_on: 1 } },
          {
            start: t0 + 1000,
            values: { avg_t: 4, avg_on: null, count_t: 1, count_on: 0, max_t: 4, max_on: null },
          },
        ])
        expect(Option.map(yield* store.latest("acme", "d1"), (r) => r.ts)).toEqual(Option.some(t0 + 1600))
        expect(yield* store.latest("acme", "nope")).toEqual(Option.none())
        expect(yield* store.activity("acme")).toEqual([
          { deviceId: "d1", lastSeen: t0 + 9000 },
          { deviceId: "d2", lastSeen: t0 + 20 },
        ])
      }),
    ),
  )

  it.scoped("query parameters stay values: one tenant never reads another's rows", () =>
    withStore((store) =>
      Effect.gen(function* () {
        const a = [reading(t0, { tenantId: "a" }), reading(t0 + 1, { tenantId: "a" })]
        yield* store.insert(a, "a")
        for (const tenant of ["b", "a' OR '1'='1", "a\\", "a\t", "A", ""]) {
          expect(yield* historyOf(store, tenant)).toEqual([])
          expect(yield* store.activity(tenant)).toEqual([])
        }
        // A tenant whose id needs escaping in a parameter is found exactly.
        const odd = `it's\t"odd"\\\n`
        yield* store.insert([reading(t0, { tenantId: odd })], "odd")
        expect(yield* historyOf(store, odd)).toHaveLength(1)
        expect(yield* historyOf(store, "a")).toEqual(a)
      }),
    ),
  )

  it.scoped("dead letters round-trip newest first, once despite redelivery", () =>
    withStore((store) =>
      Effect.gen(function* () {
        const letter = (receivedAt: number, sequenceNumber: string): DeadLetter => ({
          tenantId: "acme",
          deviceId: "d1",
          receivedAt,
          shardId: "shardId-000000000001",
          sequenceNumber,
          reason: `field t: expected number, got "hot"`,
          raw: `{"t":"hot","note":"it's \\"quoted\\" é"}`,
        })
        const letters = [letter(t0, "9"), letter(t0, "10"), letter(t0 + 5, "11")]
        yield* store.insertDeadLetters(letters, "dl-1")
        yield* store.insertDeadLetters(letters, "dl-1")
        expect(yield* store.deadLetters("acme", 10)).toEqual([letters[2], letters[1], letters[0]])
      }),
    ),
  )

  it.scoped("a server that is not there is StorageUnavailable at open", () =>
    Effect.gen(function* () {
      const result = yield* Effect.either(
        Effect.scoped(Effect.asVoid(ClickHouseTelemetryStore.make(server("http://127.0.0.1:1", "nowhere")))),
      )
      expect(Either.isLeft(result) && result.left).toMatchObject({
        _tag: "StorageUnavailable",
        operation: "migrate",
      })
    }),
  )
})
