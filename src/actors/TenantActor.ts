/**
 * One tenant's actor: a fiber with a bounded mailbox of TenantBatches. It fans readings out to
 * live subscribers as they are sent to it (before they wait for an insert), buffers them into
 * inserts by size and time, writes them (and dead letters) to the store with a dedup token
 * derived from their stream positions, and only then settles the batches' tickets so their shard
 * workers may checkpoint. A store that keeps failing for this tenant (`spill_after_ms`) gets its
 * batches parked in the spill instead — durable, tokens kept — so the shards, shared with every
 * other tenant, move on; a second fiber drains the spill, oldest first, once inserts succeed.
 */
import { createHash } from "node:crypto"
import { Duration, Effect, Fiber, Option, Queue, Schedule } from "effect"
import type { MetricsApi } from "../observability/Metrics.js"
import type { DeadLetter, TelemetryRow, TelemetryStoreApi } from "../storage/TelemetryStore.js"
import type { LiveFeedApi } from "./LiveFeed.js"
import type { ProcessorConfig } from "./ProcessorConfig.js"
import type { TenantBatch } from "./Protocol.js"
import type { Spill, SpillUnavailable } from "./Spill.js"

export interface TenantActor {
  readonly tenantId: string
  /** Waits while the mailbox is full: that wait is what stops the shard workers pulling. */
  readonly send: (batch: TenantBatch) => Effect.Effect<void>
  /** Stops taking new batches after the ones already sent, stores them, and returns. */
  readonly drain: Effect.Effect<void>
  /**
   * Looks in the spill again: entries another processor left there (it stopped, or its machine
   * is gone) are drained oldest first, as this actor's own are.
   */
  readonly wakeSpill: Effect.Effect<void>
}

/**
 * Identifies a set of batches by their stream positions; the insert dedup tokens derive from it,
 * so the same batches (retried, replayed, or drained from the spill) always carry the same tokens.
 */
const positionsOf = (batches: ReadonlyArray<TenantBatch>) => {
  const hash = createHash("sha256")
  for (const b of batches) hash.update(`${b.shardId}:${b.firstSequenceNumber}-${b.lastSequenceNumber}\n`)
  return hash.digest("hex")
}
const dedupToken = (tenantId: string, kind: string, positions: string) =>
  createHash("sha256").update(`${tenantId}\n${kind}\n${positions}`).digest("hex")

/** Storage down is expected to heal: back off up to 5 s between attempts. */
const storeRetry = Schedule.exponential(Duration.millis(50), 2).pipe(
  Schedule.either(Schedule.spaced("5 seconds")),
)

