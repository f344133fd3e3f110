/**
 * The Kinesis shard reader against a scripted ReadApi: pacing, buffering, iterator expiry and
 * throttling, which the emulators never produce on demand (iterators expire after 5 minutes).
 */
import type { _Record } from "@aws-sdk/client-kinesis"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Either, Fiber, TestClock } from "effect"
import { AwsError } from "../../src/stream/kinesisClient.js"
import { openReader, type ReadApi } from "../../src/stream/kinesisReader.js"
import { Position, type ReadBatch, type ReadLimits, type ShardReader } from "../../src/stream/StreamLog.js"

const SHARD = "shardId-000000000000"
const failure = (name: string, message = name) => new AwsError({ name, message, fault: "client" })

/**
 * One shard of `count` records (sequence numbers 100, 101, ...; 100 bytes each; arrivals 1 s
 * apart). Iterators are `at:<index>`; `failNext` queues errors for the next GetRecords calls.
 */
const fakeShard = (count: number, options: { closed?: boolean } = {}) => {
  const records: Array<_Record> = Array.from({ length: count }, (_, i) => ({
    SequenceNumber: String(100 + i),
    PartitionKey: "k",
    Data: new Uint8Array(100).fill(i),
    ApproximateArrivalTimestamp: new Date(1_000_000 + i * 1_000),
  }))
  const getRecordsAt: Array<number> = []
  const iteratorRequests: Array<string> = []
  const failNext: Array<AwsError> = []
  const api: ReadApi = {
    getShardIterator: (input) =>
      Effect.sync(() => {
        iteratorRequests.push(`${input.ShardIteratorType} ${input.StartingSequenceNumber ?? ""}`.trim())
        const after = records.findIndex((r) => r.SequenceNumber === input.StartingSequenceNumber)
        return { ShardIterator: `at:${input.ShardIteratorType === "AFTER_SEQUENCE_NUMBER" ? after + 1 : 0}` }
      }),
    getRecords: (input) =>
      Effect.gen(function* () {
        getRecordsAt.push(yield* Clock.currentTimeMillis)
        const error = failNext.shift()
        if (error !== undefined) return yield* error
        const from = Number(input.ShardIterator!.slice(3))
        const page = records.slice(from, from + (input.Limit ?? 10_000))
        const next = from + page.length
        return {
          Records: page,
          NextShardIterator: options.closed && next >= records.length ? undefined : `at:${next}`,
          MillisBehindLatest: next >= records.length ? 0 : 5_000,
        }
      }),
  }
  return { api, getRecordsAt, iteratorRequests, failNext }
}

/** Pulls with the test clock running, so the reader's pacing and backoff sleeps elapse. */
const pull = (reader: ShardReader, limits?: ReadLimits) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(Effect.either(reader.pull(limits)))
    yield* TestClock.adjust("1 minute")
    return yield* Fiber.join(fiber)
  })
const seqs = (batch: Either.Either<ReadBatch, unknown>) =>
  Either.getOrThrow(batch).records.map((r) => r.sequenceNumber)

