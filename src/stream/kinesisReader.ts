/**
 * A ShardReader over GetShardIterator/GetRecords. The iterator is taken when the reader opens (so
 * LATEST means "after the open", not "after the first pull"); each pull makes at most one
 * GetRecords call, spaced to Kinesis's 5 calls per second per shard, and a response larger than
 * the pull's limits is kept and served by the next pulls, so memory stays bounded by one response.
 */
import type {
  GetRecordsInput,
  GetRecordsOutput,
  GetShardIteratorInput,
  ShardIteratorType,
} from "@aws-sdk/client-kinesis"
import { Clock, Effect, Random } from "effect"
import { type AwsError, isThrottling } from "./kinesisClient.js"
import { parseSequenceNumber } from "./Shards.js"
import {
  type MalformedSequenceNumber,
  PositionPastEnd,
  type ReadError,
  StreamUnavailable,
  UnknownShard,
} from "./StreamError.js"
import { defaultReadLimits, type Position, type ShardReader, type StreamRecord } from "./StreamLog.js"

/** Kinesis: 5 GetRecords calls per second per shard. */
const MIN_GET_RECORDS_INTERVAL_MS = 200
/** Kinesis: GetRecords returns at most 10,000 records. */
const MAX_GET_RECORDS = 10_000
const READ_BACKOFF_BASE_MS = 200
const READ_BACKOFF_MAX_MS = 5_000
const MAX_READ_ATTEMPTS = 8
/** Re-acquisitions of an expired iterator in one pull; more means something else is wrong. */
const MAX_REACQUIRES = 3

/**
 * The two calls a reader makes, bound to one stream. A parameter rather than the SDK client, so
 * expiry and throttling can be scripted in tests.
 */
export interface ReadApi {
  readonly getShardIterator: (
    input: Omit<GetShardIteratorInput, "StreamName" | "StreamARN">,
  ) => Effect.Effect<{ readonly ShardIterator?: string | undefined }, AwsError>
  readonly getRecords: (
    input: GetRecordsInput,
  ) => Effect.Effect<Pick<GetRecordsOutput, "Records" | "NextShardIterator" | "MillisBehindLatest">, AwsError>
}

/** Every real shard id has this shape; anything else is refused before a round trip. */
const SHARD_ID = /^shardId-\d{12}$/

/** Where to take an iterator, and which records to drop (a future AtTimestamp read from LATEST). */
interface Start {
  readonly type: ShardIteratorType
  readonly sequenceNumber?: string
  readonly timestamp?: Date
  readonly notBefore?: number
}

const startOf = (position: Position, now: number): Effect.Effect<Start, MalformedSequenceNumber> => {
  switch (position._tag) {
    case "TrimHorizon":
      return Effect.succeed({ type: "TRIM_HORIZON" })
    case "Latest":
      return Effect.succeed({ type: "LATEST" })
    case "AtTimestamp":
      // Kinesis refuses a timestamp in the future; from LATEST, dropping earlier arrivals is the same read.
      return Effect.succeed(
        position.at > now
          ? { type: "LATEST", notBefore: position.at }
          : { type: "AT_TIMESTAMP", timestamp: new Date(position.at) },
      )
    case "AtSequence":
    case "AfterSequence":
      return Effect.map(parseSequenceNumber(position.sequenceNumber), (sequenceNumber) => ({
        type: position._tag === "AtSequence" ? "AT_SEQUENCE_NUMBER" : "AFTER_SEQUENCE_NUMBER",
        sequenceNumber,
      }))
  }
}

/**
 * Maps a GetShardIterator/GetRecords failure to the contract. The emulators and AWS word these
 * differently: kinesis-mock "Could not find shardId ..." / "Unable to find record with provided
 * SequenceNumber ..."; kinesalite "Could not find shard ..." / "Shard ... does not exist" /
 * "StartingSequenceNumber ... is invalid" / "Invalid StartingSequenceNumber. It encodes shardId-...".
 */
const readError = (operation: string, shardId: string, sequenceNumber?: string) => (e: AwsError) => {
  if (
    (e.name === "ResourceNotFoundException" &&
      /Could not find shard|Shard \S+ .*does not exist/.test(e.message)) ||
    (e.name === "ValidationException" && /shard/i.test(e.message))
  ) {
    return new UnknownShard({ shardId })
  }
  if (
    sequenceNumber !== undefined &&
    ((e.name === "ResourceNotFoundException" && /Unable to find record/.test(e.message)) ||
      (e.name === "InvalidArgumentException" && /StartingSequenceNumber/.test(e.message)))
  ) {
    return new PositionPastEnd({ shardId, sequenceNumber })
  }
  return new StreamUnavailable({ operation, reason: e.reason })
}

const isFutureTimestamp = (e: AwsError) =>
  e.name === "InvalidArgumentException" && /future|cannot be greater than the current/i.test(e.message)

