/**
 * Retention and tenant deletion (src/storage/Retention.ts) on chDB: a tenant's months wholly past
 * its retention are dropped from `telemetry` and `dead_letters` (and its rollups by the rollup
 * retention), other tenants and newer months untouched, `latest` still answering; deleting a
 * tenant removes its rows from every table and nobody else's. The expiry loop of the processor
 * role runs at start and counts what it drops. One data directory for the file, a database per test.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import * as Metrics from "../../src/observability/Metrics.js"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import * as Retention from "../../src/storage/Retention.js"
import {
  type DeadLetter,
  type TelemetryRow,
  TelemetryStore,
  type TelemetryStoreApi,
} from "../../src/storage/TelemetryStore.js"
import type { PlatformConfig } from "../../src/tenancy/PlatformConfig.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"
import { rawSql, reading } from "./fixtures.js"

const dataDir = mkdtempSync(join(tmpdir(), "sluice-retention-"))
afterAll(() => rmSync(dataDir, { recursive: true, force: true }))

const config = (database: string) => ClickHouseTelemetryStore.embedded(dataDir, database)
const { raw } = rawSql(() => ClickHouseTelemetryStore.openClient(config("unused").target))

let databases = 0
const withStore = <A, E>(test: (store: TelemetryStoreApi, database: string) => Effect.Effect<A, E>) => {
  const database = `retention_${++databases}`
  return Effect.flatMap(TelemetryStore, (store) => test(store, database)).pipe(
    Effect.provide(ClickHouseTelemetryStore.layerWith(config(database))),
  )
}

const day = 86_400_000
/** "Now" for every expiry here: mid-June 2026. */
const now = Date.UTC(2026, 5, 15)
const tenth = (month: number) => Date.UTC(2026, month, 10)
const all = { from: Date.UTC(2025, 0, 1), to: Date.UTC(2027, 0, 1) }

/** d1 reads on the 10th of January to June; d2 only in February. */
const readingsOf = (tenantId: string): ReadonlyArray<TelemetryRow> => [
  ...[0, 1, 2, 3, 4, 5].map((m) => reading(tenth(m), { tenantId, values: { t: m } })),
  reading(tenth(1) + 1, { tenantId, deviceId: "d2", values: { t: 42 } }),
]
const letter = (tenantId: string, receivedAt: number): DeadLetter => ({
  tenantId,
  deviceId: "d1",
  receivedAt,
  shardId: "shardId-000000000000",
  sequenceNumber: String(receivedAt),
  reason: "field t: expected number",
  raw: "{}",
})

const historyOf = (store: TelemetryStoreApi, tenant: string, device = "d1") =>
  Effect.map(store.history(tenant, device, all, { limit: 1000 }), (page) => page.rows)

/** Rows of `tenant` per table, for the tables that exist. */
const countsOf = (database: string, tenant: string) =>
  Effect.gen(function* () {
    const tables = (yield* raw(`SHOW TABLES FROM ${database}`)).map((r) => String(r.name))
    const counts: Record<string, number> = {}
    for (const table of Retention.tenantTables.filter((t) => tables.includes(t))) {
      const [row] = yield* raw(`SELECT count() AS n FROM ${database}.${table} WHERE tenant_id = '${tenant}'`)
      counts[table] = Number(row!.n)
    }
    return counts
  })

const rollupsExist = (database: string) =>
  Effect.map(
    raw(`SELECT name FROM system.tables WHERE database = '${database}' AND name = 'telemetry_rollup'`),
    (rows) => rows.length > 0,
  )

const fill = (store: TelemetryStoreApi) =>
  Effect.gen(function* () {
    for (const tenant of ["acme", "other"]) {
      yield* store.insert(readingsOf(tenant), `rows-${tenant}`)
      yield* store.insertDeadLetters(
        [letter(tenant, tenth(0)), letter(tenant, tenth(5))],
        `letters-${tenant}`,
      )
    }
  })

