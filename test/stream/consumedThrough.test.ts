/** What bounds the embedded log's retention: processor applications' lease checkpoints, nothing else. */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { Effect } from "effect"
import { consumedThrough } from "../../src/stream/ConsumedThrough.js"
import type { LeaseCheckpoint, ShardLeasesApi } from "../../src/stream/ShardLeases.js"
import * as SqliteShardLeases from "../../src/stream/SqliteShardLeases.js"
import type { ShardInfo } from "../../src/stream/StreamLog.js"

const shard = (shardId: string): ShardInfo => ({ shardId, hashKeyStart: 0n, hashKeyEnd: 0n })

/** The database file, as the log opens it beside the leases; closed with the scope. */
const openDb = (dataDir: string) =>
  Effect.acquireRelease(
    Effect.sync(() => new Database(join(dataDir, "stream.sqlite"))),
    (db) => Effect.sync(() => db.close()),
  )

/** Takes `shardId`'s lease and stores `checkpoint` in it. */
const checkpoint = (leases: ShardLeasesApi, shardId: string, checkpoint: LeaseCheckpoint) =>
  Effect.gen(function* () {
    const lease = (yield* leases.list).find((l) => l.shardId === shardId)!
    yield* leases.checkpoint(yield* leases.take(lease, "worker"), checkpoint)
  })

describe("consumedThrough", () => {
  it.scoped("is unbounded with no leases table, and with a leases table that holds no application", () =>
    Effect.gen(function* () {
      const dataDir = mkdtempSync(join(tmpdir(), "sluice-consumed-"))
      const db = yield* openDb(dataDir)
      const through = consumedThrough(db)
      expect(through("s-0")).toBe(Number.POSITIVE_INFINITY)
      // Another connection creates the table later, as a processor starting after the log does.
      yield* SqliteShardLeases.make({ dataDir, application: "fleet", fsync: false })
      expect(through("s-0")).toBe(Number.POSITIVE_INFINITY)
    }),
  )

  it.scoped("counts each application at its lease's checkpoint, and the lowest of them", () =>
    Effect.gen(function* () {
      const dataDir = mkdtempSync(join(tmpdir(), "sluice-consumed-"))
      const db = yield* openDb(dataDir)
      const through = consumedThrough(db)
      const a = yield* SqliteShardLeases.make({ dataDir, application: "a", fsync: false })
      yield* a.ensure(["s-0", "s-1", "s-2", "s-3", "s-4", "s-5"].map(shard), { _tag: "TrimHorizon" })
      yield* checkpoint(a, "s-1", { _tag: "AfterSequence", sequenceNumber: "1700000000000042" })
      yield* checkpoint(a, "s-2", { _tag: "ShardEnd" })
      yield* checkpoint(a, "s-3", { _tag: "Latest" })
      yield* checkpoint(a, "s-4", { _tag: "AtTimestamp", at: Date.now() })
      yield* checkpoint(a, "s-5", { _tag: "AfterSequence", sequenceNumber: "1700000000000042" })
      // Not started (TrimHorizon, Latest, AtTimestamp): nothing processed yet.
      expect(through("s-0")).toBe(0)
      expect(through("s-3")).toBe(0)
      expect(through("s-4")).toBe(0)
      expect(through("s-1")).toBe(1700000000000042)
      // Processed to its end: everything, past any sequence number the shard holds.
      expect(through("s-2")).toBe(Number.MAX_SAFE_INTEGER)
      // A shard the application has no lease of (yet): it may still start there from the oldest.
      expect(through("s-9")).toBe(0)

      // A second application: every shard is bounded by the one behind.
      const b = yield* SqliteShardLeases.make({ dataDir, application: "b", fsync: false })
      yield* b.ensure(["s-1", "s-2", "s-5"].map(shard), { _tag: "TrimHorizon" })
      yield* checkpoint(b, "s-1", { _tag: "AfterSequence", sequenceNumber: "1700000000000099" })
      yield* checkpoint(b, "s-2", { _tag: "AfterSequence", sequenceNumber: "1700000000000007" })
      expect(through("s-1")).toBe(1700000000000042)
      expect(through("s-2")).toBe(1700000000000007)
      expect(through("s-5")).toBe(0)
    }),
  )

  it.scoped("ignores a checkpoints table left by older versions", () =>
    Effect.gen(function* () {
      const dataDir = mkdtempSync(join(tmpdir(), "sluice-consumed-"))
      const db = yield* openDb(dataDir)
      db.exec(
        "CREATE TABLE checkpoints (consumer TEXT NOT NULL, shard_id TEXT NOT NULL, position TEXT NOT NULL, " +
          "PRIMARY KEY (consumer, shard_id)) WITHOUT ROWID",
      )
      db.prepare("INSERT INTO checkpoints VALUES ('tool', 's-0', ?)").run(
        JSON.stringify({ _tag: "TrimHorizon" }),
      )
      expect(consumedThrough(db)("s-0")).toBe(Number.POSITIVE_INFINITY)
    }),
  )
})
