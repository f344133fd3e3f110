/**
 * Behaviour only the embedded log has: the disk budget, retention by age bounded by the processor
 * applications' lease checkpoints, durability settings.
 */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer } from "effect"
import { ShardLeases } from "../../src/stream/ShardLeases.js"
import * as SqliteShardLeases from "../../src/stream/SqliteShardLeases.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { Position, StreamLog } from "../../src/stream/StreamLog.js"
import { application } from "./applications.js"
import { readN } from "./contract.js"

const fresh = () => mkdtempSync(join(tmpdir(), "sluice-sqlite-"))
const record = (partitionKey: string, size: number) => ({ partitionKey, data: new Uint8Array(size).fill(7) })

describe("embedded log", () => {
  it.scopedLive("refuses appends with StreamFull at its disk budget and keeps what it has", () =>
    Effect.gen(function* () {
      const log = yield* StreamLog
      // 10 records of ~1 KB fill a 10 KB budget.
      const acks = yield* log.append(Array.from({ length: 9 }, () => record("d", 1000)))
      const full = yield* Effect.either(log.append([record("d", 2000)]))
      expect(Either.isLeft(full) && full.left._tag).toBe("StreamFull")
      if (Either.isLeft(full) && full.left._tag === "StreamFull")
        expect(full.left.retryAfterMs).toBeGreaterThan(0)
      const reader = yield* log.reader(acks[0]!.shardId, Position.TrimHorizon())
      expect(yield* readN(reader, 9)).toHaveLength(9)
    }).pipe(
      Effect.provide(SqliteStreamLog.layerWith({ ...SqliteStreamLog.defaults(fresh()), maxBytes: 10_000 })),
    ),
  )

  it.scopedLive("at its budget frees only records every processor application has checkpointed", () => {
    const dataDir = fresh()
    return Effect.gen(function* () {
      const log = yield* StreamLog
      const shards = yield* log.listShards
      const fast = yield* application(dataDir, "fast", shards)
      const slow = yield* application(dataDir, "slow", shards)
      const acks = yield* log.append(Array.from({ length: 9 }, () => record("d", 1000)))
      const shardId = acks[0]!.shardId
      yield* fast.processed(shardId, acks[8]!.sequenceNumber)
      yield* slow.processed(shardId, acks[4]!.sequenceNumber)
      // "slow" still needs records 5..8, so only 0..4 may go: room for 5 KB, not for 6 KB.
      expect(Either.isRight(yield* Effect.either(log.append([record("d", 4900)])))).toBe(true)
      const next = yield* Effect.either(log.append([record("d", 2000)]))
      expect(Either.isLeft(next) && next.left._tag).toBe("StreamFull")
      const reader = yield* log.reader(shardId, yield* slow.startPosition(shardId))
      const rest = yield* readN(reader, 5)
      expect(rest.map((r) => r.sequenceNumber)).toEqual([
        ...acks.slice(5).map((a) => a.sequenceNumber),
        expect.any(String),
      ])
    }).pipe(
      Effect.provide(SqliteStreamLog.layerWith({ ...SqliteStreamLog.defaults(dataDir), maxBytes: 10_000 })),
    )
  })

  it.scopedLive("trims records older than the retention, and sequence numbers never repeat after", () => {
    const dataDir = fresh()
    const settings = { ...SqliteStreamLog.defaults(dataDir), retentionMs: 300, trimIntervalMs: 50 }
    return Effect.gen(function* () {
      const old = yield* Effect.provide(
        Effect.gen(function* () {
          const log = yield* StreamLog
          const acks = yield* log.append(Array.from({ length: 5 }, () => record("r", 10)))
          yield* Effect.sleep("600 millis")
          const reader = yield* log.reader(acks[0]!.shardId, Position.TrimHorizon())
          const batch = yield* reader.pull()
          expect(batch.records).toHaveLength(0)
          return acks
        }),
        SqliteStreamLog.layerWith(settings),
      )
      // After a restart with every row trimmed, the shard keeps counting from its high-water mark.
      const next = yield* Effect.provide(
        Effect.flatMap(StreamLog, (log) => log.append([record("r", 10)])),
        SqliteStreamLog.layerWith(settings),
      )
      expect(BigInt(next[0]!.sequenceNumber)).toBeGreaterThan(BigInt(old[4]!.sequenceNumber))
    })
  })

  it.scopedLive("never expires records in a shard a processor application has no lease of yet", () => {
    const dataDir = fresh()
    return Effect.gen(function* () {
      const log = yield* StreamLog
      const acks = yield* log.append(Array.from({ length: 6 }, () => record("slow", 10)))
      const shardId = acks[0]!.shardId
      // The application has leases, all processed, but none of this shard (a shard it has not
      // taken up yet): it may still start there from the oldest record.
      const others = (yield* log.listShards).filter((s) => s.shardId !== shardId)
      const app = yield* application(dataDir, "processor", others)
      for (const other of others) yield* app.processed(other.shardId, acks[5]!.sequenceNumber)
      yield* Effect.sleep("600 millis")
      const reader = yield* log.reader(shardId, Position.TrimHorizon())
      const left = yield* reader.pull()
      expect(left.records.map((r) => r.sequenceNumber)).toEqual(acks.map((a) => a.sequenceNumber))
    }).pipe(
      Effect.provide(
        SqliteStreamLog.layerWith({
          ...SqliteStreamLog.defaults(dataDir),
          retentionMs: 300,
          trimIntervalMs: 50,
        }),
      ),
    )
  })

  it.scopedLive("never expires records a processor application's leases have not checkpointed", () => {
    const dataDir = fresh()
    return Effect.gen(function* () {
      const log = yield* StreamLog
      const leases = yield* ShardLeases
      const acks = yield* log.append(Array.from({ length: 6 }, () => record("slow", 10)))
      const shardId = acks[0]!.shardId
      const shards = yield* log.listShards
      yield* leases.ensure(shards, { _tag: "TrimHorizon" })
      const lease = (yield* leases.list).find((l) => l.shardId === shardId)!
      const mine = yield* leases.take(lease, "worker-1")
      // The application got through record 2 only; every other shard's lease is at TrimHorizon.
      yield* leases.checkpoint(mine, { _tag: "AfterSequence", sequenceNumber: acks[2]!.sequenceNumber })
      yield* Effect.sleep("600 millis")
      const reader = yield* log.reader(shardId, Position.TrimHorizon())
      const left = yield* reader.pull()
      expect(left.records.map((r) => r.sequenceNumber)).toEqual(acks.slice(3).map((a) => a.sequenceNumber))
    }).pipe(
      Effect.provide(
        Layer.merge(
          SqliteStreamLog.layerWith({
            ...SqliteStreamLog.defaults(dataDir),
            retentionMs: 300,
            trimIntervalMs: 50,
          }),
          SqliteShardLeases.layerWith({ dataDir, application: "processor", fsync: false }),
        ),
      ),
    )
  })

  it.scopedLive("keeps the shard count it was created with", () => {
    const dataDir = fresh()
    return Effect.gen(function* () {
      yield* Effect.provide(
        Effect.void,
        SqliteStreamLog.layerWith({ ...SqliteStreamLog.defaults(dataDir), shardCount: 2 }),
      )
      const shards = yield* Effect.provide(
        Effect.flatMap(StreamLog, (log) => log.listShards),
        SqliteStreamLog.layerWith({ ...SqliteStreamLog.defaults(dataDir), shardCount: 8 }),
      )
      expect(shards).toHaveLength(2)
    })
  })
})