describe("retention", () => {
  it.effect(
    "a tenant's readings older than its retention are gone after expiry, other tenants' untouched, rollups kept",
    () =>
      withStore((store, db) =>
        Effect.gen(function* () {
          yield* fill(store)
          const otherBefore = yield* countsOf(db, "other")
          const rollupsBefore = (yield* countsOf(db, "acme")).telemetry_rollup

          // 30 days before mid-June is May 16: January to April lie wholly before it; May does not.
          const dropped = yield* store.expire(now, [
            { tenantId: "acme", rawRetentionDays: 30, rollupRetentionDays: 365 },
            { tenantId: "other" },
          ])
          expect(dropped.map((p) => `${p.table} ${p.partition}`).sort()).toEqual([
            "dead_letters ('acme',202601)",
            "telemetry ('acme',202601)",
            "telemetry ('acme',202602)",
            "telemetry ('acme',202603)",
            "telemetry ('acme',202604)",
          ])
          expect(dropped.find((p) => p.partition === "('acme',202602)")?.rows).toBe(2)

          const kept = readingsOf("acme").filter((r) => r.ts >= Date.UTC(2026, 4, 1))
          expect(yield* historyOf(store, "acme")).toEqual(kept)
          expect(yield* historyOf(store, "acme", "d2")).toEqual([])
          expect(yield* store.deadLetters("acme", 10)).toEqual([letter("acme", tenth(5))])
          // device_latest is not expired: a device whose history expired still has its latest.
          expect(yield* store.latest("acme", "d1")).toEqual(Option.some(readingsOf("acme")[5]))
          expect(Option.map(yield* store.latest("acme", "d2"), (r) => r.ts)).toEqual(
            Option.some(tenth(1) + 1),
          )

          // Another tenant, with no retention: every row, every table.
          expect(yield* historyOf(store, "other")).toEqual(
            readingsOf("other").filter((r) => r.deviceId === "d1"),
          )
          expect(yield* countsOf(db, "other")).toEqual(otherBefore)

          if (yield* rollupsExist(db)) {
            // Rollups keep 365 days: nothing of them went.
            expect((yield* countsOf(db, "acme")).telemetry_rollup).toBe(rollupsBefore)
            expect(rollupsBefore).toBeGreaterThan(0)
            // With 60 days (April 16), their January to March go, April stays.
            yield* store.expire(now, [{ tenantId: "acme", rawRetentionDays: 30, rollupRetentionDays: 60 }])
            const months = yield* raw(
              `SELECT DISTINCT toYYYYMM(fromUnixTimestamp64Milli(bucket, 'UTC')) AS m FROM ${db}.telemetry_rollup
               WHERE tenant_id = 'acme' ORDER BY m`,
            )
            expect(months.map((r) => Number(r.m))).toEqual([202604, 202605, 202606])
          }

          // Idempotent: nothing more to drop at the same time.
          expect(yield* store.expire(now, [{ tenantId: "acme", rawRetentionDays: 30 }])).toEqual([])
          expect(yield* historyOf(store, "acme")).toEqual(kept)
        }),
      ),
  )

  it.effect("a month goes only once all of it is past the retention", () =>
    withStore((store) =>
      Effect.gen(function* () {
        yield* store.insert([reading(Date.UTC(2026, 4, 31, 23, 59)), reading(Date.UTC(2026, 5, 1))], "edge")
        const keep = (t: number) => store.expire(t, [{ tenantId: "acme", rawRetentionDays: 1 }])
        // One ms before June 1 + 1 day, May is not yet wholly past; at it, May goes, June stays.
        expect(yield* keep(Date.UTC(2026, 5, 2) - 1)).toEqual([])
        expect((yield* keep(Date.UTC(2026, 5, 2))).map((p) => p.partition)).toEqual(["('acme',202605)"])
        expect((yield* historyOf(store, "acme")).map((r) => r.ts)).toEqual([Date.UTC(2026, 5, 1)])
      }),
    ),
  )

  it.effect("a batch spanning 150 months is stored (one part per tenant and month)", () =>
    withStore((store) =>
      Effect.gen(function* () {
        const rows = Array.from({ length: 150 }, (_, m) =>
          reading(Date.UTC(2010, m, 1), { values: { t: m } }),
        )
        yield* store.insert(rows, "months")
        expect(yield* historyOf(store, "acme")).toHaveLength(0) // outside `all`: read the whole span
        const span = { from: Date.UTC(2010, 0, 1), to: Date.UTC(2030, 0, 1) }
        expect((yield* store.history("acme", "d1", span, { limit: 1000 })).rows).toEqual(rows)
      }),
    ),
  )

  it.effect("deleting a tenant removes its rows from every table, and nobody else's", () =>
    withStore((store, db) =>
      Effect.gen(function* () {
        yield* fill(store)
        const before = yield* countsOf(db, "acme")
        expect(before.telemetry).toBe(7)
        expect(before.dead_letters).toBe(2)
        expect(before.device_latest).toBeGreaterThan(0)
        const otherBefore = yield* countsOf(db, "other")

        const dropped = yield* store.dropTenant("acme")
        expect(new Set(dropped.map((p) => p.table))).toEqual(new Set(Object.keys(before)))
        expect(Object.values(yield* countsOf(db, "acme")).every((n) => n === 0)).toBe(true)
        expect(yield* store.latest("acme", "d1")).toEqual(Option.none())
        expect(yield* store.deadLetters("acme", 10)).toEqual([])
        expect(yield* countsOf(db, "other")).toEqual(otherBefore)
        expect(yield* historyOf(store, "other")).toHaveLength(6)
        // Again: nothing left, no error.
        expect(yield* store.dropTenant("acme")).toEqual([])
      }),
    ),
  )

  it.live("the processor's expiry loop runs at start, with the tenants' retentions, and counts drops", () =>
    withStore((store, db) =>
      Effect.gen(function* () {
        // Relative to the real clock: the loop reads Date.now(). Three years back is expired at
        // 30 days whatever today is; this month never is.
        const old = Date.now() - 3 * 365 * day
        yield* store.insert(
          [reading(old), reading(Date.now(), { msgId: "recent" }), reading(old, { tenantId: "other" })],
          "loop",
        )
        const platform: PlatformConfig = {
          tenants: [
            { id: "acme", api_keys: [], raw_retention_days: 30 },
            { id: "other", api_keys: [] },
          ],
          device_classes: [],
          devices: [],
        }
        const metrics = Metrics.make()
        const loop = Retention.layer.pipe(
          Layer.provide(
            Layer.mergeAll(
              Layer.succeed(TelemetryStore, store),
              Tenancy.layer(platform),
              Layer.succeed(Metrics.Metrics, metrics),
            ),
          ),
        )
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* Layer.build(loop)
            // The first pass runs at start, in its own fiber.
            for (let i = 0; i < 100; i++) {
              if ((yield* countsOf(db, "acme")).telemetry === 1) break
              yield* Effect.sleep("50 millis")
            }
          }),
        )
        expect((yield* countsOf(db, "acme")).telemetry).toBe(1)
        expect((yield* historyOf(store, "acme")).map((r) => r.msgId)).toEqual(["recent"])
        expect((yield* countsOf(db, "other")).telemetry).toBe(1)
        const counted = yield* Effect.promise(() =>
          metrics.registry.getSingleMetricAsString("sluice_retention_dropped_partitions_total"),
        )
        expect(counted).toContain('sluice_retention_dropped_partitions_total{table="telemetry"} 1')
      }),
    ),
  )
})
