/**
 * Fencing, tested directly on the processor: a processor whose shard lease is taken while one of
 * its batches is being stored cannot checkpoint that batch (the lease store refuses the write),
 * stops its worker on that shard at once, and reads nothing more from it. Real parts: the embedded
 * log with its leases, chDB behind a gate that holds inserts (fault injection on our own contract,
 * not a stand-in for ClickHouse).
 */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Layer } from "effect"
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
import { embeddedLeases } from "../support/leases.js"
import { wrapInserts } from "../support/switchableStore.js"

const demo = await Effect.runPromise(ConfigFile.load(join(import.meta.dirname, "../../config/demo.yaml")))
const T0 = Date.UTC(2026, 0, 1)

const record = (i: number) => ({
  partitionKey: partitionKeyOf("demo", "thermo-1"),
  data: encodeEnvelope(
    { tenantId: "demo", deviceId: "thermo-1", deviceClass: "thermostat", receivedAt: T0 },
    Buffer.from(JSON.stringify({ id: `m${i}`, ts: T0 + i, temp_f: 70, humidity: 40 })),
  ),
})

describe("fencing", () => {
  it.scopedLive(
    "a processor that lost its lease mid-batch cannot checkpoint it, and stops reading the shard",
    () =>
      Effect.gen(function* () {
        const dirs = {
          stream: mkdtempSync(join(tmpdir(), "sluice-fence-stream-")),
          chdb: mkdtempSync(join(tmpdir(), "sluice-fence-chdb-")),
        }
        const gate = yield* Deferred.make<void>()
        let inserts = 0
        const gated = wrapInserts(
          dirs.chdb,
          (insert) => (rows, token) =>
            Effect.zipRight(
              Effect.sync(() => inserts++),
              Effect.zipRight(Deferred.await(gate), insert(rows, token)),
            ),
        )
        const metrics = Metrics.make()
        const layers = Processor.layerWith({
          ...ProcessorConfig.defaults,
          workerId: "victim",
          // Renewals far apart: the refused checkpoint is the first thing that learns of the theft.
          failoverMs: 60_000,
          checkpointIntervalMs: 0,
          flushIntervalMs: 10,
          dataDir: dirs.stream,
        }).pipe(
          Layer.provideMerge(
            Layer.mergeAll(
              SqliteStreamLog.layerWith(SqliteStreamLog.defaults(dirs.stream)),
              gated,
              Tenancy.layer(demo),
              LiveFeed.layer,
              Layer.succeed(Metrics.Metrics, metrics),
            ),
          ),
          Layer.provideMerge(embeddedLeases(dirs.stream)),
        )

        yield* Effect.gen(function* () {
          const log = yield* StreamLog
          const leases = yield* ShardLeases
          const acks = yield* log.append(Array.from({ length: 10 }, (_, i) => record(i)))
          const shardId = acks[0]!.shardId
          // The batch is pulled and its insert is held at the gate.
          while (inserts === 0) yield* Effect.sleep("10 millis")
          const held = (yield* leases.list).find((l) => l.shardId === shardId)!
          expect(held.owner).toBe("victim")

          // Another worker takes the lease meanwhile (as after a missed renewal).
          const stolen = yield* leases.take(held, "thief")
          yield* Deferred.succeed(gate, undefined)

          // The batch is stored (inserts are idempotent), but its checkpoint is refused.
          const store = yield* TelemetryStore
          const stored = () =>
            Effect.map(
              store.history("demo", "thermo-1", { from: T0 - 1, to: T0 + 1000 }, { limit: 100 }),
              (p) => p.rows.length,
            )
          while ((yield* stored()) < 10) yield* Effect.sleep("20 millis")
          yield* Effect.sleep("300 millis")
          const after = (yield* leases.list).find((l) => l.shardId === shardId)!
          expect(after.owner).toBe("thief")
          expect(after.counter).toBe(stolen.counter)
          expect(after.checkpoint).toEqual({ _tag: "TrimHorizon" })
          const lost = yield* Effect.promise(() => metrics.leaseChanges.get())
          expect(lost.values.find((v) => v.labels.change === "lost")?.value).toBe(1)

          // Its worker stopped: records appended to that shard now are not read by the victim.
          yield* log.append([record(10), record(11)])
          yield* Effect.sleep("500 millis")
          expect(yield* stored()).toBe(10)
        }).pipe(Effect.provide(layers))
      }),
  )
})
