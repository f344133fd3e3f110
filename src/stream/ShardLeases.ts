/**
 * Shard leases: how any number of processor processes share one stream's shards, the model of
 * the Kinesis Client Library (KCL) without Java. One lease per shard, in a store all workers
 * reach (DynamoDB on AWS, the embedded log's SQLite database on one machine); each lease has an
 * owner, a lease counter, the consumer's checkpoint for that shard, and the shard's parents.
 *
 * Every write is conditional on the lease being exactly as the caller last saw it (owner and
 * counter), and every successful write increments the counter: a worker that lost its lease (it
 * was taken because the worker failed to renew it in time) can neither renew it nor checkpoint
 * it — a late checkpoint from a former owner is refused with `LeaseLost`. Time never enters the
 * store: a worker decides that a lease expired when it has seen its counter unchanged for the
 * failover time on its own clock, as KCL does, so workers need no synchronised clocks.
 *
 * Not in the contract (they belong to the coordinator that uses it): when to renew, how many
 * leases a worker should hold, which lease to steal, and children only after their parents are
 * processed to the end (`ShardEnd` checkpoints of every parent).
 */
import { Context, type Effect, Schema } from "effect"
import type { ShardInfo } from "./StreamLog.js"

/** Where a lease's consumer is in its shard. */
export const LeaseCheckpoint = Schema.Union(
  /** Nothing processed yet: start at the oldest retained record (KCL's TRIM_HORIZON). */
  Schema.TaggedStruct("TrimHorizon", {}),
  /** Nothing processed yet: start with records appended from now on (KCL's LATEST). */
  Schema.TaggedStruct("Latest", {}),
  /** Nothing processed yet: start at the first record that arrived at or after `at` (epoch ms). */
  Schema.TaggedStruct("AtTimestamp", { at: Schema.Number }),
  /** Every record up to and including `sequenceNumber` is processed. */
  Schema.TaggedStruct("AfterSequence", { sequenceNumber: Schema.String }),
  /** The shard is closed (split or merged) and processed to its end: its children may start. */
  Schema.TaggedStruct("ShardEnd", {}),
)
export type LeaseCheckpoint = typeof LeaseCheckpoint.Type

/** One shard's lease as the store holds it. */
export interface Lease {
  readonly shardId: string
  /** The worker holding it, or null when free (never taken, or released). */
  readonly owner: string | null
  /** Incremented by every successful write (take, renew, checkpoint, release). */
  readonly counter: number
  readonly checkpoint: LeaseCheckpoint
  /** The shard's parents (0, 1, or 2 for a merge), so a child waits for them. */
  readonly parentShardIds: ReadonlyArray<string>
}

/** The lease is no longer as the caller saw it: another worker took it, or it was released. */
export class LeaseLost extends Schema.TaggedError<LeaseLost>()("LeaseLost", {
  shardId: Schema.String,
  reason: Schema.String,
}) {
  override get message() {
    return `lease of ${this.shardId} lost: ${this.reason}`
  }
}

/** The lease store did not answer (throttled, unreachable, locked past its timeout). Retry. */
export class LeaseStoreUnavailable extends Schema.TaggedError<LeaseStoreUnavailable>()(
  "LeaseStoreUnavailable",
  { operation: Schema.String, reason: Schema.String },
) {
  override get message() {
    return `lease store unavailable during ${this.operation}: ${this.reason}`
  }
}

export interface ShardLeasesApi {
  /**
   * Creates a free lease, at `initial`, for every shard that has none (idempotent; existing leases
   * are left as they are), recording its parents.
   */
  readonly ensure: (
    shards: ReadonlyArray<ShardInfo>,
    initial: LeaseCheckpoint,
  ) => Effect.Effect<void, LeaseStoreUnavailable>
  /** Every lease, as the store holds it now (strongly consistent). */
  readonly list: Effect.Effect<ReadonlyArray<Lease>, LeaseStoreUnavailable>
  /** Takes `lease` (free, expired, or stolen) for `owner` if it is still exactly `lease`. */
  readonly take: (lease: Lease, owner: string) => Effect.Effect<Lease, LeaseLost | LeaseStoreUnavailable>
  /** Renews `lease` (counter + 1) if its owner still holds it at that counter. */
  readonly renew: (lease: Lease) => Effect.Effect<Lease, LeaseLost | LeaseStoreUnavailable>
  /** Stores the checkpoint (counter + 1) if the owner still holds the lease at that counter. */
  readonly checkpoint: (
    lease: Lease,
    checkpoint: LeaseCheckpoint,
  ) => Effect.Effect<Lease, LeaseLost | LeaseStoreUnavailable>
  /** Gives the lease up (owner null, counter + 1), keeping its checkpoint: graceful hand-off. */
  readonly release: (lease: Lease) => Effect.Effect<void, LeaseLost | LeaseStoreUnavailable>
}

/** The lease table of one consumer application (one processor fleet) of one stream. */
export class ShardLeases extends Context.Tag("sluice/stream/ShardLeases")<ShardLeases, ShardLeasesApi>() {}
