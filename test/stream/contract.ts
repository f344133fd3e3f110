/**
 * The StreamLog contract suite. Every backend runs it; a backend that passes is usable by
 * everything downstream. `open(env)` builds the backend over storage named by `env`: calling it
 * twice with the same env is a restart of the same stream.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, type Layer, type Scope } from "effect"
import { compareSequenceNumbers, hashKey } from "../../src/stream/Shards.js"
import {
  type Appended,
  type AppendRecord,
  Position,
  type ReadLimits,
  type ShardReader,
  StreamLog,
  type StreamRecord,
} from "../../src/stream/StreamLog.js"

export interface ContractEnv {
  readonly id: string
}

export interface ContractOptions {
  /** A fresh, isolated stream for one test. */
  readonly env: () => ContractEnv
  readonly open: (env: ContractEnv) => Layer.Layer<StreamLog, unknown>
}

const bytes = (text: string) => new TextEncoder().encode(text)
const text = (data: Uint8Array) => new TextDecoder().decode(data)
const record = (partitionKey: string, body: string): AppendRecord => ({ partitionKey, data: bytes(body) })

/** Pulls until `count` records arrived (emulators may deliver over several calls), bounded in time. */
export const readN = (reader: ShardReader, count: number, limits?: ReadLimits) =>
  Effect.gen(function* () {
    const out: Array<StreamRecord> = []
    const deadline = Date.now() + 20_000
    while (out.length < count && Date.now() < deadline) {
      const batch = yield* reader.pull(limits)
      out.push(...batch.records)
      if (batch.records.length === 0) yield* Effect.sleep("50 millis")
    }
    return out
  })

/** Reads `count` records of a shard from a position in a fresh scope. */
const readFrom = (shardId: string, position: Position, count: number) =>
  Effect.scoped(
    Effect.flatMap(StreamLog, (log) => Effect.flatMap(log.reader(shardId, position), (r) => readN(r, count))),
  )

