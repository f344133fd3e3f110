/**
 * The embedded StreamLog over the tables of `SqliteShards` (one SQLite database, a table per
 * shard), safe to open from several processes at once. A process's concurrent appends are
 * group-committed: every append that arrives while a commit is pending joins it, so one fsync
 * covers them all. Retention trims by age, never past what every processor application has
 * processed by its lease checkpoints (`ConsumedThrough`); the disk budget pushes back with
 * StreamFull. Readers are positions only: the log keeps no consumer state of its own.
 */
import { Duration, Effect, Layer, Schedule } from "effect"
import { parseSequenceNumber, validateBatch } from "./Shards.js"
import * as SqliteShards from "./SqliteShards.js"
import * as StreamConfig from "./StreamConfig.js"
import { type AppendError, PositionPastEnd, StreamFull, UnknownShard } from "./StreamError.js"
import {
  type Appended,
  defaultReadLimits,
  type Position,
  type ReadBatch,
  type ShardInfo,
  StreamLog,
  type StreamLogApi,
} from "./StreamLog.js"

/** One commit takes at most this many records, bounding how long it holds the event loop and the write lock. */
const MAX_RECORDS_PER_COMMIT = 20_000
/** One trim transaction deletes at most this many records: a few milliseconds of holding the write lock. */
const TRIM_CHUNK_ROWS = 5_000
/** Reclaiming at the budget frees this share of it beyond what the append needs, so the next appends need not reclaim again. */
const RECLAIM_HEADROOM = 1 / 16

interface Pending extends SqliteShards.Job {
  /** Already refused once by a commit and sent to reclaim: a second refusal is final. */
  readonly retried: boolean
  readonly resume: (effect: Effect.Effect<ReadonlyArray<Appended>, AppendError>) => void
}

const unavailable = SqliteShards.unavailable
const fromDb = <A>(operation: string, f: () => A) => Effect.try({ try: f, catch: unavailable(operation) })

