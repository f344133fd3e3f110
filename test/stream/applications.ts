/**
 * A processor application (fleet) in the embedded log's lease table, reduced to what retention
 * sees: its lease checkpoints. Tests that need "a consumer got this far" use it, as a processor's
 * shard workers would checkpoint through their leases.
 */
import { Effect } from "effect"
import type { Lease } from "../../src/stream/ShardLeases.js"
import * as SqliteShardLeases from "../../src/stream/SqliteShardLeases.js"
import { Position, type ShardInfo } from "../../src/stream/StreamLog.js"

/**
 * Opens `name`'s lease table in the embedded log in `dataDir` (closed with the scope) and creates
 * its leases at TrimHorizon for `shards`.
 */
export const application = (dataDir: string, name: string, shards: ReadonlyArray<ShardInfo>) =>
  Effect.gen(function* () {
    const leases = yield* SqliteShardLeases.make({ dataDir, application: name, fsync: false })
    yield* leases.ensure(shards, { _tag: "TrimHorizon" })
    const held = new Map<string, Lease>()
    const leaseOf = (shardId: string) =>
      Effect.flatMap(leases.list, (all) => {
        const lease = all.find((l) => l.shardId === shardId)
        return lease === undefined
          ? Effect.dieMessage(`${name} has no lease of ${shardId}`)
          : Effect.succeed(lease)
      })
    return {
      leases,
      /** Checkpoints `shardId` through `sequenceNumber` in its lease, taken by this application's worker. */
      processed: (shardId: string, sequenceNumber: string) =>
        Effect.gen(function* () {
          const lease = held.get(shardId) ?? (yield* leases.take(yield* leaseOf(shardId), `${name}-worker`))
          held.set(shardId, yield* leases.checkpoint(lease, { _tag: "AfterSequence", sequenceNumber }))
        }),
      /** Where the application resumes in `shardId`: after its lease's checkpoint, else the trim horizon. */
      startPosition: (shardId: string) =>
        Effect.map(leaseOf(shardId), (lease) =>
          lease.checkpoint._tag === "AfterSequence"
            ? Position.AfterSequence({ sequenceNumber: lease.checkpoint.sequenceNumber })
            : Position.TrimHorizon(),
        ),
    }
  })
