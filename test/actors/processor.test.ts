/**
 * The processing tier against real parts: the embedded log, chDB, the demo configuration. Records
 * go into the stream as ingress writes them; the test watches what lands in ClickHouse.
 */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import * as LiveFeedLayer from "../../src/actors/LiveFeed.js"
import { LiveFeed } from "../../src/actors/LiveFeed.js"
import * as Processor from "../../src/actors/Processor.js"
import * as ProcessorConfig from "../../src/actors/ProcessorConfig.js"
import * as Metrics from "../../src/observability/Metrics.js"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import { TelemetryStore } from "../../src/storage/TelemetryStore.js"
import { ShardLeases } from "../../src/stream/ShardLeases.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { StreamLog } from "../../src/stream/StreamLog.js"
import * as ConfigFile from "../../src/tenancy/ConfigFile.js"
import { encodeEnvelope, partitionKeyOf } from "../../src/tenancy/Envelope.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"
import { embeddedLeases, leaseCheckpoint, rawStreamSql } from "../support/leases.js"
import { polling } from "../support/polling.js"

const demo = await Effect.runPromise(ConfigFile.load(join(import.meta.dirname, "../../config/demo.yaml")))
const T0 = Date.UTC(2026, 0, 1)
const range = { from: T0 - 3600_000, to: T0 + 3600_000 }

const envelope = (deviceId: string, payload: unknown, receivedAt = T0) => {
  const device = Option.getOrThrow(
    Tenancy.fromConfig(demo).device(deviceId.startsWith("other") ? "other" : "demo", deviceId),
  )
  return {
    partitionKey: partitionKeyOf(device.tenantId, deviceId),
    data: encodeEnvelope(
      { tenantId: device.tenantId, deviceId, deviceClass: device.deviceClass, receivedAt },
      Buffer.from(typeof payload === "string" ? payload : JSON.stringify(payload)),
    ),
  }
}
const reading = (i: number) => ({ id: `m${i}`, ts: T0 + i * 1000, temp_f: 68 + i / 10, humidity: 40 })

const layers = (
  dirs: { stream: string; chdb: string },
  processor: Partial<ProcessorConfig.ProcessorConfig> = {},
) => {
  const infra = Layer.mergeAll(
    SqliteStreamLog.layerWith(SqliteStreamLog.defaults(dirs.stream)),
    ClickHouseTelemetryStore.layerWith(ClickHouseTelemetryStore.embedded(dirs.chdb)),
    Tenancy.layer(demo),
    LiveFeedLayer.layer,
    Metrics.layer,
  )
  return Processor.layerWith({
    ...ProcessorConfig.defaults,
    flushIntervalMs: 20,
    checkpointIntervalMs: 50,
    dataDir: dirs.stream,
    ...processor,
  }).pipe(
    Layer.provideMerge(infra),
    Layer.provideMerge(embeddedLeases(dirs.stream, processor.consumer ?? "processor")),
  )
}

/** Polls the store until `check` holds, bounded in time. */
const eventually = polling({ timeoutMs: 20_000, intervalMs: 50 })

const history = (tenantId: string, deviceId: string) =>
  Effect.flatMap(TelemetryStore, (s) => s.history(tenantId, deviceId, range, { limit: 1000 }))

