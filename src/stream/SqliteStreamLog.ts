/**
 * The embedded StreamLog: one SQLite database (WAL) per data directory, one table per shard with
 * the sequence number as its rowid. Concurrent appends are group-committed: every append that
 * arrives while a commit is pending joins it, so one fsync covers them all.
 */
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import Database from "better-sqlite3"
import { Duration, Effect, Layer, Schedule } from "effect"
import { checkpointTable } from "./Checkpoints.js"
import { evenHashRanges, hashKey, parseSequenceNumber, validateBatch } from "./Shards.js"
import * as StreamConfig from "./StreamConfig.js"
import {
  type AppendError,
  PositionPastEnd,
  StreamFull,
  StreamUnavailable,
  UnknownShard,
} from "./StreamError.js"
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

/** Kinesis-style shard ids, so logs and checkpoints read the same on both backends. */
export const shardIdOf = (index: number) => `shardId-${String(index).padStart(12, "0")}`

/** One commit takes at most this many records, bounding how long it holds the event loop. */
const MAX_RECORDS_PER_COMMIT = 20_000

interface Pending {
  readonly records: ReadonlyArray<AppendRecord>
  readonly shards: ReadonlyArray<number>
  readonly bytes: number
  readonly resume: (effect: Effect.Effect<ReadonlyArray<Appended>, AppendError>) => void
}

interface Row {
  readonly seq: number
  readonly pkey: string
  readonly data: Buffer
  readonly arrived_at: number
}

const unavailable = (operation: string) => (cause: unknown) =>
  new StreamUnavailable({ operation, reason: cause instanceof Error ? cause.message : String(cause) })

