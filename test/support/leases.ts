/** Reading a processor's shard leases in tests: where its checkpoints are. */
import { join } from "node:path"
import Database from "better-sqlite3"
import { Effect } from "effect"
import { type LeaseCheckpoint, ShardLeases } from "../../src/stream/ShardLeases.js"
import * as SqliteShardLeases from "../../src/stream/SqliteShardLeases.js"

/** The default processor application's leases in the embedded log in `dataDir`. */
export const embeddedLeases = (dataDir: string, application = "processor") =>
  SqliteShardLeases.layerWith({ dataDir, application, fsync: false })

/** The checkpoint in `shardId`'s lease (TrimHorizon when it has none yet). */
export const leaseCheckpoint = (shardId: string) =>
  Effect.gen(function* () {
    const leases = yield* ShardLeases
    const lease = (yield* leases.list).find((l) => l.shardId === shardId)
    return lease?.checkpoint ?? ({ _tag: "TrimHorizon" } as LeaseCheckpoint)
  })

/** Runs one statement on the embedded log's database (`dataDir/stream.sqlite`), as an operator would. */
export const rawStreamSql = (dataDir: string, sql: string) => {
  const db = new Database(join(dataDir, "stream.sqlite"))
  try {
    db.exec(sql)
  } finally {
    db.close()
  }
}
