/**
 * Guarantees 1, 2 and 4 with storage failing. The store is the real chDB one behind a switch that
 * makes inserts fail — for every tenant, or for one (fault injection on our own contract, not a
 * stand-in for ClickHouse).
 */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Queue } from "effect"
import * as LiveFeed from "../../src/actors/LiveFeed.js"
import * as Processor from "../../src/actors/Processor.js"
import * as ProcessorConfig from "../../src/actors/ProcessorConfig.js"
import * as Metrics from "../../src/observability/Metrics.js"
import { TelemetryStore } from "../../src/storage/TelemetryStore.js"
import { ShardLeases } from "../../src/stream/ShardLeases.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { StreamLog } from "../../src/stream/StreamLog.js"
import * as ConfigFile from "../../src/tenancy/ConfigFile.js"
import { encodeEnvelope, partitionKeyOf } from "../../src/tenancy/Envelope.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"
import { embeddedLeases, leaseCheckpoint } from "../support/leases.js"
import { polling } from "../support/polling.js"
import { switchableStore } from "../support/switchableStore.js"

const demo = await Effect.runPromise(ConfigFile.load(join(import.meta.dirname, "../../config/demo.yaml")))
const T0 = Date.UTC(2026, 0, 1)

const record = (tenantId: string, deviceId: string, i: number) => ({
  partitionKey: partitionKeyOf(tenantId, deviceId),
  data: encodeEnvelope(
    { tenantId, deviceId, deviceClass: "thermostat", receivedAt: T0 },
    Buffer.from(JSON.stringify({ id: `m${i}`, ts: T0 + i, temp_f: 70, humidity: 40 })),
  ),
})

/** Tenants whose inserts fail right now. */
const failing = new Set<string>()

const layers = (
  dirs: { stream: string; chdb: string },
  processor: Partial<ProcessorConfig.ProcessorConfig>,
) => {
  const infra = Layer.mergeAll(
    SqliteStreamLog.layerWith(SqliteStreamLog.defaults(dirs.stream)),
    switchableStore(dirs.chdb, failing),
    Tenancy.layer(demo),
    LiveFeed.layer,
    Metrics.layer,
  )
  return Processor.layerWith({
    ...ProcessorConfig.defaults,
    flushIntervalMs: 20,
    checkpointIntervalMs: 50,
    dataDir: dirs.stream,
    ...processor,
  }).pipe(Layer.provideMerge(infra), Layer.provideMerge(embeddedLeases(dirs.stream)))
}

const dirs = () => ({
  stream: mkdtempSync(join(tmpdir(), "sluice-down-stream-")),
  chdb: mkdtempSync(join(tmpdir(), "sluice-down-chdb-")),
})

const ids = (tenantId: string, deviceId: string) =>
  Effect.flatMap(TelemetryStore, (s) =>
    Effect.map(
      s.history(tenantId, deviceId, { from: T0 - 1000, to: T0 + 1_000_000 }, { limit: 1000 }),
      (page) => page.rows.map((r) => r.msgId),
    ),
  )

const until = polling({ timeoutMs: 30_000, intervalMs: 100 })

const expected = (n: number) => Array.from({ length: n }, (_, i) => `m${i}`)

describe("storage failing", () => {
  it.scopedLive(
    "backpressure: a shard stops pulling at max_inflight_records unstored records, however small its pulls",
    () => {
      failing.clear()
      failing.add("demo")
      return Effect.gen(function* () {
        const log = yield* StreamLog
        const live = yield* LiveFeed.LiveFeed
        const feed = yield* live.subscribe("demo", "thermo-1")
        yield* log.append(Array.from({ length: 400 }, (_, i) => record("demo", "thermo-1", i)))
        // Readings reach the live feed as they are pulled: the feed counts what was pulled and sent.
        yield* Effect.sleep("1500 millis")
        const pulled = yield* Queue.takeAll(feed)
        // Ten pulls of 10 (more than the mailbox's or any batch count would say), then nothing.
        expect(pulled.length).toBe(100)
        failing.clear()
        expect(yield* until(ids("demo", "thermo-1"), (got) => got.length >= 400)).toEqual(expected(400))
      }).pipe(
        Effect.provide(
          layers(dirs(), {
            pullMaxRecords: 10,
            maxInflightRecords: 100,
            idlePollMs: 1,
            spillAfterMs: 60_000,
          }),
        ),
      )
    },
  )

  it.scopedLive(
    "all of it: the stream absorbs, the checkpoint waits, everything lands once when storage returns",
    () => {
      failing.clear()
      failing.add("demo")
      return Effect.gen(function* () {
        const log = yield* StreamLog
        const first = yield* log.append(Array.from({ length: 50 }, (_, i) => record("demo", "thermo-1", i)))
        const shardId = first[0]!.shardId
        yield* Effect.sleep("1500 millis")
        expect(yield* ids("demo", "thermo-1")).toEqual([])
        expect(yield* leaseCheckpoint(shardId)).toMatchObject({ _tag: "TrimHorizon" })
        // Ingestion keeps being accepted by the stream meanwhile.
        yield* log.append(Array.from({ length: 50 }, (_, i) => record("demo", "thermo-1", 50 + i)))
        failing.clear()
        expect(yield* until(ids("demo", "thermo-1"), (got) => got.length >= 100)).toEqual(expected(100))
      }).pipe(Effect.provide(layers(dirs(), {})))
    },
  )

  it.scopedLive(
    "one tenant's: its batches go to the spill, the others' are stored and checkpointed, and the spill drains exactly once",
    () => {
      failing.clear()
      failing.add("other")
      const d = dirs()
      return Effect.gen(function* () {
        // First run: "other" keeps failing; "demo" flows; the shards' checkpoints move on.
        yield* Effect.scoped(
          Effect.gen(function* () {
            const log = yield* StreamLog
            const acks = yield* log.append(
              Array.from({ length: 40 }, (_, i) => [
                record("demo", "thermo-1", i),
                record("other", "other-thermo-1", i),
              ]).flat(),
            )
            expect(yield* until(ids("demo", "thermo-1"), (got) => got.length >= 40)).toEqual(expected(40))
            // Both tenants' records are behind the checkpoint: "other"'s wait in the spill.
            const leases = yield* ShardLeases
            for (const shardId of new Set(acks.map((a) => a.shardId))) {
              const last = acks.filter((a) => a.shardId === shardId).at(-1)!.sequenceNumber
              const position = yield* until(
                leaseCheckpoint(shardId).pipe(Effect.provideService(ShardLeases, leases)),
                (p) => p._tag === "AfterSequence" && p.sequenceNumber === last,
              )
              expect(position).toEqual({ _tag: "AfterSequence", sequenceNumber: last })
            }
            expect(yield* ids("other", "other-thermo-1")).toEqual([])
          }).pipe(Effect.provide(layers(d, { spillAfterMs: 300 }))),
        )
        // Storage for "other" is back; after a restart the spill drains with no new message for it.
        failing.clear()
        yield* Effect.scoped(
          Effect.gen(function* () {
            expect(yield* until(ids("other", "other-thermo-1"), (got) => got.length >= 40)).toEqual(
              expected(40),
            )
            yield* Effect.sleep("300 millis")
            expect(yield* ids("other", "other-thermo-1")).toEqual(expected(40))
            expect(yield* ids("demo", "thermo-1")).toEqual(expected(40))
          }).pipe(Effect.provide(layers(d, { spillAfterMs: 300 }))),
        )
      })
    },
  )
})
