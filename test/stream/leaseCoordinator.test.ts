import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Effect, Either, Exit, Layer, Queue, Scope, TestClock } from "effect"
import * as LeaseCoordinator from "../../src/stream/LeaseCoordinator.js"
import {
  LeaseLost,
  LeaseStoreUnavailable,
  ShardLeases,
  type ShardLeasesApi,
} from "../../src/stream/ShardLeases.js"
import * as SqliteShardLeases from "../../src/stream/SqliteShardLeases.js"
import type { ShardInfo } from "../../src/stream/StreamLog.js"

const FAILOVER = 10_000
const TAKE_EVERY = FAILOVER / 2
const RENEW_EVERY = FAILOVER / 3

const shard = (shardId: string, parentShardId?: string): ShardInfo => ({
  shardId,
  hashKeyStart: 0n,
  hashKeyEnd: 1n,
  ...(parentShardId === undefined ? {} : { parentShardId }),
})
const fourShards = ["s-0", "s-1", "s-2", "s-3"].map((id) => shard(id))

/** A fresh store; each coordinator gets its own connection, as a separate process would. */
const store = Effect.sync(() => mkdtempSync(join(tmpdir(), "sluice-coordinator-")))
const connect = (dataDir: string) =>
  Layer.build(SqliteShardLeases.layerWith({ dataDir, application: "fleet" })).pipe(
    Effect.map(Context.get(ShardLeases)),
  )

const worker = (dataDir: string, workerId: string, shards: ReadonlyArray<ShardInfo> = fourShards) =>
  Effect.flatMap(connect(dataDir), (leases) =>
    LeaseCoordinator.make({ workerId, shards: Effect.succeed(shards), failoverMs: FAILOVER }).pipe(
      Effect.provideService(ShardLeases, leases),
    ),
  )

const heldIds = (c: LeaseCoordinator.LeaseCoordinator) => Effect.map(c.held, (m) => [...m.keys()].sort())
const drain = (c: LeaseCoordinator.LeaseCoordinator) =>
  Effect.map(Queue.takeAll(c.changes), (all) => Chunk.toArray(all).map((ch) => `${ch._tag}:${ch.shardId}`))
const owners = (dataDir: string) =>
  Effect.flatMap(connect(dataDir), (l) => l.list).pipe(Effect.map((all) => all.map((l) => l.owner)))

