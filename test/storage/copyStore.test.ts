/**
 * `sluice --copy-store-to URL`: the embedded store (chDB in this process) copied into a ClickHouse
 * server — chDB behind ClickHouse's HTTP interface in a separate process (a test peer, not
 * clickhouse-server). Every row and dead letter arrives with every value type intact, the reads
 * through the store on the server equal the reads on chDB — aggregates through the rollups too,
 * which the copy recounts on the server — and a second copy counts nothing twice.
 */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import * as CopyStore from "../../src/storage/CopyStore.js"
import type { ClickHouseConfig } from "../../src/storage/StorageConfig.js"
import { type DeadLetter, TelemetryStore } from "../../src/storage/TelemetryStore.js"
import { peerForFile } from "../support/clickhouseHttpPeer.js"
import { everyValueType, historyOf, reading, t0 } from "./fixtures.js"

const peer = peerForFile()

const onServer = (database: string): ClickHouseConfig => ({
  // The peer ignores credentials; they are passed to prove the headers do not break the copy.
  target: { _tag: "Server", url: peer().url, user: "default", password: Redacted.make("it's \\ secret") },
  database,
  fsync: true,
})

const deadLetter = (i: number): DeadLetter => ({
  tenantId: "acme",
  deviceId: "d1",
  receivedAt: t0 + i,
  shardId: "shardId-000000000001",
  sequenceNumber: String(100 + i),
  reason: `bad\tpayload\n#${i}`,
  raw: `{"broken": '${i}`,
})

describe("copying the embedded store into a ClickHouse server (chDB behind ClickHouse's HTTP interface in a separate process: a test peer, not clickhouse-server)", () => {
  it.scoped(
    "copies every row and dead letter; reads on the server equal chDB's; a second copy changes nothing",
    () =>
      Effect.gen(function* () {
        const chdb = mkdtempSync(join(tmpdir(), "sluice-copy-"))
        const rows = [
          reading(t0, { values: everyValueType }),
          ...Array.from({ length: 500 }, (_, i) => reading(t0 + 1 + i)),
          reading(t0 + 600, { tenantId: "other", deviceId: "o1", values: { s: "tab\there" } }),
        ]
        const dead = Array.from({ length: 5 }, (_, i) => deadLetter(i))
        // Through the hourly rollup: `source: "rollup"` reads it however few rows the range holds.
        const hourly = { intervalMs: 3_600_000, fields: ["t"], fns: ["count", "sum", "max"] as const }
        const range = { from: t0, to: t0 + 3_600_000 }
        const local = yield* Effect.gen(function* () {
          const store = yield* TelemetryStore
          yield* store.insert(rows, "copy-1")
          yield* store.insertDeadLetters(dead, "copy-dl-1")
          return {
            aggregate: yield* store.aggregate("acme", "d1", range, { ...hourly, source: "rollup" }),
            history: yield* historyOf(store),
            other: yield* historyOf(store, "other", "o1"),
            deadLetters: yield* store.deadLetters("acme", 10),
          }
        }).pipe(Effect.provide(ClickHouseTelemetryStore.layerWith(ClickHouseTelemetryStore.embedded(chdb))))

        const copied = yield* CopyStore.copy(chdb, onServer("sluice"))
        expect(copied).toEqual([
          { table: "telemetry", source: rows.length, target: rows.length },
          { table: "dead_letters", source: dead.length, target: dead.length },
        ])
        const again = yield* CopyStore.copy(chdb, onServer("sluice"))
        expect(again.map((c) => c.target)).toEqual([rows.length, dead.length])

        yield* Effect.gen(function* () {
          const store = yield* TelemetryStore
          expect(yield* historyOf(store)).toEqual(local.history)
          const rollup = yield* store.aggregate("acme", "d1", range, { ...hourly, source: "rollup" })
          expect(rollup).toEqual(local.aggregate)
          expect(rollup).toEqual(yield* store.aggregate("acme", "d1", range, { ...hourly, source: "raw" }))
          expect(rollup[0]?.values.count_t).toBe(500)
          // Counted once by the rollup, after two copies: the read above was the rollup's, not raw's.
          const client = ClickHouseTelemetryStore.openClient(onServer("sluice").target)
          const counted = yield* Effect.promise(async () => {
            const result = await client.query({
              query:
                "SELECT granularity, sum(readings) AS n FROM sluice.telemetry_rollup GROUP BY granularity",
              format: "JSONEachRow",
            })
            return result.json<{ granularity: number; n: string }>()
          }).pipe(Effect.ensuring(Effect.promise(() => client.close())))
          expect(counted.map((r) => Number(r.n))).toEqual([rows.length, rows.length])
          expect(yield* historyOf(store, "other", "o1")).toEqual(local.other)
          expect(yield* store.deadLetters("acme", 10)).toEqual(local.deadLetters)
        }).pipe(Effect.provide(ClickHouseTelemetryStore.layerWith(onServer("sluice"))))
      }),
  )
})
