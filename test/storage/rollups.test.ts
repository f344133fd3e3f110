/**
 * `aggregate` through the rollups (`Rollups.ts`: `telemetry_rollup`, 1 min and 1 h buckets, folded
 * from each batch by the store's insert) must answer exactly as the raw computation (`source:
 * "raw"`, telemetry FINAL): on random ranges, aligned or not, and intervals, with batches
 * redelivered under their token (also after a failure between the readings and their rollup),
 * late readings, several tenants per batch, times before 1970 and after 2106, and after an
 * upgrade whose backfill wrote the history. Values are multiples of 1/8 so every sum is exact in
 * any order. On chDB: one data directory for the file, a database per test.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Logger, LogLevel } from "effect"
import { encodeRow } from "../../src/storage/ClickHouseTables.js"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import * as Migrations from "../../src/storage/Migrations.js"
import * as Rollups from "../../src/storage/Rollups.js"
import {
  type AggregateFn,
  type FieldValue,
  type TelemetryRow,
  TelemetryStore,
  type TelemetryStoreApi,
  type TimeRange,
} from "../../src/storage/TelemetryStore.js"
import { rawSql, reading, t0 } from "./fixtures.js"

const dataDir = mkdtempSync(join(tmpdir(), "sluice-rollups-"))
afterAll(() => rmSync(dataDir, { recursive: true, force: true }))

const config = (database: string) => ClickHouseTelemetryStore.embedded(dataDir, database)

let databases = 0
const withStore = <A, E>(test: (store: TelemetryStoreApi, database: string) => Effect.Effect<A, E>) => {
  const database = `rollups_${++databases}`
  return Effect.flatMap(TelemetryStore, (store) => test(store, database)).pipe(
    Effect.provide(ClickHouseTelemetryStore.layerWith(config(database))),
  )
}

const { raw } = rawSql(() => ClickHouseTelemetryStore.openClient(config("unused").target))

const minute = 60_000
const hour = 3_600_000
const day = 24 * hour
const allFns: ReadonlyArray<AggregateFn> = ["count", "sum", "min", "max", "avg"]

/** A small deterministic PRNG (mulberry32), so a failure replays. */
const prng = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** The warnings logged, so a test can tell that no read fell back to raw (`Aggregates.run`). */
const warnings: Array<unknown> = []
const recordWarnings = Logger.replace(
  Logger.defaultLogger,
  Logger.make(({ logLevel, message }) => {
    if (LogLevel.greaterThanEqual(logLevel, LogLevel.Warning)) warnings.push(message)
  }),
)

/** The answer through the rollups equals the raw one; returns it. */
const sameAsRaw = (
  store: TelemetryStoreApi,
  tenant: string,
  device: string,
  range: TimeRange,
  intervalMs: number,
  fields: ReadonlyArray<string>,
  fns: ReadonlyArray<AggregateFn> = allFns,
) =>
  Effect.gen(function* () {
    // "rollup": through the rollup however few rows the range holds (these tests store few).
    const auto = yield* store.aggregate(tenant, device, range, { intervalMs, fields, fns, source: "rollup" })
    const exact = yield* store.aggregate(tenant, device, range, { intervalMs, fields, fns, source: "raw" })
    expect(auto, JSON.stringify({ tenant, device, range, intervalMs, fields })).toEqual(exact)
    return auto
  })

/** Sum of `count_<field>` over the buckets. */
const totalCount = (
  buckets: ReadonlyArray<{ values: Readonly<Record<string, number | null>> }>,
  field: string,
) => buckets.reduce((n, b) => n + (b.values[`count_${field}`] ?? 0), 0)

/** Random readings of 2 tenants x 3 devices over `days` days from t0; fields x, y, z, on, label. */
const randomReadings = (random: () => number, n: number, days: number) => {
  const int = (k: number) => Math.floor(random() * k)
  const eighth = () => (int(4001) - 2000) / 8
  return Array.from({ length: n }, (_, i): TelemetryRow => {
    const values: Record<string, FieldValue> = { label: `l${int(3)}` }
    // One in ten readings has no numeric field at all: its bucket must still exist.
    if (int(10) > 0) {
      if (int(5) > 0) values.x = eighth()
      if (int(2) > 0) values.y = eighth()
      if (int(5) === 0) values.z = eighth()
      if (int(3) === 0) values.on = random() < 0.5
    }
    return reading(t0 + int(days * day), {
      tenantId: int(2) === 0 ? "a" : "b",
      deviceId: `d${int(3)}`,
      msgId: `m${i}`,
      values,
    })
  })
}