/** Opens (or creates) the embedded log; the scope closes it after the last pending commit. */
export const make = (config: StreamConfig.EmbeddedStreamConfig) =>
  Effect.gen(function* () {
    const tables = yield* SqliteShards.open(config)
    const { shardCount, ranges, shardIds, seen } = tables

    // --- group commit ---------------------------------------------------------------------
    let queue: Array<Pending> = []
    let scheduled = false
    // The budget as this process last read it from the database (every process's appends and
    // trims), plus what it has queued since: enough to refuse early. The commit itself checks
    // the database's count, so concurrent processes cannot overshoot it together.
    let retained = yield* fromDb("open", tables.retainedBytes)
    let queuedBytes = 0
    const full = () =>
      new StreamFull({
        reason: `embedded log holds ${retained} of ${config.maxBytes} bytes of unconsumed records`,
        retryAfterMs: 1000,
      })
    const commit = () => {
      scheduled = false
      let jobs = queue
      queue = []
      // Split an oversized queue so a burst cannot hold the event loop for one huge transaction.
      let count = 0
      let cut = 0
      while (
        cut < jobs.length &&
        (cut === 0 || count + jobs[cut]!.records.length <= MAX_RECORDS_PER_COMMIT)
      ) {
        count += jobs[cut]!.records.length
        cut++
      }
      if (cut < jobs.length) {
        queue = jobs.slice(cut)
        jobs = jobs.slice(0, cut)
        schedule()
      }
      for (const job of jobs) queuedBytes -= job.bytes
      let outcome: ReturnType<typeof tables.commit>
      try {
        outcome = tables.commit(jobs, config.maxBytes)
      } catch (cause) {
        // SQLITE_BUSY after the busy timeout (another process held the lock too long), I/O errors.
        const error = unavailable("append")(cause)
        for (const job of jobs) job.resume(Effect.fail(error))
        return
      }
      retained = outcome.retained
      // Outside the try: the commit stands, whatever a resumed appender does next.
      for (let j = 0; j < jobs.length; j++) {
        const acks = outcome.results[j]
        const job = jobs[j]!
        if (acks !== undefined) job.resume(Effect.succeed(acks))
        // The database's count (other processes' appends) says full where this process's did
        // not: reclaim and look again, as an append refused up front would.
        else job.resume(job.retried ? Effect.fail(full()) : reclaimThenEnqueue(job))
      }
    }
    const enqueue = (job: SqliteShards.Job, retried: boolean) =>
      Effect.async<ReadonlyArray<Appended>, AppendError>((resume) => {
        queuedBytes += job.bytes
        queue.push({ records: job.records, shards: job.shards, bytes: job.bytes, retried, resume })
        schedule()
      })
    /** At the budget: free what every processor application is done with, then look at the database's count again. */
    const reclaimThenEnqueue = (job: SqliteShards.Job) =>
      Effect.zipRight(
        reclaimOnce(job.bytes),
        Effect.suspend(() =>
          retained + queuedBytes + job.bytes <= config.maxBytes ? enqueue(job, true) : Effect.fail(full()),
        ),
      )
    const schedule = () => {
      if (!scheduled) {
        scheduled = true
        setImmediate(commit)
      }
    }

    // --- retention and the disk budget -------------------------------------------------------
    const consumedThrough = (shard: number) => tables.consumedThrough(shardIds[shard]!)
    /**
     * Trims a shard chunk by chunk while `more()` holds. Between chunks it leaves the write lock
     * free for as long as it held it: waiting writers (other processes) poll for it, and would
     * starve behind back-to-back chunks.
     */
    const trimShard = (shard: number, limit: () => number, more: () => boolean) =>
      Effect.gen(function* () {
        let trimmed = 0
        for (;;) {
          const started = performance.now()
          const rows = yield* fromDb("trim", () => tables.trimChunk(shard, TRIM_CHUNK_ROWS, limit))
          trimmed += rows
          retained = yield* fromDb("trim", tables.retainedBytes)
          if (rows < TRIM_CHUNK_ROWS || !more()) return trimmed
          yield* Effect.sleep(Duration.millis(Math.max(1, performance.now() - started)))
        }
      })
    /**
     * Trims records older than the retention — but never past what every processor application
     * has processed: an acknowledged record that storage has not taken yet stays (the disk budget
     * then pushes back on ingress) rather than expiring unread. Every process runs it; each chunk
     * decides from the database inside its transaction, so concurrent runs only share the work.
     */
    const trimExpired = Effect.gen(function* () {
      const cutoff = Date.now() - config.retentionMs
      let trimmed = 0
      for (let shard = 0; shard < shardCount; shard++) {
        // Arrivals only grow with the sequence number, so this bound stays valid while others append.
        const expiredThrough = yield* fromDb("trim", () => {
          const last = tables.newest(shard)
          return (tables.firstSeqAt(shard, cutoff, last.seq) ?? last.seq + 1) - 1
        })
        trimmed += yield* trimShard(
          shard,
          () => Math.min(expiredThrough, consumedThrough(shard)),
          () => true,
        )
      }
      return trimmed
    })
    /**
     * Frees unexpired records that every processor application has processed until `needed`
     * bytes fit with some headroom. Only reached at the budget: unprocessed records are never
     * dropped, so the log refuses appends instead; with no application at all, nothing counts as
     * processed and nothing unexpired is freed.
     */
    const reclaimConsumed = (needed: number) =>
      Effect.gen(function* () {
        const fits = () => retained + queuedBytes + needed <= config.maxBytes * (1 - RECLAIM_HEADROOM)
        retained = yield* fromDb("reclaim", tables.retainedBytes)
        for (let shard = 0; shard < shardCount && !fits(); shard++) {
          yield* trimShard(
            shard,
            () => {
              const through = consumedThrough(shard)
              return Number.isFinite(through) ? through : 0
            },
            () => !fits(),
          )
        }
      })
    // Appenders at the budget share one reclaim: those that waited for it only look again.
    const reclaimLock = yield* Effect.makeSemaphore(1)
    let reclaims = 0
    const reclaimOnce = (needed: number) =>
      Effect.suspend(() => {
        const before = reclaims
        return reclaimLock.withPermits(1)(
          Effect.suspend(() =>
            reclaims !== before
              ? Effect.void
              : Effect.ensuring(
                  reclaimConsumed(needed),
                  Effect.sync(() => reclaims++),
                ),
          ),
        )
      })

    yield* trimExpired.pipe(
      Effect.flatMap((trimmed) =>
        trimmed > 0 ? Effect.logInfo(`retention trimmed ${trimmed} records`) : Effect.void,
      ),
      Effect.catchAll((error) => Effect.logWarning("retention failed; retrying next round", error)),
      Effect.catchAllDefect((defect) => Effect.logError("retention failed", defect)),
      Effect.repeat(Schedule.spaced(Duration.millis(config.trimIntervalMs))),
      Effect.forkScoped,
    )
    // Drain: every queued append commits before the database closes (finalizers run in reverse).
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        while (queue.length > 0) commit()
      }),
    )

    // --- the contract ---------------------------------------------------------------------------
    const shardIndex = (shardId: string): Effect.Effect<number, UnknownShard> => {
      const match = /^shardId-(\d{12})$/.exec(shardId)
      const index = match ? Number(match[1]) : -1
      return index >= 0 && index < shardCount
        ? Effect.succeed(index)
        : Effect.fail(new UnknownShard({ shardId }))
    }
    const shards: ReadonlyArray<ShardInfo> = ranges.map((r, i) => ({
      shardId: shardIds[i]!,
      hashKeyStart: r.start,
      hashKeyEnd: r.end,
    }))

    const append: StreamLogApi["append"] = (records) =>
      Effect.flatMap(validateBatch(records), () => {
        let bytes = 0
        const shards = records.map((r) => {
          bytes += r.data.byteLength + Buffer.byteLength(r.partitionKey, "utf8")
          return tables.shardOfKey(r.partitionKey)
        })
        // No named closures on this path: tsx (esbuild keepNames) would name each one, per append.
        const job = { records, shards, bytes }
        return retained + queuedBytes + bytes <= config.maxBytes
          ? enqueue(job, false)
          : reclaimThenEnqueue(job)
      })

    /** Whether a shard has reached `seq`: from memory when it says so, else from the database. */
    const reached = (shard: number, seq: number) =>
      seq <= seen.seq[shard]! ? Effect.succeed(true) : fromDb("read", () => seq <= tables.newest(shard).seq)

    const startAfter = (shard: number, shardId: string, position: Position) =>
      Effect.gen(function* () {
        switch (position._tag) {
          case "TrimHorizon":
            return 0
          // Both from the database: other processes append too.
          case "Latest":
            return (yield* fromDb("read", () => tables.newest(shard))).seq
          case "AtTimestamp":
            return yield* fromDb("read", () => {
              const last = tables.newest(shard)
              return (tables.firstSeqAt(shard, position.at, last.seq) ?? last.seq + 1) - 1
            })
          case "AtSequence":
          case "AfterSequence": {
            const text = yield* parseSequenceNumber(position.sequenceNumber)
            const seq = Number(text)
            if (!Number.isSafeInteger(seq) || !(yield* reached(shard, seq))) {
              return yield* new PositionPastEnd({ shardId, sequenceNumber: text })
            }
            return position._tag === "AtSequence" ? seq - 1 : seq
          }
        }
      })

    const reader: StreamLogApi["reader"] = (shardId, position) =>
      Effect.gen(function* () {
        const shard = yield* shardIndex(shardId)
        let after = yield* startAfter(shard, shardId, position)
        const pull = (limits = defaultReadLimits) =>
          fromDb("read", (): ReadBatch => {
            const batch = tables.read(shard, after, limits)
            after = batch.after
            return { records: batch.records, endOfShard: false, behindLatestMs: batch.behindLatestMs }
          })
        return { shardId, pull }
      })

    return StreamLog.of({
      append,
      listShards: Effect.succeed(shards),
      reader,
    })
  })

/** The embedded log configured from the environment (SLUICE_DATA_DIR, SLUICE_STREAM_*). */
export const layer = Layer.scoped(StreamLog, Effect.flatMap(StreamConfig.embedded, make))

/** The embedded log with explicit settings (tests, benchmarks). */
export const layerWith = (config: StreamConfig.EmbeddedStreamConfig) => Layer.scoped(StreamLog, make(config))

/** Defaults for `layerWith`, to override per use. */
export const defaults = (dataDir: string): StreamConfig.EmbeddedStreamConfig => ({
  dataDir,
  shardCount: 4,
  fsync: true,
  retentionMs: 24 * 3600_000,
  maxBytes: 1024 ** 3,
  trimIntervalMs: 10_000,
})
