/**
 * Guarantees 1 and 2 with the store down: ingestion keeps appending, the processor does not
 * checkpoint past what is unstored, and once the store is back everything lands exactly once.
 * The store is the real chDB one behind a switch that makes its inserts fail (fault injection
 * on our own contract, not a stand-in for ClickHouse).
 */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as LiveFeed from "../../src/actors/LiveFeed.js"
import * as Processor from "../../src/actors/Processor.js"
import * as ProcessorConfig from "../../src/actors/ProcessorConfig.js"
import * as Metrics from "../../src/observability/Metrics.js"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import { StorageUnavailable, TelemetryStore } from "../../src/storage/TelemetryStore.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { StreamLog } from "../../src/stream/StreamLog.js"
import * as ConfigFile from "../../src/tenancy/ConfigFile.js"
import { encodeEnvelope, partitionKeyOf } from "../../src/tenancy/Envelope.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"

const demo = await Effect.runPromise(ConfigFile.load(join(import.meta.dirname, "../../config/demo.yaml")))
const T0 = Date.UTC(2026, 0, 1)

const record = (i: number) => ({
  partitionKey: partitionKeyOf("demo", "thermo-1"),
  data: encodeEnvelope(
    { tenantId: "demo", deviceId: "thermo-1", deviceClass: "thermostat", receivedAt: T0 },
    Buffer.from(JSON.stringify({ id: `m${i}`, ts: T0 + i, temp_f: 70, humidity: 40 })),
  ),
})

describe("storage down", () => {
  it.scopedLive(
    "the stream absorbs, the checkpoint waits, and everything lands once when storage returns",
    () => {
      const storage = { down: true, refused: 0 }
      const switchable = Layer.effect(
        TelemetryStore,
        Effect.map(TelemetryStore, (store) =>
          TelemetryStore.of({
            ...store,
            // Decided per attempt: a retry of the same effect must see the store come back.
            insert: (rows, token) =>
              Effect.suspend(() => {
                if (!storage.down) return store.insert(rows, token)
                storage.refused++
                return Effect.fail(
                  new StorageUnavailable({ operation: "insert", reason: "storage is down (test)" }),
                )
              }),
          }),
        ),
      ).pipe(
        Layer.provide(
          ClickHouseTelemetryStore.layerWith(
            ClickHouseTelemetryStore.embedded(mkdtempSync(join(tmpdir(), "sluice-down-chdb-"))),
          ),
        ),
      )
      const infra = Layer.mergeAll(
        SqliteStreamLog.layerWith(
          SqliteStreamLog.defaults(mkdtempSync(join(tmpdir(), "sluice-down-stream-"))),
        ),
        switchable,
        Tenancy.layer(demo),
        LiveFeed.layer,
        Metrics.layer,
      )
      const stored = Effect.flatMap(TelemetryStore, (s) =>
        s.history("demo", "thermo-1", { from: T0 - 1000, to: T0 + 1_000_000 }, { limit: 1000 }),
      )
      return Effect.gen(function* () {
        const log = yield* StreamLog
        const first = yield* log.append(Array.from({ length: 50 }, (_, i) => record(i)))
        const shardId = first[0]!.shardId
        yield* Effect.sleep("1500 millis")
        // Down: inserts were tried and refused, nothing is stored, the checkpoint did not move.
        expect(storage.refused).toBeGreaterThan(0)
        expect((yield* stored).rows).toHaveLength(0)
        expect(yield* log.resumePosition("processor", shardId)).toMatchObject({ _tag: "TrimHorizon" })
        // Ingestion keeps being accepted by the stream meanwhile.
        yield* log.append(Array.from({ length: 50 }, (_, i) => record(50 + i)))

        storage.down = false
        const deadline = Date.now() + 30_000
        let rows = (yield* stored).rows
        while (rows.length < 100 && Date.now() < deadline) {
          yield* Effect.sleep("100 millis")
          rows = (yield* stored).rows
        }
        expect(rows.map((r) => r.msgId)).toEqual(Array.from({ length: 100 }, (_, i) => `m${i}`))
      }).pipe(
        Effect.provide(
          Processor.layerWith({ ...ProcessorConfig.defaults, flushIntervalMs: 20 }).pipe(
            Layer.provideMerge(infra),
          ),
        ),
      )
    },
  )
})