export const streamLogContract = (name: string, options: ContractOptions) =>
  describe(`StreamLog contract: ${name}`, () => {
    const run = <A, E>(effect: Effect.Effect<A, E, StreamLog | Scope.Scope>, env = options.env()) =>
      Effect.provide(Effect.scoped(effect), options.open(env))

    it.scopedLive("appends and reads back every record in order, byte for byte", () =>
      run(
        Effect.gen(function* () {
          const log = yield* StreamLog
          const sent = Array.from({ length: 20 }, (_, i) =>
            record("device-1", `message ${i} ${"x".repeat(i)}`),
          )
          const acks = yield* log.append(sent)
          expect(acks).toHaveLength(20)
          const shardId = acks[0]!.shardId
          expect(acks.every((a) => a.shardId === shardId)).toBe(true)
          for (let i = 1; i < acks.length; i++) {
            expect(compareSequenceNumbers(acks[i - 1]!.sequenceNumber, acks[i]!.sequenceNumber)).toBe(-1)
          }
          const got = yield* readFrom(shardId, Position.TrimHorizon(), 20)
          expect(got.map((r) => text(r.data))).toEqual(sent.map((r) => text(r.data)))
          expect(got.map((r) => r.sequenceNumber)).toEqual(acks.map((a) => a.sequenceNumber))
          expect(got.every((r) => r.partitionKey === "device-1")).toBe(true)
        }),
      ),
    )

    it.scopedLive("maps a partition key to the shard whose hash-key range holds its MD5", () =>
      run(
        Effect.gen(function* () {
          const log = yield* StreamLog
          const shards = yield* log.listShards
          expect(shards.length).toBeGreaterThan(1)
          const keys = Array.from({ length: 40 }, (_, i) => `device-${i}`)
          const acks = yield* log.append(keys.map((k) => record(k, k)))
          keys.forEach((key, i) => {
            const shard = shards.find((s) => s.shardId === acks[i]!.shardId)!
            const h = hashKey(key)
            expect(shard.hashKeyStart <= h && h <= shard.hashKeyEnd).toBe(true)
          })
          expect(new Set(acks.map((a) => a.shardId)).size).toBeGreaterThan(1)
        }),
      ),
    )

    it.scopedLive("keeps each key's order under many concurrent appenders", () =>
      run(
        Effect.gen(function* () {
          const log = yield* StreamLog
          const appenders = 50
          const perAppender = 6
          const acks = yield* Effect.forEach(
            Array.from({ length: appenders }, (_, a) => a),
            (a) =>
              Effect.forEach(
                Array.from({ length: perAppender }, (_, i) => i),
                (i) => Effect.map(log.append([record(`dev-${a}`, `${a}:${i}`)]), (x) => x[0]!),
              ),
            { concurrency: "unbounded" },
          )
          const byShard = new Map<string, number>()
          for (const a of acks.flat()) byShard.set(a.shardId, (byShard.get(a.shardId) ?? 0) + 1)
          const all: Array<StreamRecord> = []
          for (const [shardId, n] of byShard)
            all.push(...(yield* readFrom(shardId, Position.TrimHorizon(), n)))
          expect(all).toHaveLength(appenders * perAppender)
          for (let a = 0; a < appenders; a++) {
            const mine = all.filter((r) => r.partitionKey === `dev-${a}`).map((r) => text(r.data))
            expect(mine).toEqual(Array.from({ length: perAppender }, (_, i) => `${a}:${i}`))
          }
        }),
      ),
    )

    it.scopedLive("reads from latest, at and after a sequence number, and at a timestamp", () =>
      run(
        Effect.gen(function* () {
          const log = yield* StreamLog
          const first = yield* log.append(Array.from({ length: 5 }, (_, i) => record("k", `a${i}`)))
          const shardId = first[0]!.shardId
          const latest = yield* log.reader(shardId, Position.Latest())
          yield* Effect.sleep("1100 millis")
          const between = Date.now()
          yield* Effect.sleep("1100 millis")
          const second = yield* log.append(Array.from({ length: 5 }, (_, i) => record("k", `b${i}`)))
          expect((yield* readN(latest, 5)).map((r) => text(r.data))).toEqual(["b0", "b1", "b2", "b3", "b4"])
          const at = yield* readFrom(
            shardId,
            Position.AtSequence({ sequenceNumber: first[3]!.sequenceNumber }),
            7,
          )
          expect(at.map((r) => text(r.data))).toEqual(["a3", "a4", "b0", "b1", "b2", "b3", "b4"])
          const after = yield* readFrom(
            shardId,
            Position.AfterSequence({ sequenceNumber: first[3]!.sequenceNumber }),
            6,
          )
          expect(after.map((r) => text(r.data))).toEqual(["a4", "b0", "b1", "b2", "b3", "b4"])
          const since = yield* readFrom(shardId, Position.AtTimestamp({ at: between }), 5)
          expect(since.map((r) => r.sequenceNumber)).toEqual(second.map((a) => a.sequenceNumber))
          expect(since.every((r) => r.arrivedAt >= between)).toBe(true)
        }),
      ),
    )

    it.scopedLive("bounds each pull by records and bytes, and the pulls add up to everything", () =>
      run(
        Effect.gen(function* () {
          const log = yield* StreamLog
          const acks = yield* log.append(
            Array.from({ length: 30 }, (_, i) => record("bounded", `${i}`.padEnd(100, "."))),
          )
          const reader = yield* log.reader(acks[0]!.shardId, Position.TrimHorizon())
          const byCount = yield* readN(reader, 1, { maxRecords: 7, maxBytes: 1_000_000 })
          expect(byCount.length).toBeGreaterThan(0)
          expect(byCount.length).toBeLessThanOrEqual(7)
          let seen = byCount.length
          while (seen < 30) {
            const batch = yield* reader.pull({ maxRecords: 1000, maxBytes: 350 })
            expect(batch.records.length).toBeLessThanOrEqual(3)
            seen += batch.records.length
            if (batch.records.length === 0) yield* Effect.sleep("50 millis")
          }
          expect(seen).toBe(30)
        }),
      ),
    )

    it.scopedLive("keeps its records across a restart: resumes after a position and replays from one", () => {
      const env = options.env()
      return Effect.gen(function* () {
        const acks = yield* run(
          Effect.flatMap(StreamLog, (log) =>
            log.append(Array.from({ length: 10 }, (_, i) => record("resume", `m${i}`))),
          ),
          env,
        )
        const shardId = acks[0]!.shardId
        // A new instance over the same storage: the restart. A processor resumes after the
        // sequence number its lease checkpoint holds; replay opens at a sequence number or a time.
        yield* run(
          Effect.gen(function* () {
            const resumed = yield* readFrom(
              shardId,
              Position.AfterSequence({ sequenceNumber: acks[4]!.sequenceNumber }),
              5,
            )
            expect(resumed.map((r) => text(r.data))).toEqual(["m5", "m6", "m7", "m8", "m9"])
            const replay = yield* readFrom(
              shardId,
              Position.AtSequence({ sequenceNumber: acks[1]!.sequenceNumber }),
              9,
            )
            expect(replay.map((r) => text(r.data))).toEqual([
              "m1",
              "m2",
              "m3",
              "m4",
              "m5",
              "m6",
              "m7",
              "m8",
              "m9",
            ])
            const all = yield* readFrom(shardId, Position.AtTimestamp({ at: 0 }), 10)
            expect(all.map((r) => r.sequenceNumber)).toEqual(acks.map((a) => a.sequenceNumber))
          }),
          env,
        )
      })
    })

    it.scopedLive("refuses bad input with typed, specific errors", () =>
      run(
        Effect.gen(function* () {
          const log = yield* StreamLog
          const acks: ReadonlyArray<Appended> = yield* log.append([record("errors", "one")])
          const shardId = acks[0]!.shardId
          const fail = <A, E extends { _tag: string }>(effect: Effect.Effect<A, E, Scope.Scope>) =>
            Effect.map(Effect.either(Effect.scoped(effect)), (e) =>
              Either.isLeft(e) ? e.left._tag : "succeeded",
            )
          expect(yield* fail(log.append([]))).toBe("EmptyBatch")
          expect(
            yield* fail(log.append([{ partitionKey: "big", data: new Uint8Array(1024 * 1024 + 1) }])),
          ).toBe("RecordTooLarge")
          expect(yield* fail(log.append([record("", "no key")]))).toBe("InvalidPartitionKey")
          expect(yield* fail(log.append([record("k".repeat(257), "long key")]))).toBe("InvalidPartitionKey")
          expect(yield* fail(log.reader("shardId-999999999999", Position.TrimHorizon()))).toBe("UnknownShard")
          expect(yield* fail(log.reader("no-such-shard", Position.TrimHorizon()))).toBe("UnknownShard")
          expect(yield* fail(log.reader(shardId, Position.AtSequence({ sequenceNumber: "12abc" })))).toBe(
            "MalformedSequenceNumber",
          )
          expect(
            yield* fail(log.reader(shardId, Position.AfterSequence({ sequenceNumber: "1".repeat(130) }))),
          ).toBe("MalformedSequenceNumber")
          const pastEnd = (BigInt(acks[0]!.sequenceNumber) + 10n ** 20n).toString()
          expect(yield* fail(log.reader(shardId, Position.AtSequence({ sequenceNumber: pastEnd })))).toBe(
            "PositionPastEnd",
          )
          expect(
            yield* fail(log.reader(shardId, Position.AfterSequence({ sequenceNumber: "not-a-number" }))),
          ).toBe("MalformedSequenceNumber")
          // Nothing else was lost: the good record is still there.
          const got = yield* readFrom(shardId, Position.TrimHorizon(), 1)
          expect(got.map((r) => text(r.data))).toEqual(["one"])
        }),
      ),
    )
  })
