/**
 * Consumer checkpoints in a SQLite table, for readers that are not a processor fleet (tools, a
 * single reader). The embedded log keeps them in its own database (one transaction domain with the
 * records); the Kinesis backend keeps them in a local SQLite file. Processors never use these:
 * their checkpoints live in their shard leases (`ShardLeases`), which the embedded log's
 * retention reads too (`consumedThrough`).
 */
import type Database from "better-sqlite3"
import { Schema } from "effect"
import { compareSequenceNumbers } from "./Shards.js"
import { Position } from "./StreamLog.js"

const StoredPosition = Schema.parseJson(
  Schema.Union(
    Schema.TaggedStruct("TrimHorizon", {}),
    Schema.TaggedStruct("Latest", {}),
    Schema.TaggedStruct("AtSequence", { sequenceNumber: Schema.String }),
    Schema.TaggedStruct("AfterSequence", { sequenceNumber: Schema.String }),
    Schema.TaggedStruct("AtTimestamp", { at: Schema.Number }),
  ),
)
const encode = Schema.encodeSync(StoredPosition)
const decode = Schema.decodeUnknownSync(StoredPosition)

/** Synchronous checkpoint store; callers wrap it in effects and map errors. */
export interface CheckpointTable {
  /** The stored position, if any. */
  readonly get: (consumer: string, shardId: string) => Position | undefined
  /** Moves the checkpoint forward to "after `sequenceNumber`"; an older checkpoint is a no-op. */
  readonly advance: (consumer: string, shardId: string, sequenceNumber: string) => void
  /** Stores any position (replay). */
  readonly reset: (consumer: string, shardId: string, position: Position) => void
  /** Every consumer that has a checkpoint in some shard. */
  readonly consumers: () => ReadonlyArray<string>
  /**
   * The highest sequence number every consumer has processed in a shard: 0 when some known
   * consumer (one with a checkpoint in any shard, or an application with a lease in any shard)
   * has none here yet, Infinity when there are no consumers at all. Reads the `leases` table of
   * `SqliteShardLeases` when it exists: a processor application counts as a consumer, at its
   * lease's checkpoint (a ShardEnd lease has consumed all of its shard).
   */
  readonly consumedThrough: (shardId: string) => number
}

export const checkpointTable = (db: Database.Database): CheckpointTable => {
  db.exec(`CREATE TABLE IF NOT EXISTS checkpoints (
    consumer TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    position TEXT NOT NULL,
    PRIMARY KEY (consumer, shard_id)
  ) WITHOUT ROWID`)
  const select = db.prepare<[string, string], { position: string }>(
    "SELECT position FROM checkpoints WHERE consumer = ? AND shard_id = ?",
  )
  const upsert = db.prepare<[string, string, string]>(
    "INSERT INTO checkpoints (consumer, shard_id, position) VALUES (?, ?, ?) " +
      "ON CONFLICT (consumer, shard_id) DO UPDATE SET position = excluded.position",
  )
  const selectConsumers = db.prepare<[], { consumer: string }>("SELECT DISTINCT consumer FROM checkpoints")
  const get = (consumer: string, shardId: string): Position | undefined => {
    const row = select.get(consumer, shardId)
    return row === undefined ? undefined : (decode(row.position) as Position)
  }
  const advance = db.transaction((consumer: string, shardId: string, sequenceNumber: string) => {
    const current = get(consumer, shardId)
    // A redelivered or late checkpoint never moves a consumer backwards; resetting is explicit.
    if (
      current?._tag === "AfterSequence" &&
      compareSequenceNumbers(current.sequenceNumber, sequenceNumber) >= 0
    ) {
      return
    }
    upsert.run(consumer, shardId, encode(Position.AfterSequence({ sequenceNumber })))
  })
  const consumers = () => selectConsumers.all().map((row) => row.consumer)
  const leasesExist = db.prepare<[], { n: number }>(
    "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'leases'",
  )
  // Leases are checked per call: another process may create the table at any time.
  let leaseCheckpoints: Database.Statement<[string], { checkpoint: string | null }> | undefined
  const leaseThrough = (shardId: string) => {
    if (leaseCheckpoints === undefined) {
      if (leasesExist.get()!.n === 0) return Number.POSITIVE_INFINITY
      // Every application, with its lease of this shard if it has one.
      leaseCheckpoints = db.prepare(
        "SELECT l.checkpoint AS checkpoint FROM (SELECT DISTINCT application FROM leases) a " +
          "LEFT JOIN leases l ON l.application = a.application AND l.shard_id = ?",
      )
    }
    let through = Number.POSITIVE_INFINITY
    for (const { checkpoint } of leaseCheckpoints.all(shardId)) {
      const c =
        checkpoint === null
          ? undefined
          : (JSON.parse(checkpoint) as { _tag: string; sequenceNumber?: string })
      through = Math.min(
        through,
        c?._tag === "ShardEnd"
          ? Number.POSITIVE_INFINITY
          : c?._tag === "AfterSequence"
            ? Number(c.sequenceNumber)
            : 0,
      )
    }
    return through
  }
  return {
    get,
    // Immediate: a read-then-write transaction started deferred fails at once (SQLITE_BUSY, no
    // waiting) when another process committed between its read and its write.
    advance: (consumer, shardId, sequenceNumber) => advance.immediate(consumer, shardId, sequenceNumber),
    reset: (consumer, shardId, position) => void upsert.run(consumer, shardId, encode(position)),
    consumers,
    consumedThrough: (shardId) => {
      let through = leaseThrough(shardId)
      for (const consumer of consumers()) {
        const p = get(consumer, shardId)
        through = Math.min(through, p?._tag === "AfterSequence" ? Number(p.sequenceNumber) : 0)
      }
      return through
    },
  }
}