/** Opens (or creates) the embedded log; the scope closes it after the last pending commit. */
export const make = (config: StreamConfig.EmbeddedStreamConfig) =>
  Effect.gen(function* () {
    mkdirSync(config.dataDir, { recursive: true })
    const db = yield* Effect.acquireRelease(
      Effect.try({
        try: () => new Database(join(config.dataDir, "stream.sqlite")),
        catch: unavailable("open"),
      }),
      (db) => Effect.sync(() => db.close()),
    )
    db.pragma("journal_mode = WAL")
    db.pragma(`synchronous = ${config.fsync ? "FULL" : "NORMAL"}`)
    // High-water marks, written only when trimming: otherwise the newest row of each shard table
    // carries them, so a commit writes nothing but the rows it inserts.
    db.exec(`CREATE TABLE IF NOT EXISTS shards (
      shard INTEGER PRIMARY KEY,
      last_seq INTEGER NOT NULL,
      last_arrived_at INTEGER NOT NULL
    )`)
    // The shard count is fixed when the log is created; a changed setting cannot move records.
    const existing = (db.prepare("SELECT count(*) AS n FROM shards").get() as { n: number }).n
    const shardCount = existing > 0 ? existing : config.shardCount
    if (existing > 0 && existing !== config.shardCount) {
      yield* Effect.logWarning(
        `embedded log has ${existing} shards; ignoring shard_count=${config.shardCount} (fixed at creation)`,
      )
    }
    const ranges = evenHashRanges(shardCount)
    // A new log numbers its records from a time-based offset (µs since the epoch), not from 1, so
    // a log created anew (a wiped data directory) never reuses a previous log's sequence numbers,
    // which feed the storage tier's insert dedup tokens.
    const firstSeq = Date.now() * 1000
    const initShard = db.prepare(
      `INSERT OR IGNORE INTO shards (shard, last_seq, last_arrived_at) VALUES (?, ${firstSeq}, 0)`,
    )
    for (let i = 0; i < shardCount; i++) {
      db.exec(`CREATE TABLE IF NOT EXISTS shard_${i} (
        seq INTEGER PRIMARY KEY,
        pkey TEXT NOT NULL,
        data BLOB NOT NULL,
        arrived_at INTEGER NOT NULL
      )`)
      initShard.run(i)
    }
    const checkpoints = checkpointTable(db)
    const state = db
      .prepare("SELECT shard, last_seq, last_arrived_at FROM shards ORDER BY shard")
      .all() as Array<{
      shard: number
      last_seq: number
      last_arrived_at: number
    }>
    const newest = ranges.map(
      (_, i) =>
        db.prepare(`SELECT seq, arrived_at FROM shard_${i} ORDER BY seq DESC LIMIT 1`).get() as
          | { seq: number; arrived_at: number }
          | undefined,
    )
    const lastSeq = state.map((s, i) => Math.max(s.last_seq, newest[i]?.seq ?? 0))
    const lastArrivedAt = state.map((s, i) => Math.max(s.last_arrived_at, newest[i]?.arrived_at ?? 0))
    const shardIds = ranges.map((_, i) => shardIdOf(i))
    const inserts = ranges.map((_, i) =>
      db.prepare<[number, string, Buffer | Uint8Array, number]>(
        `INSERT INTO shard_${i} (seq, pkey, data, arrived_at) VALUES (?, ?, ?, ?)`,
      ),
    )
    const saveHighWater = db.prepare<[number, number, number]>(
      "UPDATE shards SET last_seq = ?, last_arrived_at = ? WHERE shard = ?",
    )
    const bytesOf = (i: number, where: string) =>
      db.prepare<[number], { bytes: number | null }>(
        `SELECT sum(length(data) + length(CAST(pkey AS BLOB))) AS bytes FROM shard_${i} WHERE ${where}`,
      )
    const bytesThrough = ranges.map((_, i) => bytesOf(i, "seq <= ?"))
    const deleteThrough = ranges.map((_, i) => db.prepare<[number]>(`DELETE FROM shard_${i} WHERE seq <= ?`))
    const firstAtOrAfter = ranges.map((_, i) =>
      db.prepare<[number], { seq: number; arrived_at: number }>(
        `SELECT seq, arrived_at FROM shard_${i} WHERE seq >= ? ORDER BY seq LIMIT 1`,
      ),
    )
    const readAfter = ranges.map((_, i) =>
      db.prepare<[number, number], Row>(
        `SELECT seq, pkey, data, arrived_at FROM shard_${i} WHERE seq > ? ORDER BY seq LIMIT ?`,
      ),
    )
    let retainedBytes = ranges.reduce(
      (sum, _, i) => sum + (bytesThrough[i]!.get(Number.MAX_SAFE_INTEGER)?.bytes ?? 0),
      0,
    )

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
          retainedBytes -= job.bytes
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
    /** Deletes records up to `seq` in a shard, returning the bytes freed. */
    const trimThrough = (shard: number, seq: number): number => {
      const bytes = bytesThrough[shard]!.get(seq)?.bytes ?? 0
      if (bytes > 0) {
        // The rows about to go may hold the high-water mark; keep it so sequence numbers never repeat.
        saveHighWater.run(lastSeq[shard]!, lastArrivedAt[shard]!, shard)
        deleteThrough[shard]!.run(seq)
      }
      retainedBytes -= bytes
      return bytes
    }
    /** The first retained seq whose arrival is at or after `at`, or undefined if none. */
    const firstSeqAt = (shard: number, at: number): number | undefined => {
      let lo = 1
      let hi = lastSeq[shard]!
      let found: number | undefined
      while (lo <= hi) {
        const mid = Math.floor((lo + hi) / 2)
        const row = firstAtOrAfter[shard]!.get(mid)
        if (row === undefined) {
          hi = mid - 1
        } else if (row.arrived_at >= at) {
          found = row.seq
          hi = mid - 1
        } else {
          lo = row.seq + 1
        }
      }
      return found
    }
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
          if (retainedBytes + bytes > config.maxBytes) {
            try {
              reclaimConsumed()
            } catch (cause) {
              return resume(Effect.fail(unavailable("reclaim")(cause)))
            }
            if (retainedBytes + bytes > config.maxBytes) {
              return resume(
                Effect.fail(
                  new StreamFull({
                    reason: `embedded log holds ${retainedBytes} of ${config.maxBytes} bytes of unconsumed records`,
                    retryAfterMs: 1000,
                  }),
                ),
              )
            }
          }
          retainedBytes += bytes
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
