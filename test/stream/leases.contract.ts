/**
 * The ShardLeases contract suite. Every backend runs it against one store shared by all its
 * tests (the layer is built once), so each test works on shard ids of its own.
 */
import { randomUUID } from "node:crypto"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Either, type Layer } from "effect"
import { type LeaseCheckpoint, LeaseLost, ShardLeases } from "../../src/stream/ShardLeases.js"
import type { ShardInfo } from "../../src/stream/StreamLog.js"

const shard = (shardId: string, parents: Partial<ShardInfo> = {}): ShardInfo => ({
  shardId,
  hashKeyStart: 0n,
  hashKeyEnd: 2n ** 128n - 1n,
  ...parents,
})

/** Shard ids no other test (or earlier run on a persistent store) uses. */
const ids = (count: number) => {
  const prefix = `t-${randomUUID()}`
  return Array.from({ length: count }, (_, i) => `${prefix}-${i}`)
}

const trimHorizon: LeaseCheckpoint = { _tag: "TrimHorizon" }

/** The stored lease of a shard, read back through `list`. */
const stored = (shardId: string) =>
  Effect.flatMap(ShardLeases, (leases) => leases.list).pipe(
    Effect.map((all) => all.find((l) => l.shardId === shardId)),
  )

/** Ensures one free lease at the trim horizon and returns it as stored. */
const freshLease = Effect.gen(function* () {
  const leases = yield* ShardLeases
  const [id] = ids(1)
  yield* leases.ensure([shard(id!)], trimHorizon)
  return (yield* stored(id!))!
})

const expectLost = <A, E>(effect: Effect.Effect<A, E, ShardLeases>, shardId: string) =>
  Effect.gen(function* () {
    const result = yield* Effect.either(effect)
    expect(Either.isLeft(result)).toBe(true)
    const error = Either.isLeft(result) ? result.left : undefined
    expect(error).toBeInstanceOf(LeaseLost)
    expect((error as LeaseLost).shardId).toBe(shardId)
  })