/** A random range inside [t0 - 1 h, t0 + days + 1 h): aligned to a minute, an hour, or not at all. */
const randomRange = (random: () => number, days: number): TimeRange => {
  const span = days * day + 2 * hour
  const align = [1, minute, hour][Math.floor(random() * 3)]!
  const at = (ms: number) => t0 - hour + Math.floor(ms / align) * align
  const a = at(random() * span)
  const b = at(random() * span)
  return { from: Math.min(a, b), to: Math.max(a, b) + align }
}

const intervals = [
  minute,
  2 * minute,
  15 * minute,
  90 * minute,
  hour,
  3 * hour,
  day,
  7 * day,
  45_000,
  1000,
  61_000,
]

describe("aggregate through the rollups equals the raw computation", () => {
  it.scoped(
    "random readings in multi-tenant batches, redelivered and late, on random ranges and intervals",
    () =>
      withStore((store, database) =>
        Effect.gen(function* () {
          // Unmerged rows on disk, as right after the inserts: the read must merge them itself.
          for (const table of ["telemetry", "telemetry_rollup"]) {
            yield* raw(`SYSTEM STOP MERGES ${database}.${table}`)
          }
          const random = prng(20_260_101)
          const int = (k: number) => Math.floor(random() * k)
          const days = 3
          const rows = randomReadings(random, 4000, days)
          // In device-time order, except the last quarter, which arrives after everything (late).
          const onTime = rows.slice(0, 3000).sort((p, q) => p.ts - q.ts)
          const late = rows.slice(3000)
          let batch = 0
          for (const part of [onTime, late]) {
            for (let at = 0; at < part.length; batch++) {
              const size = 1 + int(300)
              const slice = part.slice(at, at + size)
              yield* store.insert(slice, `shard-0:${batch}`)
              // A redelivery under the same token (a retry after a lost ack): stored once, counted once.
              if (int(3) === 0) yield* store.insert(slice, `shard-0:${batch}`)
              at += size
            }
          }
          const fieldsOf = ["x", "y", "z", "on", "label", "missing", ""]
          warnings.length = 0
          for (let q = 0; q < 120; q++) {
            const fields = fieldsOf.filter(() => int(2) === 0)
            yield* sameAsRaw(
              store,
              ["a", "b"][int(2)]!,
              `d${int(3)}`,
              randomRange(random, days),
              intervals[int(intervals.length)]!,
              fields,
            )
          }
          // Every answer came from the rollups: none failed the check and fell back to raw.
          expect(warnings).toEqual([])
          // And raw itself is the intended computation: every reading counted once, none lost.
          for (const tenant of ["a", "b"]) {
            for (const device of ["d0", "d1", "d2"]) {
              const mine = rows.filter((r) => r.tenantId === tenant && r.deviceId === device)
              const all = { from: t0, to: t0 + days * day }
              const buckets = yield* sameAsRaw(store, tenant, device, all, day, ["x", "on"])
              expect(totalCount(buckets, "x")).toBe(mine.filter((r) => "x" in r.values).length)
              expect(totalCount(buckets, "on")).toBe(mine.filter((r) => "on" in r.values).length)
              const sumX = mine.reduce((s, r) => s + (typeof r.values.x === "number" ? r.values.x : 0), 0)
              expect(buckets.reduce((s, b) => s + (b.values.sum_x ?? 0), 0)).toBe(sumX)
              const hours = new Set(mine.map((r) => r.ts - (r.ts % hour)))
              expect((yield* sameAsRaw(store, tenant, device, all, hour, [])).map((b) => b.start)).toEqual(
                [...hours].sort((p, q) => p - q),
              )
            }
          }
        }).pipe(Effect.provide(recordWarnings)),
      ),
  )

  it.scoped("the rollups answer: a row written only to one shows, except in the raw edges", () =>
    withStore((store, database) =>
      Effect.gen(function* () {
        yield* store.insert(
          Array.from({ length: 300 }, (_, i) => reading(t0 + i * 20_000, { values: { x: i / 8 } })),
          "seed",
        )
        // A phantom value written only to the rollup (never to telemetry), in the bucket of
        // t0 + 30 min of granularity g. Without `readings` the check against telemetry does not
        // notice it: it shows.
        const phantom = (g: number, readings = 0) =>
          raw(
            `INSERT INTO ${database}.telemetry_rollup
               (tenant_id, device_id, granularity, bucket, readings, value_count, value_sum, value_min, value_max)
             SELECT 'acme', 'd1', ${g}, ${t0 + 30 * minute - ((30 * minute) % g)}, ${readings},
               ${readings === 0 ? "map('x', 1)" : "map()"}, map('x', 1000), map('x', 1000), map('x', 1000)`,
          )
        yield* phantom(minute)
        const range = { from: t0, to: t0 + 2 * hour }
        const q = (intervalMs: number, r: TimeRange = range, source: "raw" | "rollup" = "rollup") =>
          store.aggregate("acme", "d1", r, { intervalMs, fields: ["x"], fns: ["count", "max"], source })
        // By default a range this small (300 rows) is read raw, cheaper than the rollup: no phantom.
        expect(
          yield* store.aggregate("acme", "d1", range, {
            intervalMs: 10 * minute,
            fields: ["x"],
            fns: ["count", "max"],
          }),
        ).toEqual(yield* q(10 * minute, range, "raw"))
        const viaMinute = yield* q(10 * minute)
        const exact = yield* q(10 * minute, range, "raw")
        expect(viaMinute[3]!.values.count_x).toBe(exact[3]!.values.count_x! + 1)
        expect(viaMinute[3]!.values.max_x).toBe(1000)
        // 1 s intervals are not whole minutes: raw, the phantom is not seen.
        expect(yield* q(1000)).toEqual(yield* q(1000, range, "raw"))
        // The phantom's minute as an unaligned edge (the range starts inside it) comes from raw.
        const edge = { from: t0 + 30 * minute + 1, to: t0 + 2 * hour }
        expect(yield* q(minute, edge)).toEqual(yield* q(minute, edge, "raw"))
        // Whole hours read the hourly rows only: the minute phantom is not there, an hourly one is,
        // and it shows in whole hours only.
        const rawHour = (yield* q(hour, range, "raw"))[0]!.values.count_x!
        expect((yield* q(hour))[0]!.values.count_x).toBe(rawHour)
        yield* phantom(hour)
        expect((yield* q(hour))[0]!.values.count_x).toBe(rawHour + 1)
        const rawHalf = (yield* q(30 * minute, range, "raw"))[1]!.values.count_x!
        expect((yield* q(30 * minute))[1]!.values.count_x).toBe(rawHalf + 1)
        // A reading the rollup counted that telemetry does not hold fails the check: raw answers.
        yield* phantom(minute, 1)
        expect(yield* q(10 * minute)).toEqual(exact)
        // A rollup that lost readings, to the point of an empty answer, fails the check too.
        yield* raw(`TRUNCATE TABLE ${database}.telemetry_rollup`)
        expect(exact).toHaveLength(10)
        expect(yield* q(10 * minute)).toEqual(exact)
      }),
    ),
  )

  it.scoped(
    "a multi-tenant batch retried under its token adds nothing to the rollups; another token does",
    () =>
      withStore((store, database) =>
        Effect.gen(function* () {
          // The values of x the rollup counted, per granularity.
          const stored = () =>
            Effect.map(
              raw(
                `SELECT sum(value_count['x']) AS n FROM ${database}.telemetry_rollup
                 GROUP BY granularity ORDER BY granularity`,
              ),
              (r) => r.map((row) => Number(row.n)),
            )
          // Three tenants and two months: several parts per insert in every table.
          const batch = ["a", "b", "c"].flatMap((tenantId) =>
            [0, 40 * day].map((dt) => reading(t0 + dt, { tenantId, msgId: `m${dt}`, values: { x: 1 } })),
          )
          yield* store.insert(batch, "shard-1:1-6")
          expect(yield* stored()).toEqual([6, 6])
          yield* store.insert(batch, "shard-1:1-6")
          yield* store.insert(batch, "shard-1:1-6")
          expect(yield* stored()).toEqual([6, 6])
          const range = { from: t0, to: t0 + 41 * day }
          for (const tenant of ["a", "b", "c"]) yield* sameAsRaw(store, tenant, "d1", range, hour, ["x"])
          // The same readings replayed under ANOTHER token are stored again: raw reads hide the copy
          // (FINAL), the rollups count it; the read notices (readings counted > stored) and answers
          // from raw, for the tenant replayed, while the others still read the rollups.
          yield* store.insert(batch.slice(0, 2), "replay:1-2")
          expect(yield* stored()).toEqual([8, 8])
          warnings.length = 0
          const replayed = yield* sameAsRaw(store, "a", "d1", range, hour, ["x"]).pipe(
            Effect.provide(recordWarnings),
          )
          expect(replayed.map((b) => b.values.count_x)).toEqual([1, 1])
          expect(warnings).toHaveLength(1)
          // The rebuild (`sluice migrate --rebuild-rollups`, ingest stopped) recounts from FINAL.
          yield* Effect.acquireUseRelease(
            Effect.sync(() => ClickHouseTelemetryStore.openClient(config(database).target)),
            (client) => Rollups.rebuild(Rollups.sqlOf(client, "rebuild"), database),
            (client) => Effect.promise(() => client.close()),
          )
          expect(yield* stored()).toEqual([6, 6])
          for (const tenant of ["a", "b", "c"]) yield* sameAsRaw(store, tenant, "d1", range, hour, ["x"])
        }),
      ),
  )

  it.scoped("a batch whose readings were stored but not its rollup is retried: each stored once", () =>
    withStore((store, database) =>
      Effect.gen(function* () {
        const batch = ["a", "b"].flatMap((tenantId) =>
          [0, 1, 61, 119].map((m) =>
            reading(t0 + m * minute, { tenantId, msgId: `m${m}`, values: { x: m } }),
          ),
        )
        // The first attempt stopped after the readings' insert (the process died, the rollup's
        // insert failed): the readings are there under the batch's token, the rollup has nothing.
        yield* Effect.acquireUseRelease(
          Effect.sync(() => ClickHouseTelemetryStore.openClient(config(database).target)),
          (client) =>
            Effect.promise(() =>
              client.insert({
                table: `${database}.telemetry`,
                values: batch.map(encodeRow),
                format: "JSONEachRow",
                clickhouse_settings: { insert_deduplication_token: "shard-1:7-14" },
              }),
            ),
          (client) => Effect.promise(() => client.close()),
        )
        const range = { from: t0, to: t0 + 2 * hour }
        warnings.length = 0
        yield* sameAsRaw(store, "a", "d1", range, hour, ["x"]).pipe(Effect.provide(recordWarnings))
        expect(warnings).toHaveLength(1) // the rollup counted nothing: answered from raw
        // The retry under the same token: the readings are dropped as a duplicate, the rollup stored.
        yield* store.insert(batch, "shard-1:7-14")
        yield* store.insert(batch, "shard-1:7-14")
        warnings.length = 0
        for (const tenant of ["a", "b"]) {
          for (const interval of [minute, hour]) {
            const answer = yield* sameAsRaw(store, tenant, "d1", range, interval, ["x"]).pipe(
              Effect.provide(recordWarnings),
            )
            expect(answer.reduce((n, b) => n + (b.values.count_x ?? 0), 0)).toBe(4)
          }
        }
        expect(warnings).toEqual([])
        const counted = yield* raw(`SELECT sum(readings) AS n FROM ${database}.telemetry_rollup`)
        expect(Number(counted[0]!.n)).toBe(2 * 2 * 4) // 2 tenants × 2 granularities × 4 readings
      }),
    ),
  )

  it.scoped("buckets without numeric values, NaN and infinities, times before 1970 and after 2106", () =>
    withStore((store) =>
      Effect.gen(function* () {
        const old = -2_208_988_800_000 // 1900-01-01
        const far = Date.UTC(2299, 11, 31, 20) // the last readings at 22:12, before 2300
        const rows = [old, t0, far].flatMap((base) => [
          reading(base + 5 * minute, { msgId: `${base}-s`, values: { label: "only a string" } }),
          reading(base + 70 * minute, { msgId: `${base}-n`, values: { x: Number.NaN, y: 1 } }),
          reading(base + 71 * minute, { msgId: `${base}-n2`, values: { x: Number.NaN } }),
          reading(base + 130 * minute, { msgId: `${base}-i`, values: { x: Number.POSITIVE_INFINITY, y: 2 } }),
          reading(base + 131 * minute, { msgId: `${base}-j`, values: { x: Number.NEGATIVE_INFINITY } }),
          reading(base + 132 * minute, { msgId: `${base}-k`, values: { x: 3, "": 4, on: true } }),
        ])
        yield* store.insert(rows, "edge-values")
        for (const base of [old, t0, far]) {
          const range = { from: base - hour, to: base + 3 * hour }
          const byHour = yield* sameAsRaw(store, "acme", "d1", range, hour, ["x", "y", "", "on"])
          expect(byHour.map((b) => b.start)).toEqual([base, base + hour, base + 2 * hour])
          // The first hour has a reading but no numbers: count 0, the rest null.
          expect(byHour[0]!.values).toMatchObject({ count_x: 0, sum_x: null, min_x: null, avg_x: null })
          expect(byHour[1]!.values).toMatchObject({ count_x: 2, min_x: Number.NaN, sum_y: 1 })
          expect(byHour[2]!.values).toMatchObject({ sum_x: Number.NaN, min_x: -Infinity, max_x: Infinity })
          yield* sameAsRaw(store, "acme", "d1", range, minute, ["x", "y", ""])
          yield* sameAsRaw(store, "acme", "d1", { from: base + 1, to: base + 3 * hour - 7 }, 2 * minute, [
            "x",
          ])
        }
      }),
    ),
  )

  it.scoped("months whose readings retention dropped are answered by the rollups alone", () =>
    withStore((store, database) =>
      Effect.gen(function* () {
        const feb = Date.UTC(2025, 1, 1)
        const rows = [t0, t0 + 3 * day, feb, feb + 2 * day].map((ts) =>
          reading(ts + 5 * minute, { values: { x: 2 } }),
        )
        yield* store.insert(rows, "two-months")
        // As retention expires raw data before rollups: January's readings go, its rollups stay.
        yield* raw(`ALTER TABLE ${database}.telemetry DROP PARTITION ('acme', 202501)`)
        const range = { from: t0, to: Date.UTC(2025, 2, 1) }
        warnings.length = 0
        const q = { intervalMs: day, fields: ["x"], fns: ["count", "sum"] as Array<AggregateFn> }
        const auto = yield* store
          .aggregate("acme", "d1", range, { ...q, source: "rollup" })
          .pipe(Effect.provide(recordWarnings))
        expect(auto.map((b) => [b.start, b.values.count_x])).toEqual(rows.map((r) => [r.ts - 5 * minute, 1]))
        expect(warnings).toEqual([])
        // February, still in telemetry, is checked and equals raw; January is gone from raw.
        const rawAnswer = yield* store.aggregate("acme", "d1", range, { ...q, source: "raw" })
        expect(rawAnswer).toEqual(auto.slice(2))
      }),
    ),
  )

  it.scoped("an installation at migration 3 with rows upgrades: the backfill answers as raw", () =>
    Effect.gen(function* () {
      const database = "at_migration_3"
      const client = yield* Effect.acquireRelease(
        Effect.sync(() => ClickHouseTelemetryStore.openClient(config(database).target)),
        (c) => Effect.promise(() => c.close()),
      )
      yield* Migrations.migrate(client, database, {
        migrations: Migrations.migrations.filter((m) => m.id <= 3),
      })
      const random = prng(7)
      const rows = randomReadings(random, 1500, 2)
      for (let i = 0; i < rows.length; i += 500) {
        yield* Effect.promise(() =>
          client.insert({
            table: `${database}.telemetry`,
            values: rows.slice(i, i + 500).map(encodeRow),
            format: "JSONEachRow",
            clickhouse_settings: { insert_deduplication_token: `before-${i}` },
          }),
        )
      }
      // A replay that slipped past its token before the upgrade: the backfill reads FINAL.
      yield* Effect.promise(() =>
        client.insert({
          table: `${database}.telemetry`,
          values: rows.slice(0, 100).map(encodeRow),
          format: "JSONEachRow",
          clickhouse_settings: { insert_deduplication_token: "replayed-before" },
        }),
      )
      // Answers equal to raw, and from the rollups: the backfill counted exactly the stored readings.
      const compare = (store: TelemetryStoreApi) =>
        Effect.gen(function* () {
          warnings.length = 0
          for (let q = 0; q < 40; q++) {
            const fields = ["x", "y", "on", ""].filter(() => random() < 0.6)
            const tenant = random() < 0.5 ? "a" : "b"
            const device = `d${Math.floor(random() * 3)}`
            yield* sameAsRaw(
              store,
              tenant,
              device,
              randomRange(random, 2),
              [minute, hour, 30 * minute][q % 3]!,
              fields,
            )
          }
          expect(warnings).toEqual([])
        }).pipe(Effect.provide(recordWarnings))
      yield* Effect.gen(function* () {
        const store = yield* TelemetryStore
        const n = yield* raw(
          `SELECT sum(value_count['x']) AS n FROM ${database}.telemetry_rollup GROUP BY granularity`,
        )
        expect(n.map((r) => Number(r.n))).toEqual(Array(2).fill(rows.filter((r) => "x" in r.values).length))
        yield* compare(store)
        // New readings reach the rollups through the store's insert.
        yield* store.insert(randomReadings(random, 300, 2), "after-upgrade")
        yield* compare(store)
        // Migration 5 re-run (as after a stop before its record): the backfill replaces its own
        // rows, so nothing is counted twice.
        for (const m of Migrations.migrations.filter((m) => m.id >= 5)) {
          for (const statement of m.statements(database)) yield* raw(statement)
        }
        yield* compare(store)
      }).pipe(Effect.provide(ClickHouseTelemetryStore.layerWith(config(database))))
    }),
  )
})
