/**
 * How ingress appends: every message received in one event-loop turn, from any connection, goes
 * into ONE `StreamLog.append`, and each sender is answered from that append's result. One fiber
 * and one backend call per turn instead of per message (on Kinesis, one PutRecords instead of
 * hundreds); the embedded log commits a batch in one transaction.
 *
 * Memory stays bounded without a queue limit here: an MQTT connection is not read again until its
 * pending messages are answered (aedes), and HTTP requests are capped by `http_max_in_flight`.
 */
import { Cause, Duration, Effect, Exit, Runtime, type Scope } from "effect"
import { MAX_PARTITION_KEY_LENGTH, MAX_RECORD_BYTES } from "../stream/Shards.js"
import {
  type AppendError,
  InvalidPartitionKey,
  RecordTooLarge,
  StreamUnavailable,
} from "../stream/StreamError.js"
import { type Appended, type AppendRecord, StreamLog } from "../stream/StreamLog.js"

/** How long closing waits for appends in flight. */
const SHUTDOWN_WAIT = Duration.seconds(10)

/** Node-style: exactly one of the two is set. */
export type AppendCallback = (error: AppendError | undefined, appended: Appended | undefined) => void

export interface Appender {
  /** Appends one record with the others of this turn; `done` runs once it is durable, or failed. */
  readonly submit: (record: AppendRecord, done: AppendCallback) => void
  /** `submit` as an effect. */
  readonly append: (record: AppendRecord) => Effect.Effect<Appended, AppendError>
  /**
   * Refuses new records from now on (StreamUnavailable) and waits until every append in flight
   * has answered its senders. Runs on scope close; may run earlier, e.g. before closing connections.
   */
  readonly drain: Effect.Effect<void>
}

export interface AppenderOptions {
  /** Most records per append. */
  readonly maxRecords: number
  /** Most record bytes per append (a single larger record still goes alone). */
  readonly maxBytes: number
}

/**
 * Checks one record the way the stream would check a batch, so that one bad record fails alone
 * instead of failing everyone it was batched with.
 */
const invalid = (record: AppendRecord): AppendError | undefined => {
  const keyLength = record.partitionKey.length
  if (keyLength === 0 || keyLength > MAX_PARTITION_KEY_LENGTH) {
    return new InvalidPartitionKey({ index: 0, length: keyLength })
  }
  const bytes = record.data.byteLength + Buffer.byteLength(record.partitionKey, "utf8")
  return bytes > MAX_RECORD_BYTES
    ? new RecordTooLarge({ index: 0, bytes, maxBytes: MAX_RECORD_BYTES })
    : undefined
}

/** An appender over the current StreamLog; on scope close it refuses new records and waits for appends in flight. */
export const make = (options: AppenderOptions): Effect.Effect<Appender, never, StreamLog | Scope.Scope> =>
  Effect.gen(function* () {
    const log = yield* StreamLog
    const run = Runtime.runCallback(yield* Effect.runtime<never>())

    let records: Array<AppendRecord> = []
    let callbacks: Array<AppendCallback> = []
    let bytes = 0
    let scheduled = false
    let inFlight = 0
    let closing = false
    let onIdle: (() => void) | undefined

    const settle = (
      batch: ReadonlyArray<AppendCallback>,
      exit: Exit.Exit<ReadonlyArray<Appended>, AppendError>,
    ) => {
      inFlight--
      if (Exit.isSuccess(exit)) {
        for (let i = 0; i < batch.length; i++) batch[i]!(undefined, exit.value[i])
      } else {
        const failure = Cause.failureOption(exit.cause)
        const error =
          failure._tag === "Some"
            ? failure.value
            : new StreamUnavailable({ operation: "append", reason: Cause.pretty(exit.cause) })
        for (let i = 0; i < batch.length; i++) batch[i]!(error, undefined)
      }
      if (inFlight === 0 && onIdle !== undefined) {
        const resume = onIdle
        onIdle = undefined
        resume()
      }
    }

    const flush = () => {
      scheduled = false
      if (records.length === 0) return
      const batch = records
      const answer = callbacks
      records = []
      callbacks = []
      bytes = 0
      inFlight++
      run(log.append(batch), { onExit: (exit) => settle(answer, exit) })
    }

    const submit = (record: AppendRecord, done: AppendCallback) => {
      if (closing) {
        return done(
          new StreamUnavailable({ operation: "append", reason: "ingress is shutting down" }),
          undefined,
        )
      }
      const error = invalid(record)
      if (error !== undefined) return done(error, undefined)
      // A record that would overflow the batch starts the next one.
      if (records.length > 0 && bytes + record.data.byteLength > options.maxBytes) flush()
      records.push(record)
      callbacks.push(done)
      bytes += record.data.byteLength
      if (records.length >= options.maxRecords) {
        flush()
      } else if (!scheduled) {
        scheduled = true
        // setImmediate, not a microtask: it runs after the I/O callbacks of this turn, so every
        // socket read in the turn joins the batch.
        setImmediate(flush)
      }
    }

    const append = (record: AppendRecord) =>
      Effect.async<Appended, AppendError>((resume) => {
        submit(record, (error, appended) =>
          resume(error === undefined ? Effect.succeed(appended!) : Effect.fail(error)),
        )
      })

    const drain = Effect.async<void>((resume) => {
      closing = true
      flush()
      if (inFlight === 0) return resume(Effect.void)
      onIdle = () => resume(Effect.void)
    }).pipe(
      // Runs in a finalizer, which is uninterruptible: only an interruptible wait can time out.
      Effect.interruptible,
      Effect.timeoutOption(SHUTDOWN_WAIT),
      Effect.flatMap((done) =>
        done._tag === "None"
          ? Effect.logWarning(
              `closing with ${inFlight} stream appends still unanswered after ${Duration.format(SHUTDOWN_WAIT)}`,
            )
          : Effect.void,
      ),
    )
    // Appends already handed to the stream finish (and answer their senders) before the stream closes.
    yield* Effect.addFinalizer(() => drain)

    return { submit, append, drain }
  })
