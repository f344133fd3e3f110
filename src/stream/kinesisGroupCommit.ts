/**
 * Group commit for the Kinesis backend: appends wait in a queue that ONE fiber drains into shared
 * PutRecords rounds (`putRecords`), so a burst of single-record appends from many devices costs a
 * few requests, not one each. A single drainer also keeps a key's order across appends: a later
 * append's records are never in flight before an earlier append's have landed.
 */
import { Deferred, Effect, Queue, type Scope } from "effect"
import { type PutPolicy, type PutSender, putRecords } from "./kinesisPut.js"
import { StreamFull, StreamUnavailable } from "./StreamError.js"
import type { Appended, AppendRecord } from "./StreamLog.js"

/** The bound on appends waiting for PutRecords (Guarantee 2: memory stays bounded). */
export interface QueueBounds {
  /** Records waiting to be put; beyond this, appends fail with StreamFull (bounded memory). */
  readonly maxQueuedRecords: number
  readonly maxQueuedBytes: number
}

/** 50,000 records or 64 MiB, whichever comes first. */
export const defaultQueueBounds: QueueBounds = { maxQueuedRecords: 50_000, maxQueuedBytes: 64 * 1024 * 1024 }

/** One drain puts at most this many records, so the first appends of a burst are not held by the last. */
const MAX_RECORDS_PER_DRAIN = 2_000

type Enqueue = (
  records: ReadonlyArray<AppendRecord>,
) => Effect.Effect<ReadonlyArray<Appended>, StreamFull | StreamUnavailable>

interface Job {
  readonly records: ReadonlyArray<AppendRecord>
  readonly bytes: number
  readonly done: Deferred.Deferred<ReadonlyArray<Appended>, StreamFull | StreamUnavailable>
}

const allLanded = (xs: ReadonlyArray<Appended | undefined>): xs is ReadonlyArray<Appended> =>
  xs.every((a) => a !== undefined)

/**
 * Starts the drainer; returns `enqueue` for validated records. When the scope closes, appends
 * already accepted are answered (within the put policy's time bound) before the drainer stops.
 */
export const groupCommit = (
  send: PutSender,
  policy: PutPolicy,
  bounds: QueueBounds = defaultQueueBounds,
): Effect.Effect<Enqueue, never, Scope.Scope> =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<Job>()
    const outstanding = new Set<Job>()
    let queuedRecords = 0
    let queuedBytes = 0
    let closing = false

    const settle = (
      job: Job,
      result: Effect.Effect<ReadonlyArray<Appended>, StreamFull | StreamUnavailable>,
    ) =>
      Effect.zipRight(
        Deferred.complete(job.done, result),
        Effect.sync(() => {
          outstanding.delete(job)
          queuedRecords -= job.records.length
          queuedBytes -= job.bytes
        }),
      )

    const commit = (jobs: ReadonlyArray<Job>) =>
      Effect.gen(function* () {
        const result = yield* Effect.either(
          putRecords(
            jobs.flatMap((j) => j.records),
            send,
            policy,
          ),
        )
        const landed = result._tag === "Right" ? result.right : result.left.landed
        const failure =
          result._tag === "Left"
            ? result.left.error
            : new StreamUnavailable({ operation: "append", reason: "not acknowledged" })
        let offset = 0
        for (const job of jobs) {
          const mine = landed.slice(offset, offset + job.records.length)
          offset += job.records.length
          // An append whose records all landed succeeds even if others in the same drain did not.
          yield* allLanded(mine) ? settle(job, Effect.succeed(mine)) : settle(job, Effect.fail(failure))
        }
      }).pipe(Effect.withSpan("KinesisStreamLog.putRecords", { attributes: { appends: jobs.length } }))

    yield* Effect.gen(function* () {
      const jobs = [yield* Queue.take(queue), ...(yield* Queue.takeAll(queue))]
      let group: Array<Job> = []
      let count = 0
      for (const job of jobs) {
        if (group.length > 0 && count + job.records.length > MAX_RECORDS_PER_DRAIN) {
          yield* commit(group)
          group = []
          count = 0
        }
        group.push(job)
        count += job.records.length
      }
      yield* commit(group)
    }).pipe(Effect.forever, Effect.forkScoped)

    // Added after the fork, so it runs before the drainer is interrupted.
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closing = true
        return Effect.forEach(outstanding, (job) => Deferred.await(job.done), { discard: true })
      }).pipe(Effect.exit, Effect.timeout(policy.maxElapsedMs + 5_000), Effect.ignore),
    )

    return (records) =>
      Effect.gen(function* () {
        if (closing) return yield* new StreamUnavailable({ operation: "append", reason: "shutting down" })
        const bytes = records.reduce(
          (n, r) => n + r.data.byteLength + Buffer.byteLength(r.partitionKey, "utf8"),
          0,
        )
        // An empty queue takes any batch, so one oversized append is not refused forever.
        if (
          queuedRecords > 0 &&
          (queuedRecords + records.length > bounds.maxQueuedRecords ||
            queuedBytes + bytes > bounds.maxQueuedBytes)
        ) {
          return yield* new StreamFull({
            reason: `${queuedRecords} records (${queuedBytes} bytes) already waiting for Kinesis`,
            retryAfterMs: 1_000,
          })
        }
        const done = yield* Deferred.make<ReadonlyArray<Appended>, StreamFull | StreamUnavailable>()
        // One synchronous step: an interruption cannot leave a counted job out of the queue.
        yield* Effect.sync(() => {
          const job: Job = { records, bytes, done }
          outstanding.add(job)
          queuedRecords += records.length
          queuedBytes += bytes
          Queue.unsafeOffer(queue, job)
        })
        return yield* Deferred.await(done)
      })
  })
