/**
 * The embedded StreamLog over the tables of `SqliteShards` (one SQLite database, a table per
 * shard). Concurrent appends are group-committed: every append that arrives while a commit is
 * pending joins it, so one fsync covers them all. Retention trims by age, never past what every
 * consumer has processed; the disk budget pushes back with StreamFull.
 */
import { Duration, Effect, Layer, Schedule } from "effect"
import { checkpointTable } from "./Checkpoints.js"
import { hashKey, parseSequenceNumber, validateBatch } from "./Shards.js"
import * as SqliteShards from "./SqliteShards.js"
import * as StreamConfig from "./StreamConfig.js"
import { type AppendError, PositionPastEnd, StreamFull, UnknownShard } from "./StreamError.js"
import {
  type Appended,
  type AppendRecord,
  defaultReadLimits,
  type Position,
  type ReadBatch,
  type ShardInfo,
  StreamLog,
  type StreamLogApi,
  type StreamRecord,
} from "./StreamLog.js"

/** One commit takes at most this many records, bounding how long it holds the event loop. */
const MAX_RECORDS_PER_COMMIT = 20_000

interface Pending {
  readonly records: ReadonlyArray<AppendRecord>
  readonly shards: ReadonlyArray<number>
  readonly bytes: number
  readonly resume: (effect: Effect.Effect<ReadonlyArray<Appended>, AppendError>) => void
}

const unavailable = SqliteShards.unavailable

