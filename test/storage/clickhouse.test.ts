/**
 * The ClickHouse TelemetryStore against real chDB. chDB binds one data directory per process, so
 * every test of this file shares one directory and isolates itself in its own database.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createClient } from "@clickhouse/client"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { createChdbConnection } from "chdb/connection"
import { Effect, Either, Layer, Option } from "effect"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import {
  type DeadLetter,
  type TelemetryRow,
  TelemetryStore,
  type TelemetryStoreApi,
} from "../../src/storage/TelemetryStore.js"
import { all, everyValueType, historyOf, rawSql, reading, t0 } from "./fixtures.js"

const dataDir = mkdtempSync(join(tmpdir(), "sluice-chdb-"))
afterAll(() => rmSync(dataDir, { recursive: true, force: true }))

let databases = 0
/** A store in a database of its own; its name is passed to the test for raw SQL. */
const withStore = <A, E>(test: (store: TelemetryStoreApi, database: string) => Effect.Effect<A, E>) => {
  const database = `test_${++databases}`
  return Effect.flatMap(TelemetryStore, (store) => test(store, database)).pipe(
    Effect.provide(ClickHouseTelemetryStore.layerWith(ClickHouseTelemetryStore.embedded(dataDir, database))),
  )
}

/** Raw SQL on the same chDB directory (a second session: same path is allowed), bypassing FINAL. */
const { raw, rawCount } = rawSql(() =>
  createClient({
    connection: createChdbConnection({ path: dataDir }) as unknown as NonNullable<
      NonNullable<Parameters<typeof createClient>[0]>["connection"]
    >,
  }),
)

