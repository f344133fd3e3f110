/**
 * PutRecords within Kinesis's limits, retrying only what failed. Independent of the SDK: the
 * request is a `PutSender` parameter, so partial failures and throttling can be scripted in tests
 * (the emulators never throttle).
 *
 * Order: a PutRecords request is not atomic, so if two records of one key shared a request and the
 * first failed while the second landed, resending the first would put it after the second. Each
 * request therefore carries at most ONE record per partition key; a key's later records wait for
 * later rounds, and a failed record stays at the head of its key's queue until it lands.
 */
import { Clock, Data, Effect, Random } from "effect"
import { StreamFull, StreamUnavailable } from "./StreamError.js"
import type { Appended, AppendRecord } from "./StreamLog.js"

/** Kinesis: at most 500 records in one PutRecords request. */
export const MAX_PUT_RECORDS = 500
/** Kinesis: at most 5 MiB (data + partition keys) in one PutRecords request. */
export const MAX_PUT_BYTES = 5 * 1024 * 1024

/** One record's outcome in a PutRecords response, in request order. */
export interface PutOutcome {
  readonly shardId?: string | undefined
  readonly sequenceNumber?: string | undefined
  readonly errorCode?: string | undefined
  readonly errorMessage?: string | undefined
}

/** Why a whole request failed: `throughput` and `retryable` are retried, `fatal` is not. */
export type FailureKind = "throughput" | "retryable" | "fatal"

/** A whole PutRecords request failed (nothing in it landed). */
export class PutRequestFailed extends Data.TaggedError("PutRequestFailed")<{
  readonly kind: FailureKind
  readonly reason: string
}> {}

/** Sends one PutRecords request; the outcomes are in the order of `records`. */
export type PutSender = (
  records: ReadonlyArray<AppendRecord>,
) => Effect.Effect<ReadonlyArray<PutOutcome>, PutRequestFailed>

/** How hard `putRecords` retries before giving up. */
export interface PutPolicy {
  /** First backoff; it doubles per consecutive failed round, with jitter. */
  readonly baseDelayMs: number
  readonly maxDelayMs: number
  /** Tries of one record after which the put gives up. */
  readonly maxAttempts: number
  /** Time after which a put that still has failures gives up. */
  readonly maxElapsedMs: number
  /** Requests sent at once in one round (their keys are disjoint, so order is unaffected). */
  readonly maxInFlight: number
}

/** Ten tries per record over roughly 5 to 11 s (never past 20 s): rides out a throttling spike, then pushes back. */
export const defaultPutPolicy: PutPolicy = {
  baseDelayMs: 100,
  maxDelayMs: 2_000,
  maxAttempts: 10,
  maxElapsedMs: 20_000,
  maxInFlight: 4,
}

/**
 * Some records did not land within the policy's bounds. `landed` holds, by input index, those that
 * did, so a caller that merged several appends can still acknowledge the complete ones.
 */
export class PutIncomplete extends Data.TaggedError("PutIncomplete")<{
  readonly error: StreamFull | StreamUnavailable
  readonly landed: ReadonlyArray<Appended | undefined>
}> {}

/** Kinesis documents two per-record codes; only throughput is a reason to slow down. */
const perRecordKind = (errorCode: string): FailureKind =>
  errorCode === "ProvisionedThroughputExceededException" || errorCode === "KMSThrottlingException"
    ? "throughput"
    : "retryable"

const recordBytes = (r: AppendRecord) => r.data.byteLength + Buffer.byteLength(r.partitionKey, "utf8")

/** Cuts a round's records (one per key) into requests within the count and byte limits. */
const chunk = (indices: ReadonlyArray<number>, bytes: ReadonlyArray<number>) => {
  const requests: Array<Array<number>> = []
  let current: Array<number> = []
  let size = 0
  for (const i of indices) {
    if (current.length === MAX_PUT_RECORDS || (current.length > 0 && size + bytes[i]! > MAX_PUT_BYTES)) {
      requests.push(current)
      current = []
      size = 0
    }
    current.push(i)
    size += bytes[i]!
  }
  if (current.length > 0) requests.push(current)
  return requests
}