export const leaseContract = (name: string, store: Layer.Layer<ShardLeases, unknown>) =>
  describe(`ShardLeases contract: ${name}`, () => {
    layer(store, { timeout: 60_000 })((it) => {
      it.effect("ensure creates free leases at the initial checkpoint, with the shards' parents", () =>
        Effect.gen(function* () {
          const leases = yield* ShardLeases
          const [a, b, split, merged] = ids(4)
          yield* leases.ensure(
            [
              shard(a!),
              shard(b!),
              shard(split!, { parentShardId: a! }),
              shard(merged!, { parentShardId: a!, adjacentParentShardId: b! }),
            ],
            { _tag: "AtTimestamp", at: 1_700_000_000_000 },
          )
          const all = yield* leases.list
          const byId = (id: string) => all.find((l) => l.shardId === id)
          for (const id of [a!, b!, split!, merged!]) {
            expect(byId(id)).toMatchObject({
              shardId: id,
              owner: null,
              counter: 0,
              checkpoint: { _tag: "AtTimestamp", at: 1_700_000_000_000 },
            })
          }
          expect(byId(a!)!.parentShardIds).toEqual([])
          expect(byId(split!)!.parentShardIds).toEqual([a!])
          expect([...byId(merged!)!.parentShardIds].sort()).toEqual([a!, b!].sort())
        }),
      )

      it.effect("ensure is idempotent: existing leases keep their owner, counter and checkpoint", () =>
        Effect.gen(function* () {
          const leases = yield* ShardLeases
          const [taken, free] = ids(2)
          yield* leases.ensure([shard(taken!), shard(free!)], trimHorizon)
          const mine = yield* leases.take((yield* stored(taken!))!, "worker-a")
          const done = yield* leases.checkpoint(mine, { _tag: "AfterSequence", sequenceNumber: "42" })
          yield* leases.ensure([shard(taken!), shard(free!)], { _tag: "Latest" })
          expect(yield* stored(taken!)).toEqual(done)
          expect(yield* stored(free!)).toMatchObject({ owner: null, counter: 0, checkpoint: trimHorizon })
        }),
      )

      it.effect("take of a free lease sets the owner and increments the counter", () =>
        Effect.gen(function* () {
          const leases = yield* ShardLeases
          const lease = yield* freshLease
          const taken = yield* leases.take(lease, "worker-a")
          expect(taken).toMatchObject({ shardId: lease.shardId, owner: "worker-a", counter: 1 })
          expect(taken.checkpoint).toEqual(trimHorizon)
          expect(yield* stored(lease.shardId)).toEqual(taken)
        }),
      )

      it.effect("take with a stale lease (old counter) fails LeaseLost and changes nothing", () =>
        Effect.gen(function* () {
          const leases = yield* ShardLeases
          const lease = yield* freshLease
          const taken = yield* leases.take(lease, "worker-a")
          yield* expectLost(leases.take(lease, "worker-b"), lease.shardId)
          expect(yield* stored(lease.shardId)).toEqual(taken)
          // Free again, as in the stale snapshot, but not the same lease: the counter tells them apart.
          yield* leases.release(taken)
          yield* expectLost(leases.take(lease, "worker-b"), lease.shardId)
          expect(yield* stored(lease.shardId)).toMatchObject({ owner: null, counter: taken.counter + 1 })
        }),
      )

      it.effect("a steal fences the former owner: its renew and late checkpoint fail LeaseLost", () =>
        Effect.gen(function* () {
          const leases = yield* ShardLeases
          const lease = yield* freshLease
          const a = yield* leases.take(lease, "worker-a")
          const b = yield* leases.take(a, "worker-b")
          expect(b).toMatchObject({ owner: "worker-b", counter: a.counter + 1 })
          const bCheckpoint: LeaseCheckpoint = { _tag: "AfterSequence", sequenceNumber: "100" }
          const b2 = yield* leases.checkpoint(b, bCheckpoint)
          yield* expectLost(leases.renew(a), lease.shardId)
          yield* expectLost(
            leases.checkpoint(a, { _tag: "AfterSequence", sequenceNumber: "999" }),
            lease.shardId,
          )
          yield* expectLost(leases.release(a), lease.shardId)
          expect(yield* stored(lease.shardId)).toEqual(b2)
          expect(b2.checkpoint).toEqual(bCheckpoint)
        }),
      )

      it.effect("renew increments the counter only for the owner at the current counter", () =>
        Effect.gen(function* () {
          const leases = yield* ShardLeases
          const lease = yield* freshLease
          yield* expectLost(leases.renew(lease), lease.shardId)
          const taken = yield* leases.take(lease, "worker-a")
          const renewed = yield* leases.renew(taken)
          expect(renewed).toMatchObject({ owner: "worker-a", counter: taken.counter + 1 })
          const again = yield* leases.renew(renewed)
          expect(again.counter).toBe(taken.counter + 2)
          yield* expectLost(leases.renew(taken), lease.shardId)
          yield* expectLost(leases.renew({ ...again, owner: "worker-b" }), lease.shardId)
          expect(yield* stored(lease.shardId)).toEqual(again)
        }),
      )

      it.effect("checkpoint stores every checkpoint kind exactly, counter + 1 each time", () =>
        Effect.gen(function* () {
          const leases = yield* ShardLeases
          const lease = yield* freshLease
          let current = yield* leases.take(lease, "worker-a")
          const kinds: ReadonlyArray<LeaseCheckpoint> = [
            { _tag: "Latest" },
            { _tag: "AtTimestamp", at: 1_712_345_678_901 },
            {
              _tag: "AfterSequence",
              sequenceNumber: "49590338271490256608559692538361571095921575989136588898",
            },
            { _tag: "TrimHorizon" },
            { _tag: "ShardEnd" },
          ]
          for (const kind of kinds) {
            const next = yield* leases.checkpoint(current, kind)
            expect(next).toMatchObject({ owner: "worker-a", counter: current.counter + 1 })
            expect(next.checkpoint).toEqual(kind)
            expect((yield* stored(lease.shardId))!.checkpoint).toEqual(kind)
            current = next
          }
        }),
      )

      it.effect("release frees the lease keeping its checkpoint; another owner takes it from there", () =>
        Effect.gen(function* () {
          const leases = yield* ShardLeases
          const lease = yield* freshLease
          const a = yield* leases.take(lease, "worker-a")
          const at: LeaseCheckpoint = { _tag: "AfterSequence", sequenceNumber: "12345" }
          const a2 = yield* leases.checkpoint(a, at)
          yield* leases.release(a2)
          const released = (yield* stored(lease.shardId))!
          expect(released).toMatchObject({ owner: null, counter: a2.counter + 1, checkpoint: at })
          yield* expectLost(leases.checkpoint(a2, { _tag: "ShardEnd" }), lease.shardId)
          const b = yield* leases.take(released, "worker-b")
          expect(b).toMatchObject({ owner: "worker-b", counter: released.counter + 1, checkpoint: at })
        }),
      )

      it.effect("two owners racing to take one free lease: exactly one wins", () =>
        Effect.gen(function* () {
          const leases = yield* ShardLeases
          for (let round = 0; round < 5; round++) {
            const lease = yield* freshLease
            const results = yield* Effect.all(
              [Effect.either(leases.take(lease, "worker-a")), Effect.either(leases.take(lease, "worker-b"))],
              { concurrency: "unbounded" },
            )
            const wins = results.filter(Either.isRight).map((r) => r.right)
            const losses = results.filter(Either.isLeft).map((r) => r.left)
            expect(wins).toHaveLength(1)
            expect(losses).toHaveLength(1)
            expect(losses[0]).toBeInstanceOf(LeaseLost)
            expect(yield* stored(lease.shardId)).toEqual(wins[0])
          }
        }),
      )
    })
  })
