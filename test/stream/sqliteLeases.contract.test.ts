import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, Layer } from "effect"
import { LeaseLost, ShardLeases } from "../../src/stream/ShardLeases.js"
import * as SqliteShardLeases from "../../src/stream/SqliteShardLeases.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { StreamLog } from "../../src/stream/StreamLog.js"
import { leaseContract } from "./leases.contract.js"

const tempDir = () => mkdtempSync(join(tmpdir(), "sluice-leases-"))

leaseContract(
  "embedded (SQLite)",
  SqliteShardLeases.layerWith({ dataDir: tempDir(), application: "contract" }),
)

/** One connection's view of the store, as a separate process would have it. */
const connect = (dataDir: string, application: string) =>
  Layer.build(SqliteShardLeases.layerWith({ dataDir, application })).pipe(
    Effect.map(Context.get(ShardLeases)),
  )

describe("SqliteShardLeases across connections", () => {
  it.scoped("a take through one connection is seen by, and fences, another", () =>
    Effect.gen(function* () {
      const dataDir = tempDir()
      const one = yield* connect(dataDir, "fleet")
      const two = yield* connect(dataDir, "fleet")
      yield* one.ensure([{ shardId: "s-0", hashKeyStart: 0n, hashKeyEnd: 1n }], { _tag: "TrimHorizon" })
      const [seenByTwo] = yield* two.list
      expect(seenByTwo).toMatchObject({ shardId: "s-0", owner: null, counter: 0 })

      const a = yield* one.take(seenByTwo!, "worker-a")
      expect(yield* two.list).toEqual([a])
      const late = yield* Effect.either(two.take(seenByTwo!, "worker-b"))
      expect(Either.isLeft(late) && late.left instanceof LeaseLost).toBe(true)

      // Worker b steals through its own connection; a's late checkpoint through the other fails.
      const b = yield* two.take((yield* two.list)[0]!, "worker-b")
      const stale = yield* Effect.either(one.checkpoint(a, { _tag: "AfterSequence", sequenceNumber: "7" }))
      expect(Either.isLeft(stale) && stale.left instanceof LeaseLost).toBe(true)
      expect(yield* one.list).toEqual([b])
    }),
  )

  it.scoped("applications sharing the file see only their own leases", () =>
    Effect.gen(function* () {
      const dataDir = tempDir()
      const fleet = yield* connect(dataDir, "fleet")
      const other = yield* connect(dataDir, "other")
      yield* fleet.ensure([{ shardId: "s-0", hashKeyStart: 0n, hashKeyEnd: 1n }], { _tag: "Latest" })
      expect(yield* other.list).toEqual([])
      expect(yield* fleet.list).toHaveLength(1)
    }),
  )

  it.scoped("lives in the embedded log's database alongside an open log", () =>
    Effect.gen(function* () {
      const dataDir = tempDir()
      const log = yield* Layer.build(SqliteStreamLog.layerWith(SqliteStreamLog.defaults(dataDir))).pipe(
        Effect.map(Context.get(StreamLog)),
      )
      const leases = yield* connect(dataDir, "processor")
      const shards = yield* log.listShards
      yield* leases.ensure(shards, { _tag: "TrimHorizon" })
      const all = yield* leases.list
      expect(all.map((l) => l.shardId)).toEqual(shards.map((s) => s.shardId))
      const taken = yield* leases.take(all[0]!, "worker-a")
      yield* log.append([{ partitionKey: "device-1", data: new Uint8Array([1]) }])
      expect((yield* leases.renew(taken)).counter).toBe(2)
    }),
  )
})