/** Exponential backoff with "equal jitter": never less than half the nominal delay, so it really backs off. */
const backoff = (policy: PutPolicy, attempt: number) =>
  Effect.map(Random.next, (r) => {
    const nominal = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1))
    return Math.round(nominal / 2 + (r * nominal) / 2)
  })

interface RoundFailure {
  readonly kind: FailureKind
  readonly reason: string
}

/** Throughput outranks other retryable failures (it decides StreamFull); fatal outranks both. */
const worse = (a: RoundFailure | undefined, b: RoundFailure): RoundFailure => {
  const rank = { retryable: 0, throughput: 1, fatal: 2 } as const
  return a === undefined || rank[b.kind] > rank[a.kind] ? b : a
}

/**
 * Puts validated records; succeeds with one result per record in input order, or fails with what
 * landed. Records of one key land in input order.
 */
export const putRecords = (
  records: ReadonlyArray<AppendRecord>,
  send: PutSender,
  policy: PutPolicy = defaultPutPolicy,
): Effect.Effect<ReadonlyArray<Appended>, PutIncomplete> =>
  Effect.gen(function* () {
    const landed: Array<Appended | undefined> = new Array(records.length).fill(undefined)
    const bytes = records.map(recordBytes)
    // Per key, the input indices still to put, in order; Map order keeps the keys' first appearance.
    const queues = new Map<string, Array<number>>()
    records.forEach((r, i) => {
      const queue = queues.get(r.partitionKey)
      if (queue === undefined) queues.set(r.partitionKey, [i])
      else queue.push(i)
    })
    const tries: Array<number> = new Array(records.length).fill(0)
    const started = yield* Clock.currentTimeMillis
    // Consecutive rounds with a failure: the backoff exponent, reset by a clean round.
    let failedRounds = 0
    while (queues.size > 0) {
      const heads = Array.from(queues.values(), (q) => q[0]!)
      const requests = chunk(heads, bytes)
      const responses = yield* Effect.forEach(
        requests,
        (indices) =>
          Effect.either(Effect.map(send(indices.map((i) => records[i]!)), (out) => ({ indices, out }))),
        { concurrency: policy.maxInFlight },
      )
      let failure: RoundFailure | undefined
      for (const indices of requests) for (const i of indices) tries[i]!++
      for (const response of responses) {
        if (response._tag === "Left") {
          failure = worse(failure, response.left)
          continue
        }
        const { indices, out } = response.right
        indices.forEach((index, j) => {
          const o = out[j]
          if (o?.errorCode === undefined && o?.shardId !== undefined && o.sequenceNumber !== undefined) {
            landed[index] = { shardId: o.shardId, sequenceNumber: o.sequenceNumber }
            const key = records[index]!.partitionKey
            const queue = queues.get(key)!
            queue.shift()
            if (queue.length === 0) queues.delete(key)
          } else {
            const code = o?.errorCode ?? "MissingResult"
            failure = worse(failure, {
              kind: perRecordKind(code),
              reason: `${code}: ${o?.errorMessage ?? "no result for the record"}`,
            })
          }
        })
      }
      if (failure === undefined) {
        failedRounds = 0
        continue
      }
      failedRounds++
      const delay = yield* backoff(policy, failedRounds)
      const elapsed = (yield* Clock.currentTimeMillis) - started
      const mostTries = Math.max(...Array.from(queues.values(), (q) => tries[q[0]!]!))
      if (
        failure.kind === "fatal" ||
        mostTries >= policy.maxAttempts ||
        elapsed + delay > policy.maxElapsedMs
      ) {
        const pending = Array.from(queues.values()).reduce((n, q) => n + q.length, 0)
        const reason = `${pending} of ${records.length} records not accepted after ${mostTries} tries in ${elapsed} ms; last: ${failure.reason}`
        const error =
          failure.kind === "throughput"
            ? new StreamFull({
                reason: `Kinesis throughput exceeded: ${reason}`,
                retryAfterMs: Math.max(delay, 1),
              })
            : new StreamUnavailable({ operation: "append", reason })
        return yield* new PutIncomplete({ error, landed })
      }
      yield* Effect.sleep(delay)
    }
    return landed as ReadonlyArray<Appended>
  })
