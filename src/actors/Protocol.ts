/**
 * What flows between the actors. Kept apart from their behaviour (ShardWorker, DeviceActor,
 * TenantActor) so the protocol can be read in one place.
 */
import { Deferred, Effect } from "effect"
import type { DeadLetter, TelemetryRow } from "../storage/TelemetryStore.js"

/**
 * One pulled shard batch's claim on its checkpoint: the shard worker may checkpoint the batch's
 * last sequence number only when every tenant actor that got readings from it has stored them.
 */
export class BatchTicket {
  private remaining: number
  readonly done: Deferred.Deferred<void>
  constructor(
    readonly shardId: string,
    readonly lastSequenceNumber: string,
    parts: number,
  ) {
    this.remaining = parts
    this.done = Effect.runSync(Deferred.make<void>())
    if (parts === 0) Effect.runSync(Deferred.succeed(this.done, undefined))
  }
  /** One part (one tenant's share) is stored. */
  settle(): Effect.Effect<void> {
    return --this.remaining === 0 ? Deferred.succeed(this.done, undefined) : Effect.void
  }
}

/** A shard batch's readings for one tenant: the tenant actor's only message. */
export interface TenantBatch {
  readonly tenantId: string
  readonly rows: ReadonlyArray<TelemetryRow>
  readonly deadLetters: ReadonlyArray<DeadLetter>
  /** Stream positions the batch covers, for a deterministic insert dedup token. */
  readonly shardId: string
  readonly firstSequenceNumber: string
  readonly lastSequenceNumber: string
  readonly ticket: BatchTicket
}
