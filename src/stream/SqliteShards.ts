/**
 * The embedded log's storage layer: one SQLite database (WAL) with one table per shard, the
 * sequence number as its rowid. Several processes open it at once — ingress workers append, the
 * processor reads (and checkpoints in its leases, in the same file), every one of them trims — so
 * the database, not memory, is the truth: every write is a BEGIN IMMEDIATE transaction (one
 * writer at a time) that reads inside itself what it builds on — a shard's newest sequence number
 * and arrival, the retained bytes, the lease checkpoints that bound a trim. What a process
 * remembers (`seen`) is only a lower bound, used where it already answers the question.
 * SqliteStreamLog builds the contract — group commit, retention, readers — on top.
 */
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import Database from "better-sqlite3"
import { Effect } from "effect"
import { consumedThrough } from "./ConsumedThrough.js"
import { evenHashRanges, hashKey } from "./Shards.js"
import type { EmbeddedStreamConfig } from "./StreamConfig.js"
import { StreamUnavailable } from "./StreamError.js"
import type { Appended, AppendRecord, ReadLimits, StreamRecord } from "./StreamLog.js"

/**
 * How long a statement waits for another process's write transaction before it fails
 * (SQLITE_BUSY, surfaced as StreamUnavailable). Commits and trim chunks hold the lock for
 * milliseconds, so this is a queue of them on a slow disk; the wait blocks the event loop
 * (better-sqlite3 is synchronous), which is why trims are cut into chunks.
 */
export const BUSY_TIMEOUT_MS = 5_000

/** Kinesis-style shard ids, so logs and lease checkpoints read the same on both backends. */
export const shardIdOf = (index: number) => `shardId-${String(index).padStart(12, "0")}`

/** A shard's newest sequence number and arrival time (epoch ms). */
export interface Newest {
  readonly seq: number
  readonly arrivedAt: number
}

/** One append's records, as queued for a group commit. */
export interface Job {
  readonly records: ReadonlyArray<AppendRecord>
  readonly shards: ReadonlyArray<number>
  /** Record bytes (data + partition key), what the disk budget counts. */
  readonly bytes: number
}

export const unavailable = (operation: string) => (cause: unknown) =>
  new StreamUnavailable({ operation, reason: cause instanceof Error ? cause.message : String(cause) })

const RECORD_BYTES = "sum(length(data) + length(CAST(pkey AS BLOB)))"

/** Creates what is missing; run in one immediate transaction so concurrent openers see all or nothing. */
const createSchema = (db: Database.Database, requestedShards: number) => {
  // High-water marks, written only when trimming: otherwise the newest row of each shard table
  // carries them, so a commit writes nothing but its rows and the budget counter.
  db.exec(`CREATE TABLE IF NOT EXISTS shards (
    shard INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    last_arrived_at INTEGER NOT NULL
  )`)
  // The disk budget's count, shared by every process that appends: kept in the same transactions
  // as the rows it counts, so it is exact across processes and crashes.
  db.exec(
    "CREATE TABLE IF NOT EXISTS budget (id INTEGER PRIMARY KEY CHECK (id = 0), retained_bytes INTEGER NOT NULL)",
  )
  // The shard count is fixed when the log is created; a changed setting cannot move records.
  const existing = (db.prepare("SELECT count(*) AS n FROM shards").get() as { n: number }).n
  const shardCount = existing > 0 ? existing : requestedShards
  // A new log numbers its records from a time-based offset (µs since the epoch), not from 1, so
  // a log created anew (a wiped data directory) never reuses a previous log's sequence numbers,
  // which feed the storage tier's insert dedup tokens.
  const initShard = db.prepare(
    `INSERT OR IGNORE INTO shards (shard, last_seq, last_arrived_at) VALUES (?, ${Date.now() * 1000}, 0)`,
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
  if (db.prepare("SELECT 1 FROM budget WHERE id = 0").get() === undefined) {
    // A log from before the shared count: count once what it holds.
    let bytes = 0
    for (let i = 0; i < shardCount; i++) {
      bytes +=
        (db.prepare(`SELECT ${RECORD_BYTES} AS b FROM shard_${i}`).get() as { b: number | null }).b ?? 0
    }
    db.prepare("INSERT INTO budget (id, retained_bytes) VALUES (0, ?)").run(bytes)
  }
  return { existing, shardCount }
}

/**
 * A connection to `dataDir/stream.sqlite` (created if missing) in WAL mode with the log's fsync
 * setting and busy timeout, closed with the scope. Every user of the file opens it this way: the
 * log, and the shard leases that live beside it. `onError` maps a failure to the caller's error.
 */
export const connect = <E>(dataDir: string, fsync: boolean, onError: (cause: unknown) => E) =>
  Effect.gen(function* () {
    const db = yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          mkdirSync(dataDir, { recursive: true })
          return new Database(join(dataDir, "stream.sqlite"), { timeout: BUSY_TIMEOUT_MS })
        },
        catch: onError,
      }),
      (db) => Effect.sync(() => db.close()),
    )
    yield* Effect.try({
      try: () => {
        db.pragma("journal_mode = WAL")
        db.pragma(`synchronous = ${fsync ? "FULL" : "NORMAL"}`)
      },
      catch: onError,
    })
    return db
  })

