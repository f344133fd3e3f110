/**
 * The embedded log's storage layer: one SQLite database (WAL) with one table per shard, the
 * sequence number as its rowid, and the per-shard state the log keeps in memory (high-water
 * marks, retained bytes). SqliteStreamLog builds the contract — group commit, retention, readers,
 * checkpoints — on top of it.
 */
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import Database from "better-sqlite3"
import { Effect } from "effect"
import { evenHashRanges } from "./Shards.js"
import type { EmbeddedStreamConfig } from "./StreamConfig.js"
import { StreamUnavailable } from "./StreamError.js"

/** Kinesis-style shard ids, so logs and checkpoints read the same on both backends. */
export const shardIdOf = (index: number) => `shardId-${String(index).padStart(12, "0")}`

export interface Row {
  readonly seq: number
  readonly pkey: string
  readonly data: Buffer
  readonly arrived_at: number
}

export const unavailable = (operation: string) => (cause: unknown) =>
  new StreamUnavailable({ operation, reason: cause instanceof Error ? cause.message : String(cause) })

/** Opens (or creates) the database; the scope closes it. */
export const open = (config: EmbeddedStreamConfig) =>
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
    const retainedBytes = ranges.reduce(
      (sum, _, i) => sum + (bytesThrough[i]!.get(Number.MAX_SAFE_INTEGER)?.bytes ?? 0),
      0,
    )

    const tables = {
      db,
      shardCount,
      ranges,
      shardIds,
      /** Newest sequence number per shard (never decreases, survives trimming). */
      lastSeq,
      /** Newest arrival time per shard, epoch ms. */
      lastArrivedAt,
      inserts,
      readAfter,
      /** Bytes of records retained (and queued to commit), against the disk budget. */
      retainedBytes,
      trimThrough: (shard: number, seq: number): number => trimThroughImpl(shard, seq),
      firstSeqAt: (shard: number, at: number): number | undefined => firstSeqAtImpl(shard, at),
    }
    /** Deletes records up to `seq` in a shard, returning the bytes freed. */
    const trimThroughImpl = (shard: number, seq: number): number => {
      const bytes = bytesThrough[shard]!.get(seq)?.bytes ?? 0
      if (bytes > 0) {
        // The rows about to go may hold the high-water mark; keep it so sequence numbers never repeat.
        saveHighWater.run(lastSeq[shard]!, lastArrivedAt[shard]!, shard)
        deleteThrough[shard]!.run(seq)
      }
      tables.retainedBytes -= bytes
      return bytes
    }
    /** The first retained seq whose arrival is at or after `at`, or undefined if none. */
    const firstSeqAtImpl = (shard: number, at: number): number | undefined => {
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
    return tables
  })
