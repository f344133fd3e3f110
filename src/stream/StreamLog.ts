/**
 * The durable stream between ingestion and everything else. Shaped by Kinesis semantics so the
 * embedded log and Kinesis fit it without special cases: shards chosen by the MD5 of a
 * partition key, opaque ordered sequence numbers, pull-based reads from a position, and shards
 * that may split or merge. The log keeps no consumer state: where a processor fleet is in each
 * shard (its per-shard checkpoints) lives in its shard leases (`ShardLeases`), and a reader
 * resumes or replays by opening at a `Position`.
 */
import { Context, Data, type Effect, type Scope } from "effect"
import type { AppendError, ReadError, StreamUnavailable } from "./StreamError.js"

/** A record to append: the partition key picks the shard (one device = one key = one shard). */
export interface AppendRecord {
  readonly partitionKey: string
  readonly data: Uint8Array
}

/** Where an appended record landed. */
export interface Appended {
  readonly shardId: string
  readonly sequenceNumber: string
}

/** A record read back from a shard. */
export interface StreamRecord {
  readonly shardId: string
  readonly sequenceNumber: string
  readonly partitionKey: string
  readonly data: Uint8Array
  /** When the stream accepted the record (Kinesis: ApproximateArrivalTimestamp), epoch ms. */
  readonly arrivedAt: number
}

/** A shard and its lineage. A shard with an `endingSequenceNumber` is closed (split or merged). */
export interface ShardInfo {
  readonly shardId: string
  readonly parentShardId?: string | undefined
  readonly adjacentParentShardId?: string | undefined
  readonly hashKeyStart: bigint
  readonly hashKeyEnd: bigint
  readonly endingSequenceNumber?: string | undefined
}

/**
 * Where a reader starts in a shard: resuming after a lease checkpoint is `AfterSequence`, replay
 * is `AtSequence` or `AtTimestamp`.
 */
export type Position = Data.TaggedEnum<{
  /** The oldest retained record. */
  TrimHorizon: {}
  /** Only records appended after the reader opens. */
  Latest: {}
  AtSequence: { readonly sequenceNumber: string }
  AfterSequence: { readonly sequenceNumber: string }
  /** The first record that arrived at or after `at` (epoch ms). */
  AtTimestamp: { readonly at: number }
}>
export const Position = Data.taggedEnum<Position>()

/** Bounds on one pull. Both always apply; a single record larger than `maxBytes` is still returned alone. */
export interface ReadLimits {
  readonly maxRecords: number
  readonly maxBytes: number
}

export const defaultReadLimits: ReadLimits = { maxRecords: 1000, maxBytes: 4 * 1024 * 1024 }

/** One pull's result. */
export interface ReadBatch {
  readonly records: ReadonlyArray<StreamRecord>
  /** The shard is closed and every record has been read: move on to its children. */
  readonly endOfShard: boolean
  /** How far the last record is behind the shard's newest, in ms (0 when caught up). */
  readonly behindLatestMs: number
}

/**
 * A pull-based cursor over one shard. Nothing is fetched until `pull` is called, so a consumer
 * that stops pulling is the backpressure; a pull may return no records (caught up).
 */
export interface ShardReader {
  readonly shardId: string
  readonly pull: (limits?: ReadLimits) => Effect.Effect<ReadBatch, ReadError>
}

/** The durable stream contract. */
export interface StreamLogApi {
  /**
   * Appends a batch; succeeds, with one result per record in order, only once every record is
   * durable. Concurrent appends are group-committed by the backend.
   */
  readonly append: (
    records: ReadonlyArray<AppendRecord>,
  ) => Effect.Effect<ReadonlyArray<Appended>, AppendError>
  /** The stream's shards, open and closed (not yet expired), with parent links. */
  readonly listShards: Effect.Effect<ReadonlyArray<ShardInfo>, StreamUnavailable>
  /** Opens a reader on a shard at a position; the reader lives until the scope closes. */
  readonly reader: (shardId: string, position: Position) => Effect.Effect<ShardReader, ReadError, Scope.Scope>
}

/** The StreamLog service. Backends: `SqliteStreamLog` (embedded, default), `KinesisStreamLog`. */
export class StreamLog extends Context.Tag("sluice/StreamLog")<StreamLog, StreamLogApi>() {}