describe("ClickHouseTelemetryStore on chDB", () => {
  it.scoped("round-trips rows with every value type, inside [from, to)", () =>
    withStore((store) =>
      Effect.gen(function* () {
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
        expect(typeof window.rows[0]?.ts).toBe("number")
      }),
    ),
  )

  it.scoped("pages through history with no gaps or repeats, ties on ts broken by msgId", () =>
    withStore((store) =>
      Effect.gen(function* () {
        // 25 rows, three per device-time instant on some: the cursor must split ties correctly.
        const rows = Array.from({ length: 25 }, (_, i) =>
          reading(t0 + Math.floor(i / 3) * 10, { msgId: `m${i}` }),
        )
        yield* store.insert(rows.slice(0, 12), "a")
        yield* store.insert(rows.slice(12), "b")
        const seen: Array<TelemetryRow> = []
        let cursor: string | undefined
        let pages = 0
        do {
          const page = yield* store.history("acme", "d1", all, { limit: 7, cursor })
          seen.push(...page.rows)
          cursor = page.nextCursor
          pages++
        } while (cursor !== undefined)
        expect(pages).toBe(4)
        const expected = [...rows].sort((a, b) => a.ts - b.ts || (a.msgId < b.msgId ? -1 : 1))
        expect(seen).toEqual(expected)
        // An exact multiple of the limit ends without an empty extra page.
        const exact = yield* store.history("acme", "d1", all, { limit: 25 })
        expect(exact.rows).toHaveLength(25)
        expect(exact.nextCursor).toBeUndefined()
      }),
    ),
  )

  it.scoped("stores a batch retried with the same token once, in every tenant it spans", () =>
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
        // The token decides, not the content: the same rows under another token are written again.
        yield* raw(`SYSTEM STOP MERGES ${database}.telemetry`)
        yield* store.insert(batch, "shardId-000000000000:16-30")
        expect(yield* rawCount(database)).toBe(30)
        expect(yield* historyOf(store)).toHaveLength(10)
      }),
    ),
  )

  it.scoped("counts rows replayed under different tokens (other batch boundaries) once", () =>
    withStore((store, database) =>
      Effect.gen(function* () {
        // No background merge may hide the duplicates: only FINAL stands between them and the reads.
        yield* raw(`SYSTEM STOP MERGES ${database}.telemetry`)
        const rows = Array.from({ length: 15 }, (_, i) => reading(t0 + i * 100, { values: { t: i } }))
        yield* store.insert(rows.slice(0, 10), "first:0-9")
        yield* store.insert(rows.slice(5, 15), "replay:5-14")
        yield* store.insert(rows.slice(0, 5), "replay:0-4")
        expect(yield* rawCount(database)).toBe(25)
        expect(yield* historyOf(store)).toEqual(rows)
        const [bucket] = yield* store.aggregate("acme", "d1", all, {
          intervalMs: 3_600_000,
          fields: ["t"],
          fns: ["count", "sum"],
        })
        expect(bucket?.values).toEqual({ count_t: 15, sum_t: 105 })
        const page = yield* store.history("acme", "d1", all, { limit: 8 })
        const rest = yield* store.history("acme", "d1", all, { limit: 8, cursor: page.nextCursor })
        expect([...page.rows, ...rest.rows]).toEqual(rows)
      }),
    ),
  )

  it.scoped("aggregates per bucket match hand-computed numbers", () =>
    withStore((store) =>
      Effect.gen(function* () {
        yield* store.insert(
          [
            // bucket [t0, t0+1s): t = 1, 2, 6; h = 10 on one row; on = true, false, true
            reading(t0, { values: { t: 1, on: true } }),
            reading(t0 + 100, { values: { t: 2, h: 10, on: false } }),
            reading(t0 + 999, { values: { t: 6, on: true } }),
            // bucket [t0+1s, t0+2s): t = -4, 4 and a row without t (must not count as 0)
            reading(t0 + 1000, { values: { t: -4 } }),
            reading(t0 + 1500, { values: { t: 4 } }),
            reading(t0 + 1600, { values: { h: 7, label: "x" } }),
            // bucket [t0+3s, t0+4s): no t at all
            reading(t0 + 3000, { values: { h: 1 } }),
            // outside the range, another device, another tenant: none of them count
            reading(t0 + 4000, { values: { t: 1000 } }),
            reading(t0 + 10, { deviceId: "d2", values: { t: 1000 } }),
            reading(t0 + 10, { tenantId: "globex", values: { t: 1000 } }),
          ],
          "agg",
        )
        // A replay of part of it under another token changes nothing.
        yield* store.insert([reading(t0 + 100, { values: { t: 2, h: 10, on: false } })], "agg-replay")
        const buckets = yield* store.aggregate(
          "acme",
          "d1",
          { from: t0, to: t0 + 4000 },
          { intervalMs: 1000, fields: ["t", "on", "missing"], fns: ["avg", "min", "max", "sum", "count"] },
        )
        const nulls = { avg_missing: null, min_missing: null, max_missing: null, sum_missing: null }
        expect(buckets).toEqual([
          {
            start: t0,
            values: {
              avg_t: 3,
              min_t: 1,
              max_t: 6,
              sum_t: 9,
              count_t: 3,
              avg_on: 2 / 3,
              min_on: 0,
              max_on: 1,
              sum_on: 2,
              count_on: 3,
              ...nulls,
              count_missing: 0,
            },
          },
          {
            start: t0 + 1000,
            values: {
              avg_t: 0,
              min_t: -4,
              max_t: 4,
              sum_t: 0,
              count_t: 2,
              avg_on: null,
              min_on: null,
              max_on: null,
              sum_on: null,
              count_on: 0,
              ...nulls,
              count_missing: 0,
            },
          },
          {
            start: t0 + 3000,
            values: {
              avg_t: null,
              min_t: null,
              max_t: null,
              sum_t: null,
              count_t: 0,
              avg_on: null,
              min_on: null,
              max_on: null,
              sum_on: null,
              count_on: 0,
              ...nulls,
              count_missing: 0,
            },
          },
        ])
        // Buckets are aligned to the epoch, not to the range start.
        const offset = yield* store.aggregate(
          "acme",
          "d1",
          { from: t0 + 500, to: t0 + 1600 },
          { intervalMs: 1000, fields: ["t"], fns: ["sum"] },
        )
        expect(offset).toEqual([
          { start: t0, values: { sum_t: 6 } },
          { start: t0 + 1000, values: { sum_t: 0 } },
        ])
      }),
    ),
  )

  it.scoped("latest is by device time, not by arrival; activity is by arrival", () =>
    withStore((store) =>
      Effect.gen(function* () {
        const newer = reading(t0 + 3000, { receivedAt: t0 + 3100 })
        const older = reading(t0 + 1000, { receivedAt: t0 + 9000 }) // a buffered reading, sent late
        yield* store.insert([newer], "1")
        yield* store.insert([older], "2")
        yield* store.insert([reading(t0, { deviceId: "d2", receivedAt: t0 + 5 })], "3")
        expect(yield* store.latest("acme", "d1")).toEqual(Option.some(newer))
        expect(yield* store.latest("acme", "nope")).toEqual(Option.none())
        expect(yield* store.activity("acme")).toEqual([
          { deviceId: "d1", lastSeen: t0 + 9000 },
          { deviceId: "d2", lastSeen: t0 + 5 },
        ])
      }),
    ),
  )

  it.scoped("one tenant never reads another's rows, even with its device ids", () =>
    withStore((store) =>
      Effect.gen(function* () {
        const a = [reading(t0, { tenantId: "a" }), reading(t0 + 1, { tenantId: "a" })]
        yield* store.insert(a, "a")
        yield* store.insertDeadLetters(
          [
            {
              tenantId: "a",
              deviceId: "d1",
              receivedAt: t0,
              shardId: "s",
              sequenceNumber: "1",
              reason: "r",
              raw: "{}",
            },
          ],
          "dl-a",
        )
        for (const tenant of ["b", "a' OR '1'='1", "a\\", "A", ""]) {
          expect(yield* historyOf(store, tenant)).toEqual([])
          expect(yield* store.latest(tenant, "d1")).toEqual(Option.none())
          expect(
            yield* store.aggregate(tenant, "d1", all, { intervalMs: 1000, fields: ["t"], fns: ["count"] }),
          ).toEqual([])
          expect(yield* store.activity(tenant)).toEqual([])
          expect(yield* store.deadLetters(tenant, 10)).toEqual([])
        }
        expect(yield* historyOf(store, "a")).toEqual(a)
        expect(yield* store.activity("a")).toHaveLength(1)
      }),
    ),
  )

  it.scoped("dead letters round-trip newest first, once despite redelivery", () =>
    withStore((store, database) =>
      Effect.gen(function* () {
        const letter = (
          receivedAt: number,
          sequenceNumber: string,
          over: Partial<DeadLetter> = {},
        ): DeadLetter => ({
          tenantId: "acme",
          deviceId: "d1",
          receivedAt,
          shardId: "shardId-000000000001",
          sequenceNumber,
          reason: `field t: expected number, got "hot"`,
          raw: `{"t":"hot","note":"it's \\"quoted\\" é"}`,
          ...over,
        })
        const letters = [letter(t0, "9"), letter(t0, "10", { deviceId: "d2" }), letter(t0 + 5, "11")]
        yield* store.insertDeadLetters(letters, "dl-1")
        yield* store.insertDeadLetters(letters, "dl-1")
        yield* store.insertDeadLetters([letters[0]!], "dl-replay")
        expect(yield* rawCount(database, "dead_letters")).toBe(4)
        // Same arrival time: sequence numbers compare as numbers (10 after 9).
        expect(yield* store.deadLetters("acme", 10)).toEqual([letters[2], letters[1], letters[0]])
        expect(yield* store.deadLetters("acme", 1)).toEqual([letters[2]])
      }),
    ),
  )

  it.scoped("a malformed cursor or an out-of-domain argument is a typed error", () =>
    withStore((store) =>
      Effect.gen(function* () {
        yield* store.insert([reading(t0), reading(t0 + 1)], "x")
        const good = (yield* store.history("acme", "d1", all, { limit: 1 })).nextCursor!
        const cursors = [
          "garbage",
          "h1.!!!",
          `h1.${Buffer.from('{"ts":1}').toString("base64url")}`,
          `h1.${Buffer.from('[1e20,"m"]').toString("base64url")}`,
          good.slice(0, -3),
          good.replace("h1.", "h2."),
        ]
        for (const cursor of cursors) {
          const result = yield* Effect.either(store.history("acme", "d1", all, { limit: 10, cursor }))
          expect(Either.isLeft(result) && result.left).toMatchObject({ _tag: "InvalidCursor", cursor })
        }
        const bad: ReadonlyArray<Effect.Effect<unknown, { readonly _tag: string }>> = [
          store.history("acme", "d1", all, { limit: 0 }),
          store.history("acme", "d1", all, { limit: 1.5 }),
          store.history("acme", "d1", { from: Number.NaN, to: 1 }, { limit: 1 }),
          store.aggregate("acme", "d1", all, { intervalMs: 0, fields: ["t"], fns: ["avg"] }),
          store.aggregate("acme", "d1", all, { intervalMs: 1000, fields: ["t"], fns: ["median" as "avg"] }),
          store.deadLetters("acme", -1),
        ]
        for (const effect of bad) {
          const result = yield* Effect.either(effect)
          expect(Either.isLeft(result) && result.left._tag).toBe("InvalidQuery")
        }
        // Unbounded ranges are clamped, not an error; fractional bounds stay exact.
        const everything = yield* store.history(
          "acme",
          "d1",
          { from: -Infinity, to: Infinity },
          { limit: 10 },
        )
        expect(everything.rows).toHaveLength(2)
        const fractional = yield* store.history("acme", "d1", { from: t0 + 0.5, to: t0 + 1.5 }, { limit: 10 })
        expect(fractional.rows.map((r) => r.ts)).toEqual([t0 + 1])
      }),
    ),
  )

  it.scoped("concurrent inserts keep their own tokens (chDB SETs settings per connection)", () =>
    withStore((store) =>
      Effect.gen(function* () {
        yield* Effect.forEach(
          Array.from({ length: 40 }, (_, i) => i),
          (i) => store.insert([reading(t0 + i)], `concurrent-${i}`),
          { concurrency: "unbounded" },
        )
        expect(yield* historyOf(store)).toHaveLength(40)
      }),
    ),
  )

  it.scoped("a second store on the same directory shares the data; another directory fails to open", () =>
    withStore((first, database) =>
      Effect.gen(function* () {
        yield* first.insert([reading(t0)], "shared")
        const sameDir = ClickHouseTelemetryStore.layerWith(
          ClickHouseTelemetryStore.embedded(dataDir, database),
        )
        const seen = yield* Effect.provide(Effect.flatMap(TelemetryStore, historyOf), sameDir)
        expect(seen).toHaveLength(1)
        // Closing the second store left the first working, and opening it again changed no table.
        expect(yield* historyOf(first)).toHaveLength(1)
        const [table] = yield* raw(`SHOW CREATE TABLE ${database}.telemetry`)
        expect(String(table?.statement)).toMatch(
          /PARTITION BY \(tenant_id, toYYYYMM\(ts\)\)\s+ORDER BY \(tenant_id, device_id, ts, msg_id\)/,
        )
        expect(String(table?.statement)).toContain("non_replicated_deduplication_window = 10000")
        expect(String(table?.statement)).toContain("fsync_after_insert = 1")
        const otherDir = mkdtempSync(join(tmpdir(), "sluice-chdb-other-"))
        const opened = yield* Effect.either(
          Effect.scoped(
            Layer.build(ClickHouseTelemetryStore.layerWith(ClickHouseTelemetryStore.embedded(otherDir))),
          ),
        )
        rmSync(otherDir, { recursive: true, force: true })
        expect(Either.isLeft(opened) && opened.left).toMatchObject({
          _tag: "StorageUnavailable",
          operation: "open",
          reason: expect.stringContaining("only one active data directory per process"),
        })
      }),
    ),
  )

  it.scopedLive("insert throughput: 10,000 rows x 3 numeric fields per call (logged, not asserted)", () =>
    withStore((store) =>
      Effect.gen(function* () {
        const batches = 5
        const size = 10_000
        const batch = (b: number) =>
          Array.from({ length: size }, (_, i) =>
            reading(t0 + b * size + i, {
              deviceId: `d${i % 100}`,
              values: {
                temperature: 20 + (i % 7) * 0.5,
                humidity: 40 + (i % 11),
                pressure: 1013.25 - (i % 5),
              },
            }),
          )
        yield* store.insert(batch(-1), "warmup")
        const data = Array.from({ length: batches }, (_, b) => batch(b))
        const started = performance.now()
        for (let b = 0; b < batches; b++) yield* store.insert(data[b]!, `throughput-${b}`)
        const seconds = (performance.now() - started) / 1000
        const rate = Math.round((batches * size) / seconds)
        console.log(`chDB insert: ${batches} x ${size} rows in ${seconds.toFixed(2)} s = ${rate} rows/s`)
        expect(yield* store.activity("acme")).toHaveLength(100)
      }),
    ),
  )
})