/** Opens (or creates) the log's database and its schema; the scope closes it. */
export const open = (config: EmbeddedStreamConfig) =>
  Effect.gen(function* () {
    const db = yield* connect(config.dataDir, config.fsync, unavailable("open"))
    const { existing, shardCount } = yield* Effect.try({
      try: () => db.transaction(createSchema).immediate(db, config.shardCount),
      catch: unavailable("open"),
    })
    if (existing > 0 && existing !== config.shardCount) {
      yield* Effect.logWarning(
        `embedded log has ${existing} shards; ignoring shard_count=${config.shardCount} (fixed at creation)`,
      )
    }
    const ranges = evenHashRanges(shardCount)
    const shardIds = ranges.map((_, i) => shardIdOf(i))
    const perShard = <A>(sql: (table: string) => string) =>
      ranges.map((_, i) => db.prepare(sql(`shard_${i}`)) as A)
    const newestRow = perShard<Database.Statement<[], Newest>>(
      (t) => `SELECT seq, arrived_at AS arrivedAt FROM ${t} ORDER BY seq DESC LIMIT 1`,
    )
    const highWater = db.prepare<[number], Newest>(
      "SELECT last_seq AS seq, last_arrived_at AS arrivedAt FROM shards WHERE shard = ?",
    )
    const saveHighWater = db.prepare<[number, number, number]>(
      "UPDATE shards SET last_seq = max(last_seq, ?), last_arrived_at = max(last_arrived_at, ?) WHERE shard = ?",
    )
    const inserts = perShard<Database.Statement<[number, string, Buffer | Uint8Array, number]>>(
      (t) => `INSERT INTO ${t} (seq, pkey, data, arrived_at) VALUES (?, ?, ?, ?)`,
    )
    const readAfter = perShard<
      Database.Statement<[number, number], { seq: number; pkey: string; data: Buffer; arrived_at: number }>
    >((t) => `SELECT seq, pkey, data, arrived_at FROM ${t} WHERE seq > ? ORDER BY seq LIMIT ?`)
    const firstAtOrAfter = perShard<Database.Statement<[number], { seq: number; arrived_at: number }>>(
      (t) => `SELECT seq, arrived_at FROM ${t} WHERE seq >= ? ORDER BY seq LIMIT 1`,
    )
    const nthThrough = perShard<Database.Statement<[number, number], { seq: number }>>(
      (t) => `SELECT seq FROM ${t} WHERE seq <= ? ORDER BY seq LIMIT 1 OFFSET ?`,
    )
    const sizeThrough = perShard<Database.Statement<[number], { n: number; bytes: number | null }>>(
      (t) => `SELECT count(*) AS n, ${RECORD_BYTES} AS bytes FROM ${t} WHERE seq <= ?`,
    )
    const deleteThrough = perShard<Database.Statement<[number]>>((t) => `DELETE FROM ${t} WHERE seq <= ?`)
    const readRetained = db.prepare<[], { retained_bytes: number }>(
      "SELECT retained_bytes FROM budget WHERE id = 0",
    )
    const writeRetained = db.prepare<[number]>("UPDATE budget SET retained_bytes = ? WHERE id = 0")
    const releaseRetained = db.prepare<[number]>(
      "UPDATE budget SET retained_bytes = retained_bytes - ? WHERE id = 0",
    )

    /** The newest this process has seen per shard: a lower bound, never ahead of the database. */
    const seen = { seq: ranges.map(() => 0), arrivedAt: ranges.map(() => 0) }
    const see = (shard: number, seq: number, arrivedAt: number) => {
      if (seq > seen.seq[shard]!) seen.seq[shard] = seq
      if (arrivedAt > seen.arrivedAt[shard]!) seen.arrivedAt[shard] = arrivedAt
    }

    /** From the database: the newest row, or the high-water mark once trimming emptied the shard. */
    const newest = (shard: number): Newest => {
      const result = newestRow[shard]!.get() ?? highWater.get(shard)!
      see(shard, result.seq, result.arrivedAt)
      return result
    }

    /**
     * Inserts the jobs in order, numbering each touched shard on from its newest row as the
     * database has it now (another process may have appended since this one last did). A job
     * that would take the retained bytes past `maxBytes` is refused (undefined), and so is every
     * job after it, so a refused append is never overtaken by a later one from the same commit.
     */
    const appendTx = db.transaction((jobs: ReadonlyArray<Job>, maxBytes: number) => {
      const before = readRetained.get()!.retained_bytes
      let retained = before
      const now = Date.now()
      const next = ranges.map(() => 0)
      const arrival = ranges.map(() => 0)
      const results: Array<ReadonlyArray<Appended> | undefined> = []
      let full = false
      for (const job of jobs) {
        full ||= retained + job.bytes > maxBytes
        if (full) {
          results.push(undefined)
          continue
        }
        retained += job.bytes
        const out: Array<Appended> = []
        for (let r = 0; r < job.records.length; r++) {
          const shard = job.shards[r]!
          if (next[shard] === 0) {
            const last = newest(shard)
            next[shard] = last.seq
            // Arrival times never go backwards within a shard (AtTimestamp binary-searches on
            // them), whatever this process's clock said before another's commit.
            arrival[shard] = Math.max(now, last.arrivedAt)
          }
          const seq = ++next[shard]!
          inserts[shard]!.run(seq, job.records[r]!.partitionKey, job.records[r]!.data, arrival[shard]!)
          out.push({ shardId: shardIds[shard]!, sequenceNumber: String(seq) })
        }
        results.push(out)
      }
      if (retained !== before) writeRetained.run(retained)
      return { results, retained, next, arrival }
    })

    /**
     * Deletes up to `maxRows` of a shard's oldest records, none past `limit()` — called inside
     * the transaction, so the lease checkpoints it reads are current — and returns how many went.
     */
    const trimTx = db.transaction((shard: number, maxRows: number, limit: () => number) => {
      const through = limit()
      if (!(through > 0)) return 0
      const end = Math.min(through, nthThrough[shard]!.get(through, maxRows - 1)?.seq ?? through)
      const size = sizeThrough[shard]!.get(end)!
      if (size.n === 0) return 0
      // The rows about to go may hold the high-water mark; keep it so sequence numbers never repeat.
      const last = newest(shard)
      saveHighWater.run(last.seq, last.arrivedAt, shard)
      deleteThrough[shard]!.run(end)
      releaseRetained.run(size.bytes ?? 0)
      return size.n
    })

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

    /** The first retained seq at or below `hi` whose arrival is at or after `at`, or undefined. */
    const firstSeqAt = (shard: number, at: number, hi: number): number | undefined => {
      let lo = 1
      let found: number | undefined
      while (lo <= hi) {
        const mid = Math.floor((lo + hi) / 2)
        const row = firstAtOrAfter[shard]!.get(mid)
        if (row === undefined || row.seq > hi) {
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

    return {
      shardCount,
      ranges,
      shardIds,
      /** Per shard id, what every processor application's lease has processed (`ConsumedThrough`). */
      consumedThrough: consumedThrough(db),
      shardOfKey,
      seen,
      newest,
      /** Records after `after`, within the limits (one record even if larger), and the reader's lag. */
      read: (shard: number, after: number, limits: ReadLimits) => {
        const records: Array<StreamRecord> = []
        let bytes = 0
        for (const row of readAfter[shard]!.iterate(after, limits.maxRecords)) {
          bytes += row.data.byteLength
          if (records.length > 0 && bytes > limits.maxBytes) break
          const { seq, pkey: partitionKey, data, arrived_at: arrivedAt } = row
          records.push({
            shardId: shardIds[shard]!,
            sequenceNumber: String(seq),
            partitionKey,
            data,
            arrivedAt,
          })
          after = seq
        }
        const last = records.at(-1)
        if (last === undefined) return { records, after, behindLatestMs: 0 }
        see(shard, after, last.arrivedAt)
        // Lag behind the shard's newest record as of now: other processes keep appending.
        const newestAt = newestRow[shard]!.get()?.arrivedAt ?? last.arrivedAt
        return { records, after, behindLatestMs: Math.max(0, newestAt - last.arrivedAt) }
      },
      firstSeqAt,
      /** Record bytes retained by every process's appends, from the database. */
      retainedBytes: () => readRetained.get()!.retained_bytes,
      /** One group commit, in an immediate transaction; throws what SQLite throws (e.g. SQLITE_BUSY). */
      commit: (jobs: ReadonlyArray<Job>, maxBytes: number) => {
        const outcome = appendTx.immediate(jobs, maxBytes)
        for (let shard = 0; shard < shardCount; shard++) {
          if (outcome.next[shard]! > 0) see(shard, outcome.next[shard]!, outcome.arrival[shard]!)
        }
        return outcome
      },
      trimChunk: (shard: number, maxRows: number, limit: () => number): number =>
        trimTx.immediate(shard, maxRows, limit),
    }
  })