/** Opens (or creates) the embedded log; the scope closes it after the last pending commit. */
export const make = (config: StreamConfig.EmbeddedStreamConfig) =>
  Effect.gen(function* () {
    const tables = yield* SqliteShards.open(config)
    const {
      db,
      shardCount,
      ranges,
      shardIds,
      lastSeq,
      lastArrivedAt,
      inserts,
      readAfter,
      trimThrough,
      firstSeqAt,
    } = tables
    const checkpoints = checkpointTable(db)

    // --- group commit ---------------------------------------------------------------------
    let queue: Array<Pending> = []
    let scheduled = false
    const commitTx = db.transaction((jobs: ReadonlyArray<Pending>, now: number) => {
      const results: Array<Array<Appended>> = []
      for (const job of jobs) {
        const out: Array<Appended> = []
        for (let r = 0; r < job.records.length; r++) {
          const shard = job.shards[r]!
          const seq = ++lastSeq[shard]!
          inserts[shard]!.run(seq, job.records[r]!.partitionKey, job.records[r]!.data, now)
          out.push({ shardId: shardIds[shard]!, sequenceNumber: String(seq) })
          lastArrivedAt[shard] = now
        }
        results.push(out)
      }
      return results
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
      // Arrival times never go backwards within a shard, so AtTimestamp can binary-search by seq.
      const now = Math.max(Date.now(), ...lastArrivedAt)
      const before = lastSeq.slice()
      const arrivedBefore = lastArrivedAt.slice()
      let results: Array<Array<Appended>>
      try {
        results = commitTx(jobs, now)
      } catch (cause) {
        for (let i = 0; i < before.length; i++) {
          lastSeq[i] = before[i]!
          lastArrivedAt[i] = arrivedBefore[i]!
        }
        const error = unavailable("append")(cause)
        for (const job of jobs) {
          tables.retainedBytes -= job.bytes
          job.resume(Effect.fail(error))
        }
        return
      }
      // Outside the try: the commit stands, whatever a resumed appender does next.
      for (let j = 0; j < jobs.length; j++) jobs[j]!.resume(Effect.succeed(results[j]!))
    }
    const schedule = () => {
      if (!scheduled) {
        scheduled = true
        setImmediate(commit)
      }
    }

    // --- retention and the disk budget -------------------------------------------------------
    /**
     * The highest sequence number every consumer has processed in a shard: 0 when some known
     * consumer (one with a checkpoint in any shard) has none here yet, Infinity when the log has
     * no consumers at all.
     */
    const consumedThrough = (shard: number): number => {
      const consumers = checkpoints.consumers()
      if (consumers.length === 0) return Number.POSITIVE_INFINITY
      let through = Number.POSITIVE_INFINITY
      for (const consumer of consumers) {
        const p = checkpoints.get(consumer, shardIds[shard]!)
        through = Math.min(through, p?._tag === "AfterSequence" ? Number(p.sequenceNumber) : 0)
      }
      return through
    }
    /**
     * Trims records older than the retention — but never past what every consumer has processed:
     * an acknowledged record that storage has not taken yet stays (the disk budget then pushes
     * back on ingress) rather than expiring unread.
     */
    const trimExpired = () => {
      const cutoff = Date.now() - config.retentionMs
      let freed = 0
      for (let shard = 0; shard < shardCount; shard++) {
        const expiredThrough = (firstSeqAt(shard, cutoff) ?? lastSeq[shard]! + 1) - 1
        freed += trimThrough(shard, Math.min(expiredThrough, consumedThrough(shard)))
      }
      return freed
    }
    /**
     * Frees unexpired records that every consumer has processed. Only reached when the budget is
     * exhausted: unread records are never dropped, so the log refuses appends instead.
     */
    const reclaimConsumed = () => {
      let freed = 0
      for (let shard = 0; shard < shardCount; shard++) {
        const through = consumedThrough(shard)
        if (Number.isFinite(through)) freed += trimThrough(shard, through)
      }
      return freed
    }

    yield* Effect.sync(trimExpired).pipe(
      Effect.flatMap((freed) =>
        freed > 0 ? Effect.logInfo(`retention trimmed ${freed} bytes`) : Effect.void,
      ),
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
    // Devices append again and again: memoising key -> shard saves an MD5 per record. A cache,
    // so bounded by clearing.
    const shardCache = new Map<string, number>()
    const shardOfKey = (partitionKey: string) => {
      let shard = shardCache.get(partitionKey)
      if (shard === undefined) {
        const key = hashKey(partitionKey)
        shard = ranges.findIndex((r) => r.start <= key && key <= r.end)
        if (shardCache.size >= 100_000) shardCache.clear()
        shardCache.set(partitionKey, shard)
      }
      return shard
    }

    const append: StreamLogApi["append"] = (records) =>
      Effect.flatMap(validateBatch(records), () =>
        Effect.async<ReadonlyArray<Appended>, AppendError>((resume) => {
          let bytes = 0
          const shards = records.map((r) => {
            bytes += r.data.byteLength + Buffer.byteLength(r.partitionKey, "utf8")
            return shardOfKey(r.partitionKey)
          })
          if (tables.retainedBytes + bytes > config.maxBytes) {
            try {
              reclaimConsumed()
            } catch (cause) {
              return resume(Effect.fail(unavailable("reclaim")(cause)))
            }
            if (tables.retainedBytes + bytes > config.maxBytes) {
              return resume(
                Effect.fail(
                  new StreamFull({
                    reason: `embedded log holds ${tables.retainedBytes} of ${config.maxBytes} bytes of unconsumed records`,
                    retryAfterMs: 1000,
                  }),
                ),
              )
            }
          }
          tables.retainedBytes += bytes
          queue.push({ records, shards, bytes, resume })
          schedule()
        }),
      )

    const startAfter = (shard: number, shardId: string, position: Position) =>
      Effect.gen(function* () {
        switch (position._tag) {
          case "TrimHorizon":
            return 0
          case "Latest":
            return lastSeq[shard]!
          case "AtTimestamp":
            return (firstSeqAt(shard, position.at) ?? lastSeq[shard]! + 1) - 1
          case "AtSequence":
          case "AfterSequence": {
            const text = yield* parseSequenceNumber(position.sequenceNumber)
            const seq = Number(text)
            if (!Number.isSafeInteger(seq) || seq > lastSeq[shard]!) {
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
          Effect.try({
            try: (): ReadBatch => {
              const records: Array<StreamRecord> = []
              let bytes = 0
              for (const row of readAfter[shard]!.iterate(after, limits.maxRecords)) {
                bytes += row.data.byteLength
                if (records.length > 0 && bytes > limits.maxBytes) break
                records.push({
                  shardId,
                  sequenceNumber: String(row.seq),
                  partitionKey: row.pkey,
                  data: row.data,
                  arrivedAt: row.arrived_at,
                })
                after = row.seq
              }
              const last = records.at(-1)
              return {
                records,
                endOfShard: false,
                behindLatestMs: last === undefined ? 0 : lastArrivedAt[shard]! - last.arrivedAt,
              }
            },
            catch: unavailable("read"),
          })
        return { shardId, pull }
      })

    const checkpoint: StreamLogApi["checkpoint"] = (consumer, shardId, sequenceNumber) =>
      Effect.gen(function* () {
        const shard = yield* shardIndex(shardId)
        const seq = yield* parseSequenceNumber(sequenceNumber)
        if (Number(seq) > lastSeq[shard]!) return yield* new PositionPastEnd({ shardId, sequenceNumber: seq })
        yield* Effect.try({
          try: () => checkpoints.advance(consumer, shardId, seq),
          catch: unavailable("checkpoint"),
        })
      })

    const resumePosition: StreamLogApi["resumePosition"] = (consumer, shardId) =>
      Effect.flatMap(shardIndex(shardId), () =>
        Effect.try({
          try: () => checkpoints.get(consumer, shardId) ?? ({ _tag: "TrimHorizon" } as Position),
          catch: unavailable("resumePosition"),
        }),
      )

    const resetCheckpoint: StreamLogApi["resetCheckpoint"] = (consumer, shardId, position) =>
      Effect.gen(function* () {
        const shard = yield* shardIndex(shardId)
        // Validates the position the same way a reader would, so a bad reset fails now, not on resume.
        yield* startAfter(shard, shardId, position)
        yield* Effect.try({
          try: () => checkpoints.reset(consumer, shardId, position),
          catch: unavailable("resetCheckpoint"),
        })
      })

    return StreamLog.of({
      append,
      listShards: Effect.succeed(shards),
      reader,
      checkpoint,
      resumePosition,
      resetCheckpoint,
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
