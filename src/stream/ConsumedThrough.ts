/**
 * How far the embedded log's retention may trim a shard: never past what every processor
 * application (processor fleet) has processed. The only checkpoints are the applications' shard
 * leases (`SqliteShardLeases`: the `leases` table in the log's own database, keyed by
 * application), so that is all this reads; a reader that takes no lease (a live tail, a tool)
 * pins nothing, and records expire under it by age and the disk budget alone.
 *
 * Per shard, each application counts at its lease's checkpoint:
 * - no lease for the shard (yet), or one still at its start (TrimHorizon, Latest, AtTimestamp):
 *   nothing processed, 0 — the application may still start from the oldest retained record;
 * - AfterSequence: through that sequence number;
 * - ShardEnd: the whole shard (Number.MAX_SAFE_INTEGER, past any sequence number it holds).
 * The shard's bound is the lowest over every application; with no `leases` table, or no
 * application in it, there is none (Infinity): only the age and the disk budget bound retention.
 * The two differ where the budget reclaims unexpired records: everything processed frees them,
 * no application at all frees none (nobody has said it is done with them).
 *
 * Databases written by older versions may still hold a `checkpoints` table (consumer checkpoints
 * of the StreamLog contract, since removed). It is left alone, neither read nor dropped: its rows
 * pin no retention any more, and dropping it would be DDL on a file other processes share.
 */
import type Database from "better-sqlite3"
import { Schema } from "effect"
import { LeaseCheckpoint } from "./ShardLeases.js"

const decodeCheckpoint = Schema.decodeUnknownSync(Schema.parseJson(LeaseCheckpoint))

/** How far one application's lease checkpoint (NULL: it has no lease here) has processed its shard. */
const through = (checkpoint: string | null): number => {
  if (checkpoint === null) return 0
  const c = decodeCheckpoint(checkpoint)
  switch (c._tag) {
    case "ShardEnd":
      return Number.MAX_SAFE_INTEGER
    case "AfterSequence":
      return Number(c.sequenceNumber)
    case "TrimHorizon":
    case "Latest":
    case "AtTimestamp":
      return 0
  }
}

/**
 * The bound of `db`'s leases, per shard id: the highest sequence number every processor
 * application has processed in that shard (see the module comment). Synchronous, so a trim
 * transaction calls it inside itself and reads the checkpoints as they are at that moment.
 */
export const consumedThrough = (db: Database.Database): ((shardId: string) => number) => {
  const leasesExist = db.prepare<[], { n: number }>(
    "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'leases'",
  )
  // Looked for on every call until found: another process may create the table at any time.
  let leaseCheckpoints: Database.Statement<[string], { checkpoint: string | null }> | undefined
  return (shardId) => {
    if (leaseCheckpoints === undefined) {
      if (leasesExist.get()!.n === 0) return Number.POSITIVE_INFINITY
      // Every application, with its lease of this shard if it has one (NULL if not).
      leaseCheckpoints = db.prepare(
        "SELECT l.checkpoint AS checkpoint FROM (SELECT DISTINCT application FROM leases) a " +
          "LEFT JOIN leases l ON l.application = a.application AND l.shard_id = ?",
      )
    }
    let bound = Number.POSITIVE_INFINITY
    for (const row of leaseCheckpoints.all(shardId)) bound = Math.min(bound, through(row.checkpoint))
    return bound
  }
}