/** Takes an iterator at `start`; a timestamp the server finds in the future falls back to LATEST. */
const shardIterator = (api: ReadApi, shardId: string, start: Start) =>
  Effect.gen(function* () {
    if (!SHARD_ID.test(shardId)) return yield* new UnknownShard({ shardId })
    const request = (s: Start) =>
      api.getShardIterator({
        ShardId: shardId,
        ShardIteratorType: s.type,
        StartingSequenceNumber: s.sequenceNumber,
        Timestamp: s.timestamp,
      })
    const fallback: Start = { type: "LATEST", notBefore: start.timestamp?.getTime() ?? 0 }
    const { start: used, out } = yield* request(start).pipe(
      Effect.map((out) => ({ start, out })),
      Effect.catchIf(isFutureTimestamp, () =>
        Effect.map(request(fallback), (out) => ({ start: fallback, out })),
      ),
      Effect.mapError(readError("reader", shardId, start.sequenceNumber)),
    )
    return { start: used, iterator: out.ShardIterator }
  })

/** Opens a reader at `position`. */
export const openReader = (
  api: ReadApi,
  shardId: string,
  position: Position,
): Effect.Effect<ShardReader, ReadError> =>
  Effect.gen(function* () {
    const opened = yield* shardIterator(
      api,
      shardId,
      yield* startOf(position, yield* Clock.currentTimeMillis),
    )
    const origin = opened.start
    let notBefore = origin.notBefore
    // undefined once the shard is closed and its last records were fetched.
    let iterator = opened.iterator
    let buffer: Array<StreamRecord> = []
    let head = 0
    let lastFetched: string | undefined
    let lastCallAt = Number.NEGATIVE_INFINITY
    let behindLatestMs = 0
    let newestArrival = 0
    const mutex = yield* Effect.makeSemaphore(1)

    // After an expiry, continue right after what was fetched, or from the original position.
    const reacquire = Effect.suspend(() =>
      Effect.map(
        shardIterator(
          api,
          shardId,
          lastFetched === undefined ? origin : { type: "AFTER_SEQUENCE_NUMBER", sequenceNumber: lastFetched },
        ),
        (r) => r.iterator,
      ),
    )

    const fetch = (limit: number) =>
      Effect.gen(function* () {
        let throttled = 0
        let reacquired = 0
        while (iterator !== undefined) {
          const wait = lastCallAt + MIN_GET_RECORDS_INTERVAL_MS - (yield* Clock.currentTimeMillis)
          if (wait > 0) yield* Effect.sleep(wait)
          lastCallAt = yield* Clock.currentTimeMillis
          const current = iterator
          const result = yield* Effect.either(api.getRecords({ ShardIterator: current, Limit: limit }))
          if (result._tag === "Right") {
            const out = result.right
            const records: Array<StreamRecord> = []
            for (const r of out.Records ?? []) {
              const arrivedAt = r.ApproximateArrivalTimestamp?.getTime() ?? lastCallAt
              lastFetched = r.SequenceNumber ?? lastFetched
              newestArrival = arrivedAt
              if (notBefore !== undefined && arrivedAt < notBefore) continue
              notBefore = undefined
              records.push({
                shardId,
                sequenceNumber: r.SequenceNumber ?? "",
                partitionKey: r.PartitionKey ?? "",
                data: r.Data ?? new Uint8Array(),
                arrivedAt,
              })
            }
            buffer = records
            head = 0
            iterator = out.NextShardIterator ?? undefined
            behindLatestMs = out.MillisBehindLatest ?? 0
            return
          }
          const e = result.left
          if (e.name === "ExpiredIteratorException" && reacquired < MAX_REACQUIRES) {
            reacquired++
            iterator = yield* reacquire
          } else if (isThrottling(e.name) && throttled < MAX_READ_ATTEMPTS) {
            throttled++
            const nominal = Math.min(READ_BACKOFF_MAX_MS, READ_BACKOFF_BASE_MS * 2 ** (throttled - 1))
            yield* Effect.sleep(Math.round(nominal / 2 + ((yield* Random.next) * nominal) / 2))
          } else {
            return yield* readError("pull", shardId)(e)
          }
        }
      })

    const pull: ShardReader["pull"] = Effect.fn("KinesisStreamLog.pull")(function* (
      limits = defaultReadLimits,
    ) {
      return yield* mutex.withPermits(1)(
        Effect.gen(function* () {
          if (head >= buffer.length && iterator !== undefined) {
            yield* fetch(Math.min(Math.max(1, limits.maxRecords), MAX_GET_RECORDS))
          }
          const records: Array<StreamRecord> = []
          let bytes = 0
          while (head < buffer.length && records.length < limits.maxRecords) {
            const next = buffer[head]!
            bytes += next.data.byteLength
            if (records.length > 0 && bytes > limits.maxBytes) break
            records.push(next)
            head++
          }
          if (head >= buffer.length) {
            buffer = []
            head = 0
          }
          const last = records.at(-1)
          return {
            records,
            endOfShard: iterator === undefined && head >= buffer.length,
            // MillisBehindLatest is measured from the response's last record; a pull that stops
            // short of it is further behind by the arrival gap.
            behindLatestMs: Math.max(
              0,
              behindLatestMs + (last === undefined ? 0 : newestArrival - last.arrivedAt),
            ),
          }
        }),
      )
    })
    return { shardId, pull }
  })
