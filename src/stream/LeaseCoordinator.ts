/**
 * One worker's lease coordinator over `ShardLeases`, the loop of KCL's LeaseCoordinator: it renews
 * the leases it holds, takes free and expired ones up to its fair share, steals one at a time from
 * the most loaded worker, and takes a child shard only once its parents are processed to the end.
 *
 * Its user (the processor) learns which shards it holds through `held` and `changes`, checkpoints
 * through the coordinator (so a checkpoint never races a renewal of the same lease), and hands its
 * shards off with `shutdown`. Closing the scope without `shutdown` stops renewing without
 * releasing: the leases fail over after `failoverMs`, as after a crash, so no lease is released
 * before its final checkpoint.
 */
import { Clock, Effect, Fiber, Queue, Ref } from "effect"
import {
  type Lease,
  type LeaseCheckpoint,
  LeaseLost,
  type LeaseStoreUnavailable,
  ShardLeases,
} from "./ShardLeases.js"
import type { ShardInfo } from "./StreamLog.js"

export interface LeaseCoordinatorOptions<E> {
  readonly workerId: string
  /** The stream's shards now, read on every take round: a shard without a lease gets one, with its parents. */
  readonly shards: Effect.Effect<ReadonlyArray<ShardInfo>, E>
  /** How long a lease's counter must stay unchanged before another worker may take it. */
  readonly failoverMs?: number
  /** Default failoverMs / 3: two renewals may fail before the lease is at risk. */
  readonly renewEveryMs?: number
  /**
   * Default failoverMs / 2: a dead worker's leases are taken within failoverMs + takeEveryMs of
   * its last renewal (failoverMs being a multiple of it), and a new worker reaches its fair share
   * one steal per round without hammering the store.
   */
  readonly takeEveryMs?: number
  /** Where a new lease starts. Default TrimHorizon. */
  readonly initial?: LeaseCheckpoint
}

export type LeaseChange =
  | { readonly _tag: "Acquired"; readonly shardId: string; readonly lease: Lease }
  | { readonly _tag: "Lost"; readonly shardId: string }

export interface LeaseCoordinator {
  /** The leases this worker holds now, by shard id. */
  readonly held: Effect.Effect<ReadonlyMap<string, Lease>>
  /** Every acquisition and loss, in order (a ShardEnd checkpoint's release is not a loss). */
  readonly changes: Queue.Dequeue<LeaseChange>
  /**
   * Stores a checkpoint through the held lease; LeaseLost if it is not (or no longer) held. A
   * ShardEnd checkpoint also releases the lease: the shard needs no worker, its children may start.
   */
  readonly checkpoint: (
    shardId: string,
    checkpoint: LeaseCheckpoint,
  ) => Effect.Effect<Lease, LeaseLost | LeaseStoreUnavailable>
  /** Stops taking and renewing, and releases every held lease: call after the final checkpoints. */
  readonly shutdown: Effect.Effect<void>
}

interface Seen {
  readonly counter: number
  readonly since: number
}

const DEFAULT_FAILOVER_MS = 10_000