export const make = (
  tenantId: string,
  deps: {
    readonly config: ProcessorConfig
    readonly store: TelemetryStoreApi
    readonly live: LiveFeedApi
    readonly metrics: MetricsApi
    readonly spill: Spill
  },
) =>
  Effect.gen(function* () {
    const { config, store, live, metrics, spill } = deps
    const mailbox = yield* Queue.bounded<TenantBatch>(config.mailboxBatches)
    let draining = false
    /** From taking a batch until it is stored: drain must not interrupt in between. */
    let busy = false
    /** The tenant has batches in the spill: new ones join them there, oldest drained first. */
    let spilled = Option.isSome(yield* Effect.orDie(spill.oldest(tenantId)))
    const mode = yield* Effect.makeSemaphore(1)
    const wake = yield* Queue.sliding<void>(1)

    /** Stores rows and dead letters under tokens derived from `positions`; retried per `schedule`. */
    const store_ = (
      rows: ReadonlyArray<TelemetryRow>,
      deadLetters: ReadonlyArray<DeadLetter>,
      positions: string,
      schedule: Schedule.Schedule<unknown, unknown>,
    ) =>
      Effect.gen(function* () {
        const started = performance.now()
        if (rows.length > 0) yield* store.insert(rows, dedupToken(tenantId, "rows", positions))
        if (deadLetters.length > 0) {
          yield* store.insertDeadLetters(deadLetters, dedupToken(tenantId, "dead letters", positions))
        }
        if (rows.length > 0) {
          metrics.insertLatency.observe((performance.now() - started) / 1000)
          metrics.stored.inc(rows.length)
        }
        if (deadLetters.length > 0) metrics.deadLetters.inc(deadLetters.length)
      }).pipe(
        Effect.tapError((error) => Effect.logWarning(`storing ${rows.length} rows failed; retrying`, error)),
        Effect.retry(schedule),
      )

    /** Puts a batch in the spill; true if it is there (durably), false if the spill refused. */
    const toSpill = (
      rows: ReadonlyArray<TelemetryRow>,
      deadLetters: ReadonlyArray<DeadLetter>,
      positions: string,
    ) =>
      spill.put(tenantId, { token: positions, rows, deadLetters }).pipe(
        Effect.tap(() =>
          Effect.sync(() => {
            spilled = true
            metrics.spilled.inc(rows.length + deadLetters.length)
          }),
        ),
        Effect.zipRight(Queue.offer(wake, undefined)),
        Effect.as(true),
        Effect.catchAll((error) =>
          Effect.as(
            Effect.logError("the spill refused a batch; it waits in the stream instead", error),
            false,
          ),
        ),
      )

    const flush = (batches: ReadonlyArray<TenantBatch>) =>
      Effect.gen(function* () {
        const rows: Array<TelemetryRow> = []
        const deadLetters: Array<DeadLetter> = []
        for (const b of batches) {
          for (const r of b.rows) rows.push(r)
          for (const d of b.deadLetters) deadLetters.push(d)
        }
        const positions = positionsOf(batches)
        const joined = yield* mode.withPermits(1)(
          Effect.suspend(() => (spilled ? toSpill(rows, deadLetters, positions) : Effect.succeed(false))),
        )
        if (!joined) {
          const direct = yield* Effect.either(
            store_(
              rows,
              deadLetters,
              positions,
              storeRetry.pipe(Schedule.upTo(Duration.millis(config.spillAfterMs))),
            ),
          )
          if (direct._tag === "Left") {
            // This tenant's storage keeps failing: park its batch so the shards move on for everyone.
            const parked = yield* mode.withPermits(1)(toSpill(rows, deadLetters, positions))
            if (!parked) yield* store_(rows, deadLetters, positions, storeRetry).pipe(Effect.orDie)
          }
        }
        for (const b of batches) yield* b.ticket.settle()
      })

    /** A spill that does not answer (a disk error, S3 throttling) is retried: its entries wait. */
    const spillRetry = <A>(effect: Effect.Effect<A, SpillUnavailable>) =>
      effect.pipe(
        Effect.tapError((error) => Effect.logWarning("the spill did not answer; retrying", error)),
        Effect.retry(storeRetry),
        Effect.orDie,
      )

    /** Drains the spill, oldest first, whenever there is something in it. */
    const drainSpill = Effect.gen(function* () {
      yield* Queue.take(wake)
      for (;;) {
        const next = yield* spillRetry(spill.oldest(tenantId))
        if (Option.isNone(next)) {
          const empty = yield* mode.withPermits(1)(
            Effect.flatMap(spillRetry(spill.oldest(tenantId)), (again) =>
              Effect.sync(() => {
                if (Option.isNone(again)) spilled = false
                return Option.isNone(again)
              }),
            ),
          )
          if (empty) return
          continue
        }
        const entry = next.value
        yield* store_(entry.rows, entry.deadLetters, entry.token, storeRetry).pipe(Effect.orDie)
        yield* spillRetry(spill.remove(entry.id))
      }
    }).pipe(Effect.forever, Effect.annotateLogs({ tenant: tenantId, spill: true }))
    yield* Effect.forkScoped(drainSpill)
    if (spilled) yield* Queue.offer(wake, undefined)

    /** Takes batches until `maxBatchRows` readings or `flushIntervalMs` after the first. */
    const collect = Effect.gen(function* () {
      const first = yield* Queue.take(mailbox)
      busy = true
      const batches = [first]
      let count = first.rows.length
      const deadline = Date.now() + config.flushIntervalMs
      while (count < config.maxBatchRows) {
        // Draining: store what is there now, no waiting for more.
        const left = draining ? 0 : deadline - Date.now()
        const next = yield* Queue.poll(mailbox).pipe(
          Effect.flatMap((o) =>
            Option.isSome(o) || left <= 0
              ? Effect.succeed(o)
              : Effect.timeout(Queue.take(mailbox), left).pipe(Effect.option),
          ),
        )
        if (Option.isNone(next)) break
        batches.push(next.value)
        count += next.value.rows.length
      }
      return batches
    })

    const loop = Effect.forever(
      Effect.flatMap(collect, (batches) => {
        return Effect.ensuring(
          flush(batches),
          Effect.sync(() => {
            busy = false
          }),
        )
      }),
    ).pipe(Effect.annotateLogs("tenant", tenantId))

    const fiber = yield* Effect.forkScoped(loop)
    return {
      tenantId,
      // Live subscribers get readings as they are decoded, not after the insert they will join:
      // an insert can take hundreds of milliseconds, a live feed should not.
      send: (batch: TenantBatch) =>
        Effect.zipRight(live.publish(tenantId, batch.rows), Queue.offer(mailbox, batch)),
      wakeSpill: Queue.offer(wake, undefined),
      drain: Effect.gen(function* () {
        draining = true
        // Senders have stopped; the loop is done once the mailbox is empty and no flush runs.
        while (busy || (yield* Queue.size(mailbox)) > 0) yield* Effect.sleep("5 millis")
        yield* Fiber.interrupt(fiber)
      }),
    } satisfies TenantActor
  })