describe("LeaseCoordinator", () => {
  it.scoped("a lone worker takes every lease and renews them every renewEveryMs", () =>
    Effect.gen(function* () {
      const dataDir = yield* store
      const a = yield* worker(dataDir, "a")
      expect(yield* heldIds(a)).toEqual(["s-0", "s-1", "s-2", "s-3"])
      expect(yield* drain(a)).toEqual(["Acquired:s-0", "Acquired:s-1", "Acquired:s-2", "Acquired:s-3"])
      const leases = yield* connect(dataDir)
      const before = (yield* leases.list).map((l) => l.counter)
      yield* TestClock.adjust(RENEW_EVERY)
      expect((yield* leases.list).map((l) => l.counter)).toEqual(before.map((c) => c + 1))
    }),
  )

  it.scoped("two workers over 4 shards end up 2 and 2, the loser dropping stolen shards on renew", () =>
    Effect.gen(function* () {
      const dataDir = yield* store
      const a = yield* worker(dataDir, "a")
      const b = yield* worker(dataDir, "b")
      // One steal per round: the first at start, the second one take interval later.
      expect((yield* b.held).size).toBe(1)
      yield* TestClock.adjust(TAKE_EVERY)
      expect((yield* b.held).size).toBe(2)
      yield* TestClock.adjust(TAKE_EVERY)
      const [heldA, heldB] = [yield* heldIds(a), yield* heldIds(b)]
      expect(heldA).toHaveLength(2)
      expect(heldB).toHaveLength(2)
      expect([...heldA, ...heldB].sort()).toEqual(["s-0", "s-1", "s-2", "s-3"])
      expect((yield* drain(a)).filter((c) => c.startsWith("Lost")).sort()).toEqual(
        heldB.map((id) => `Lost:${id}`),
      )
      // Stable: no thrashing once both are at their share.
      yield* TestClock.adjust(FAILOVER * 3)
      expect(yield* heldIds(a)).toEqual(heldA)
      expect(yield* heldIds(b)).toEqual(heldB)
    }),
  )

  it.scoped("no thrashing: a worker below target steals nothing from one at the target", () =>
    Effect.gen(function* () {
      const dataDir = yield* store
      const three = fourShards.slice(0, 3)
      const a = yield* worker(dataDir, "a", three)
      const b = yield* worker(dataDir, "b", three)
      yield* TestClock.adjust(TAKE_EVERY)
      // Target is ceil(3 / 2) = 2: b, at 1, must not take a's second lease back and forth.
      const [heldA, heldB] = [yield* heldIds(a), yield* heldIds(b)]
      expect([heldA.length, heldB.length]).toEqual([2, 1])
      yield* drain(a)
      yield* drain(b)
      yield* TestClock.adjust(FAILOVER * 3)
      expect([yield* heldIds(a), yield* heldIds(b)]).toEqual([heldA, heldB])
      expect([...(yield* drain(a)), ...(yield* drain(b))]).toEqual([])
    }),
  )

  it.scoped(
    "a third worker over 4 shards held 2 and 2 takes one (KCL's rule at the target), ending 2/1/1, stable",
    () =>
      Effect.gen(function* () {
        const dataDir = yield* store
        const a = yield* worker(dataDir, "a")
        const b = yield* worker(dataDir, "b")
        yield* TestClock.adjust(TAKE_EVERY * 2)
        expect([(yield* a.held).size, (yield* b.held).size]).toEqual([2, 2])
        // c's target is ceil(4 / 3) = 2; both others are at it, and c needs more than one.
        const c = yield* worker(dataDir, "c")
        expect((yield* c.held).size).toBe(1)
        yield* TestClock.adjust(FAILOVER * 3)
        const sizes = [(yield* a.held).size, (yield* b.held).size, (yield* c.held).size]
        expect([...sizes].sort()).toEqual([1, 1, 2])
        const all = [...(yield* heldIds(a)), ...(yield* heldIds(b)), ...(yield* heldIds(c))].sort()
        expect(all).toEqual(["s-0", "s-1", "s-2", "s-3"])
        // Nothing moved after the first steal.
        expect((yield* drain(c)).filter((x) => x.startsWith("Lost"))).toEqual([])
        expect((yield* drain(c)).length).toBe(0)
      }),
  )

  it.scoped("a worker that stops renewing has its leases taken within failoverMs + one take interval", () =>
    Effect.gen(function* () {
      const dataDir = yield* store
      const scopeA = yield* Scope.make()
      const a = yield* Scope.extend(worker(dataDir, "a"), scopeA)
      const b = yield* worker(dataDir, "b")
      yield* TestClock.adjust(TAKE_EVERY * 2)
      expect((yield* a.held).size).toBe(2)
      // Dies: its scope closes with no release.
      yield* Scope.close(scopeA, Exit.void)
      // Not before failoverMs: a is only presumed dead once its counter stood still that long.
      yield* TestClock.adjust(FAILOVER - 1)
      expect((yield* b.held).size).toBe(2)
      yield* TestClock.adjust(TAKE_EVERY + 1)
      expect(yield* heldIds(b)).toEqual(["s-0", "s-1", "s-2", "s-3"])
      expect(yield* owners(dataDir)).toEqual(["b", "b", "b", "b"])
    }),
  )

  it.scoped("a worker whose store stops answering renewals drops its shards once failoverMs passed", () =>
    Effect.gen(function* () {
      const dataDir = yield* store
      const real = yield* connect(dataDir)
      let down = false
      const flaky: ShardLeasesApi = {
        ...real,
        renew: (lease) =>
          down
            ? Effect.fail(new LeaseStoreUnavailable({ operation: "renew", reason: "test" }))
            : real.renew(lease),
      }
      const a = yield* LeaseCoordinator.make({
        workerId: "a",
        shards: Effect.succeed(fourShards),
        failoverMs: FAILOVER,
      }).pipe(Effect.provideService(ShardLeases, flaky))
      yield* drain(a)
      down = true
      // Renewals at 1/3 and 2/3 of failoverMs fail; the shards are kept until others could take them.
      yield* TestClock.adjust(FAILOVER - 1)
      expect((yield* a.held).size).toBe(4)
      yield* TestClock.adjust(RENEW_EVERY + 1)
      expect((yield* a.held).size).toBe(0)
      expect((yield* drain(a)).sort()).toEqual(["Lost:s-0", "Lost:s-1", "Lost:s-2", "Lost:s-3"])
    }),
  )

  it.scoped("a checkpoint through a lost lease is refused with LeaseLost, and reported lost", () =>
    Effect.gen(function* () {
      const dataDir = yield* store
      const a = yield* worker(dataDir, "a")
      yield* drain(a)
      const ok = yield* a.checkpoint("s-0", { _tag: "AfterSequence", sequenceNumber: "5" })
      expect(ok.checkpoint).toEqual({ _tag: "AfterSequence", sequenceNumber: "5" })
      const intruder = yield* connect(dataDir)
      const current = (yield* intruder.list).find((l) => l.shardId === "s-0")!
      yield* intruder.take(current, "intruder")
      const late = yield* Effect.either(a.checkpoint("s-0", { _tag: "AfterSequence", sequenceNumber: "9" }))
      expect(Either.isLeft(late) && late.left instanceof LeaseLost).toBe(true)
      expect(yield* drain(a)).toEqual(["Lost:s-0"])
      expect(yield* heldIds(a)).toEqual(["s-1", "s-2", "s-3"])
      const again = yield* Effect.either(a.checkpoint("s-0", { _tag: "ShardEnd" }))
      expect(Either.isLeft(again) && again.left instanceof LeaseLost).toBe(true)
      expect((yield* intruder.list)[0]!.checkpoint).toEqual({ _tag: "AfterSequence", sequenceNumber: "5" })
    }),
  )

  it.scoped("graceful shutdown releases the leases and the other worker takes them without failover", () =>
    Effect.gen(function* () {
      const dataDir = yield* store
      const a = yield* worker(dataDir, "a")
      const b = yield* worker(dataDir, "b")
      yield* TestClock.adjust(TAKE_EVERY * 2)
      const heldA = yield* heldIds(a)
      expect(heldA).toHaveLength(2)
      yield* a.checkpoint(heldA[0]!, { _tag: "AfterSequence", sequenceNumber: "77" })
      yield* drain(a)
      yield* a.shutdown
      expect((yield* a.held).size).toBe(0)
      expect((yield* drain(a)).sort()).toEqual(heldA.map((id) => `Lost:${id}`))
      const late = yield* Effect.either(a.checkpoint(heldA[1]!, { _tag: "ShardEnd" }))
      expect(Either.isLeft(late) && late.left instanceof LeaseLost).toBe(true)
      yield* TestClock.adjust(TAKE_EVERY)
      expect(yield* heldIds(b)).toEqual(["s-0", "s-1", "s-2", "s-3"])
      expect((yield* b.held).get(heldA[0]!)!.checkpoint).toEqual({
        _tag: "AfterSequence",
        sequenceNumber: "77",
      })
      // Nothing left behind: a stays away from the store after shutdown.
      yield* TestClock.adjust(FAILOVER * 2)
      expect(yield* owners(dataDir)).toEqual(["b", "b", "b", "b"])
    }),
  )

  it.scoped("a child shard is taken only after its parent's ShardEnd checkpoint", () =>
    Effect.gen(function* () {
      const dataDir = yield* store
      const shards = [shard("p"), shard("c", "p"), shard("orphan", "gone")]
      const a = yield* worker(dataDir, "a", shards)
      // The orphan's parent has no lease (expired from the stream): nothing to wait for.
      expect(yield* heldIds(a)).toEqual(["orphan", "p"])
      yield* TestClock.adjust(TAKE_EVERY * 3)
      expect(yield* heldIds(a)).toEqual(["orphan", "p"])
      yield* a.checkpoint("p", { _tag: "AfterSequence", sequenceNumber: "3" })
      yield* TestClock.adjust(TAKE_EVERY)
      expect(yield* heldIds(a)).toEqual(["orphan", "p"])
      yield* a.checkpoint("p", { _tag: "ShardEnd" })
      expect(yield* heldIds(a)).toEqual(["orphan"])
      yield* TestClock.adjust(TAKE_EVERY)
      expect(yield* heldIds(a)).toEqual(["c", "orphan"])
      const stored = yield* Effect.flatMap(connect(dataDir), (l) => l.list)
      expect(stored.find((l) => l.shardId === "p")).toMatchObject({
        owner: null,
        checkpoint: { _tag: "ShardEnd" },
      })
    }),
  )
})