export const make = <E>(options: LeaseCoordinatorOptions<E>) =>
  Effect.gen(function* () {
    const leases = yield* ShardLeases
    const self = options.workerId
    const failoverMs = options.failoverMs ?? DEFAULT_FAILOVER_MS
    const renewEveryMs = options.renewEveryMs ?? failoverMs / 3
    const takeEveryMs = options.takeEveryMs ?? failoverMs / 2
    const initial: LeaseCheckpoint = options.initial ?? { _tag: "TrimHorizon" }

    const held = yield* Ref.make<ReadonlyMap<string, Lease>>(new Map())
    // When each held lease was last written by us: past failoverMs others may have taken it.
    const renewedAt = new Map<string, number>()
    const seen = new Map<string, Seen>()
    const changes = yield* Queue.unbounded<LeaseChange>()
    // Every store write of this worker goes through one permit: a checkpoint and a renewal of
    // the same lease at the same counter would otherwise fence each other.
    const permit = yield* Effect.makeSemaphore(1)

    const hold = (lease: Lease, now: number) => {
      renewedAt.set(lease.shardId, now)
      return Ref.update(held, (m) => new Map(m).set(lease.shardId, lease))
    }
    const forget = (shardId: string) => {
      renewedAt.delete(shardId)
      return Ref.update(held, (m) => {
        const next = new Map(m)
        next.delete(shardId)
        return next
      })
    }
    const lose = (shardId: string) =>
      Effect.zipRight(forget(shardId), Queue.offer(changes, { _tag: "Lost", shardId }))

    const renewAll = Effect.gen(function* () {
      for (const lease of (yield* Ref.get(held)).values()) {
        const result = yield* Effect.either(leases.renew(lease))
        const now = yield* Clock.currentTimeMillis
        if (result._tag === "Right") yield* hold(result.right, now)
        else if (result.left._tag === "LeaseLost") yield* lose(lease.shardId)
        // The store did not answer: keep processing until others could have taken the lease.
        else if (now - (renewedAt.get(lease.shardId) ?? now) >= failoverMs) yield* lose(lease.shardId)
      }
    }).pipe(permit.withPermits(1))

    const takeRound = Effect.gen(function* () {
      // New shards (a fresh table, a split or merge) get their leases; known ones cost no write.
      let all = yield* leases.list
      const known = new Set(all.map((l) => l.shardId))
      const missing = (yield* options.shards).filter((s) => !known.has(s.shardId))
      if (missing.length > 0) {
        yield* leases.ensure(missing, initial)
        all = yield* leases.list
      }
      const now = yield* Clock.currentTimeMillis
      // Expiry by our own clock only: when did we last see each counter move.
      const listed = new Set(all.map((l) => l.shardId))
      for (const id of seen.keys()) if (!listed.has(id)) seen.delete(id)
      for (const l of all) {
        const before = seen.get(l.shardId)
        if (before === undefined || before.counter !== l.counter) {
          seen.set(l.shardId, { counter: l.counter, since: now })
        }
      }
      const mine = yield* Ref.get(held)
      const byId = new Map(all.map((l) => [l.shardId, l]))
      const finished = (id: string) => {
        const parent = byId.get(id)
        return parent === undefined || parent.checkpoint._tag === "ShardEnd"
      }
      const workable = all.filter((l) => l.checkpoint._tag !== "ShardEnd" && l.parentShardIds.every(finished))
      const expired = (l: Lease) => now - seen.get(l.shardId)!.since >= failoverMs
      // Ours in the store but not held: left by an earlier run of this worker id, nobody renews it.
      const takeable = (l: Lease) =>
        l.owner === null || (l.owner === self ? !mine.has(l.shardId) : expired(l))

      const load = new Map<string, number>()
      for (const l of workable) {
        if (l.owner !== null && l.owner !== self && !expired(l)) {
          load.set(l.owner, (load.get(l.owner) ?? 0) + 1)
        }
      }
      const target = Math.ceil(workable.length / (load.size + 1))
      const need = target - mine.size
      if (need <= 0) return

      const take = (lease: Lease) =>
        leases.take(lease, self).pipe(
          Effect.flatMap((taken) =>
            Effect.zipRight(
              hold(taken, now),
              Queue.offer(changes, { _tag: "Acquired", shardId: taken.shardId, lease: taken }),
            ),
          ),
          // Another worker took it first: the next round sees the store as it is.
          Effect.catchTag("LeaseLost", () => Effect.void),
        )

      const free = workable.filter(takeable).slice(0, need)
      if (free.length > 0) {
        yield* Effect.forEach(free, take, { discard: true })
        return
      }
      // One steal per round, from the most loaded worker, and only if it is above the target —
      // or at it while we need more than one (KCL's rule: with 4 shards, 3 workers and 2/2/0, the
      // newcomer takes one, ending at 2/1/1). A worker one short of the target never steals from
      // one at it, so two workers never trade a lease back and forth.
      let victim: string | undefined
      let most = 0
      for (const [owner, count] of load) {
        if (count > most) {
          victim = owner
          most = count
        }
      }
      const loot = workable.find((l) => l.owner === victim && !expired(l))
      if (victim !== undefined && loot !== undefined && (most > target || (most === target && need > 1))) {
        yield* take(loot)
      }
    }).pipe(permit.withPermits(1))

    // A failed round is retried by the next one; the loops must outlive a store that did not answer.
    const every = <A, R>(ms: number, round: Effect.Effect<A, E | LeaseStoreUnavailable, R>) =>
      Effect.forever(
        Effect.zipRight(
          Effect.sleep(ms),
          round.pipe(Effect.catchAll((e) => Effect.logWarning("lease coordinator round failed", e))),
        ),
      )

    // The first round before returning, so a lone worker holds its shards as soon as it starts.
    yield* takeRound.pipe(Effect.catchAll((e) => Effect.logWarning("lease coordinator round failed", e)))
    const renewer = yield* Effect.forkScoped(every(renewEveryMs, renewAll))
    const taker = yield* Effect.forkScoped(every(takeEveryMs, takeRound))

    const checkpoint = (shardId: string, checkpoint: LeaseCheckpoint) =>
      Effect.gen(function* () {
        const lease = (yield* Ref.get(held)).get(shardId)
        if (lease === undefined) {
          return yield* new LeaseLost({ shardId, reason: `checkpoint: not held by ${self}` })
        }
        const stored = yield* leases
          .checkpoint(lease, checkpoint)
          .pipe(Effect.tapErrorTag("LeaseLost", () => lose(shardId)))
        if (checkpoint._tag !== "ShardEnd") {
          yield* hold(stored, yield* Clock.currentTimeMillis)
          return stored
        }
        yield* forget(shardId)
        // Still recorded as ShardEnd if the release fails: children wait only on the checkpoint.
        yield* leases.release(stored).pipe(Effect.ignore)
        return stored
      }).pipe(permit.withPermits(1))

    const shutdown = Effect.gen(function* () {
      yield* Fiber.interrupt(taker)
      yield* Fiber.interrupt(renewer)
      yield* Effect.gen(function* () {
        for (const lease of (yield* Ref.get(held)).values()) {
          // A lease that cannot be released is left to fail over, as if this worker had died.
          yield* leases.release(lease).pipe(Effect.ignore)
          yield* lose(lease.shardId)
        }
      }).pipe(permit.withPermits(1))
    })

    const coordinator: LeaseCoordinator = { held: Ref.get(held), changes, checkpoint, shutdown }
    return coordinator
  })