describe("processor", () => {
  const dirs = () => ({
    stream: mkdtempSync(join(tmpdir(), "sluice-proc-stream-")),
    chdb: mkdtempSync(join(tmpdir(), "sluice-proc-chdb-")),
  })

  it.scopedLive(
    "stores every reading once, in order, dead-letters bad ones, and checkpoints after storing",
    () => {
      const d = dirs()
      return Effect.gen(function* () {
        const log = yield* StreamLog
        const live = yield* LiveFeed
        const feed = yield* live.subscribe("demo", "thermo-1")
        const sent = Array.from({ length: 50 }, (_, i) => envelope("thermo-1", reading(i)))
        const acks = yield* log.append([
          ...sent.slice(0, 25),
          envelope("thermo-1", reading(5)), // a redelivered message id: dropped
          envelope("thermo-1", "{not json"), // malformed: dead letter
          envelope("thermo-1", { id: "bad-humidity", ts: T0, temp_f: 70, humidity: 140 }), // out of range
          envelope("thermo-2", [reading(1), reading(2)]), // an array: two readings
          envelope("other-thermo-1", reading(7)), // another tenant
          ...sent.slice(25),
        ])
        const stored = yield* eventually(history("demo", "thermo-1"), (p) => p.rows.length >= 50)
        expect(stored.rows.map((r) => r.msgId)).toEqual(Array.from({ length: 50 }, (_, i) => `m${i}`))
        expect(stored.rows[10]!.values.temperature).toBeCloseTo((69 - 32) / 1.8, 6)
        expect(stored.rows[10]!.values.battery).toBe(100) // the class default
        expect((yield* history("demo", "thermo-2")).rows.map((r) => r.msgId)).toEqual(["m1", "m2"])
        expect((yield* history("other", "other-thermo-1")).rows).toHaveLength(1)
        expect((yield* history("demo", "other-thermo-1")).rows).toHaveLength(0)

        const dead = yield* eventually(
          Effect.flatMap(TelemetryStore, (s) => s.deadLetters("demo", 10)),
          (rows) => rows.length >= 2,
        )
        expect(dead.map((d) => d.reason).sort()).toEqual([
          expect.stringContaining("humidity"),
          expect.stringContaining("not valid JSON"),
        ])
        expect(dead.find((d) => d.reason.includes("JSON"))!.raw).toBe("{not json")

        // Live subscribers got thermo-1's readings only.
        const firstLive = yield* feed.take
        expect(firstLive.deviceId).toBe("thermo-1")

        // The lease's checkpoint reached the last record of thermo-1's shard once everything was stored.
        const shardId = acks.at(-1)!.shardId
        const lastInShard = acks.filter((a) => a.shardId === shardId).at(-1)!.sequenceNumber
        const leases = yield* ShardLeases
        const position = yield* eventually(
          leaseCheckpoint(shardId).pipe(Effect.provideService(ShardLeases, leases)),
          (p) => p._tag === "AfterSequence" && p.sequenceNumber === lastInShard,
        )
        expect(position).toMatchObject({ _tag: "AfterSequence", sequenceNumber: lastInShard })
      }).pipe(Effect.provide(layers(d)))
    },
  )

  it.scopedLive("resumes after a restart without storing anything twice, and replays idempotently", () => {
    const d = dirs()
    const count = (n: number) => eventually(history("demo", "thermo-3"), (p) => p.rows.length >= n)
    return Effect.gen(function* () {
      yield* Effect.scoped(
        Effect.gen(function* () {
          const log = yield* StreamLog
          yield* log.append(Array.from({ length: 20 }, (_, i) => envelope("thermo-3", reading(i))))
          expect((yield* count(20)).rows).toHaveLength(20)
        }).pipe(Effect.provide(layers(d))),
      )
      // Restart: the processor resumes after its checkpoint.
      yield* Effect.scoped(
        Effect.gen(function* () {
          const log = yield* StreamLog
          const acks = yield* log.append(
            Array.from({ length: 10 }, (_, i) => envelope("thermo-3", reading(20 + i))),
          )
          expect((yield* count(30)).rows).toHaveLength(30)
          return acks
        }).pipe(Effect.provide(layers(d))),
      )
      // Replay the whole stream from the start (an operator deletes the application's leases;
      // the next start recreates them at the trim horizon): nothing is stored twice.
      rawStreamSql(d.stream, "DELETE FROM leases WHERE application = 'processor'")
      yield* Effect.scoped(
        Effect.gen(function* () {
          const log = yield* StreamLog
          yield* log.append([envelope("thermo-3", reading(30))])
          const page = yield* count(31)
          yield* Effect.sleep("300 millis")
          const again = yield* history("demo", "thermo-3")
          expect(page.rows).toHaveLength(31)
          expect(again.rows).toHaveLength(31)
          expect(new Set(again.rows.map((r) => r.msgId)).size).toBe(31)
        }).pipe(Effect.provide(layers(d))),
      )
    })
  })

  it.scopedLive(
    "a new consumer application starts at the oldest record, or at the newest when told so",
    () => {
      const d = dirs()
      const late = { ...d, chdb: mkdtempSync(join(tmpdir(), "sluice-proc-chdb-late-")) }
      return Effect.gen(function* () {
        // Records in the stream before any processor ran.
        yield* Effect.flatMap(StreamLog, (log) =>
          log.append(Array.from({ length: 5 }, (_, i) => envelope("thermo-2", reading(i)))),
        ).pipe(Effect.provide(SqliteStreamLog.layerWith(SqliteStreamLog.defaults(d.stream))))
        // Default (TRIM_HORIZON): all of them.
        yield* Effect.scoped(
          Effect.gen(function* () {
            const stored = yield* eventually(history("demo", "thermo-2"), (p) => p.rows.length >= 5)
            expect(stored.rows.map((r) => r.msgId)).toEqual(["m0", "m1", "m2", "m3", "m4"])
          }).pipe(Effect.provide(layers(d))),
        )
        // Another application told `latest`: only what arrives after its leases were made.
        yield* Effect.scoped(
          Effect.gen(function* () {
            const log = yield* StreamLog
            yield* log.append([envelope("thermo-2", reading(5))])
            const stored = yield* eventually(history("demo", "thermo-2"), (p) => p.rows.length >= 1)
            yield* Effect.sleep("300 millis")
            expect((yield* history("demo", "thermo-2")).rows.map((r) => r.msgId)).toEqual(["m5"])
            expect(stored.rows).toHaveLength(1)
          }).pipe(Effect.provide(layers(late, { consumer: "late", initialPosition: { _tag: "Latest" } }))),
        )
      })
    },
  )
})