describe("kinesisReader", () => {
  it.effect("serves an oversized response over several pulls and spaces GetRecords 200 ms apart", () =>
    Effect.gen(function* () {
      const shard = fakeShard(10)
      const reader = yield* openReader(shard.api, SHARD, Position.TrimHorizon())
      const limits = { maxRecords: 6, maxBytes: 250 }
      expect(seqs(yield* pull(reader, limits))).toEqual(["100", "101"])
      expect(seqs(yield* pull(reader, limits))).toEqual(["102", "103"])
      const third = Either.getOrThrow(yield* pull(reader, limits))
      expect(third.records.map((r) => r.sequenceNumber)).toEqual(["104", "105"])
      // The response held 6 records; the last returned is behind by MillisBehindLatest + 0 s.
      expect(third.behindLatestMs).toBe(5_000)
      expect(shard.getRecordsAt).toHaveLength(1)
      expect(seqs(yield* pull(reader, limits))).toEqual(["106", "107"])
      expect(shard.getRecordsAt).toHaveLength(2)
      expect(shard.getRecordsAt[1]! - shard.getRecordsAt[0]!).toBeGreaterThanOrEqual(200)
    }),
  )

  it.effect("after an expired iterator, continues right after the last record it fetched", () =>
    Effect.gen(function* () {
      const shard = fakeShard(6)
      const reader = yield* openReader(shard.api, SHARD, Position.TrimHorizon())
      expect(seqs(yield* pull(reader, { maxRecords: 3, maxBytes: 1_000_000 }))).toEqual(["100", "101", "102"])
      shard.failNext.push(failure("ExpiredIteratorException"))
      expect(seqs(yield* pull(reader))).toEqual(["103", "104", "105"])
      expect(shard.iteratorRequests).toEqual(["TRIM_HORIZON", "AFTER_SEQUENCE_NUMBER 102"])

      // Nothing fetched yet: back to the reader's own position.
      const fresh = fakeShard(2)
      const first = yield* openReader(fresh.api, SHARD, Position.TrimHorizon())
      fresh.failNext.push(failure("ExpiredIteratorException"))
      expect(seqs(yield* pull(first))).toEqual(["100", "101"])
      expect(fresh.iteratorRequests).toEqual(["TRIM_HORIZON", "TRIM_HORIZON"])
    }),
  )

  it.effect("backs off on throttling, and gives up with StreamUnavailable", () =>
    Effect.gen(function* () {
      const shard = fakeShard(3)
      const reader = yield* openReader(shard.api, SHARD, Position.TrimHorizon())
      shard.failNext.push(
        failure("ProvisionedThroughputExceededException"),
        failure("ProvisionedThroughputExceededException"),
      )
      expect(seqs(yield* pull(reader))).toHaveLength(3)
      const [first, second, third] = shard.getRecordsAt
      expect(second! - first!).toBeGreaterThanOrEqual(200) // max(backoff of at least 100 ms, the 200 ms spacing)
      expect(third! - second!).toBeGreaterThanOrEqual(200) // second backoff: at least half of 400 ms

      const throttled = fakeShard(3)
      const stuck = yield* openReader(throttled.api, SHARD, Position.TrimHorizon())
      throttled.failNext.push(
        ...Array.from({ length: 50 }, () => failure("ProvisionedThroughputExceededException")),
      )
      const result = yield* pull(stuck)
      expect(Either.isLeft(result) && result.left._tag).toBe("StreamUnavailable")
      expect(throttled.getRecordsAt.length).toBeGreaterThan(3)
      expect(throttled.getRecordsAt.length).toBeLessThan(50)
    }),
  )

  it.effect("reports the end of a closed shard only once its buffered records are returned", () =>
    Effect.gen(function* () {
      const shard = fakeShard(5, { closed: true })
      const reader = yield* openReader(shard.api, SHARD, Position.TrimHorizon())
      const limits = { maxRecords: 3, maxBytes: 1_000_000 }
      const first = Either.getOrThrow(yield* pull(reader, limits))
      expect([first.records.length, first.endOfShard]).toEqual([3, false])
      const second = Either.getOrThrow(yield* pull(reader, limits))
      expect([second.records.length, second.endOfShard]).toEqual([2, true])
      const after = Either.getOrThrow(yield* pull(reader, limits))
      expect([after.records.length, after.endOfShard]).toEqual([0, true])
      expect(shard.getRecordsAt).toHaveLength(2)
    }),
  )

  it.effect("maps the backends' error wording to the contract's errors", () =>
    Effect.gen(function* () {
      const openWith = (error: AwsError, position: Position) =>
        Effect.gen(function* () {
          const api: ReadApi = { getShardIterator: () => Effect.fail(error), getRecords: () => Effect.never }
          const result = yield* Effect.either(openReader(api, SHARD, position))
          return Either.isLeft(result) ? result.left._tag : "opened"
        })
      const at = Position.AtSequence({ sequenceNumber: "123" })
      const cases: Array<[AwsError, Position, string]> = [
        [
          failure("ResourceNotFoundException", `Could not find shardId ${SHARD} in stream s`),
          at,
          "UnknownShard",
        ],
        [
          failure("ResourceNotFoundException", `Shard ${SHARD} in stream s under account 0 does not exist`),
          at,
          "UnknownShard",
        ],
        [
          failure("ValidationException", "1 validation error detected: Value at 'shardId' failed"),
          at,
          "UnknownShard",
        ],
        [
          failure("ResourceNotFoundException", "Unable to find record with provided SequenceNumber"),
          at,
          "PositionPastEnd",
        ],
        [
          failure("InvalidArgumentException", "StartingSequenceNumber 123 used in ... is invalid."),
          at,
          "PositionPastEnd",
        ],
        [
          failure("InvalidArgumentException", "Invalid StartingSequenceNumber. It encodes shardId-1"),
          at,
          "PositionPastEnd",
        ],
        [
          failure("ResourceNotFoundException", "Stream arn:aws:kinesis:...:stream/s not found"),
          at,
          "StreamUnavailable",
        ],
        [failure("AccessDeniedException", "no"), Position.TrimHorizon(), "StreamUnavailable"],
      ]
      for (const [error, position, expected] of cases) expect(yield* openWith(error, position)).toBe(expected)
      expect(yield* openWith(failure("X"), Position.AfterSequence({ sequenceNumber: "12abc" }))).toBe(
        "MalformedSequenceNumber",
      )
      const local = yield* Effect.either(
        openReader(fakeShard(1).api, "no-such-shard", Position.TrimHorizon()),
      )
      expect(Either.isLeft(local) && local.left._tag).toBe("UnknownShard")
    }),
  )
})
