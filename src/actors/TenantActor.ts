/**
 * One tenant's actor: a fiber with a bounded mailbox of TenantBatches. It fans readings out to
 * live subscribers as they are sent to it (before they wait for an insert), buffers them into
 * inserts by size and time, writes them (and dead letters) to the store with a dedup token
 * derived from their stream positions, retries a failing store without end (the stream holds the
 * data meanwhile), and only then settles the batches' tickets so their shard workers may
 * checkpoint.
 */
import { createHash } from "node:crypto"
import { Duration, Effect, Fiber, Option, Queue, Schedule } from "effect"
import type { MetricsApi } from "../observability/Metrics.js"
import type { DeadLetter, TelemetryRow, TelemetryStoreApi } from "../storage/TelemetryStore.js"
import type { LiveFeedApi } from "./LiveFeed.js"
import type { ProcessorConfig } from "./ProcessorConfig.js"
import type { TenantBatch } from "./Protocol.js"

export interface TenantActor {
  readonly tenantId: string
  /** Waits while the mailbox is full: that wait is what stops the shard workers pulling. */
  readonly send: (batch: TenantBatch) => Effect.Effect<void>
  /** Stops taking new batches after the ones already sent, stores them, and returns. */
  readonly drain: Effect.Effect<void>
}

/** Deterministic for the same batches: a redelivered identical insert is dropped by ClickHouse. */
const dedupToken = (tenantId: string, kind: string, batches: ReadonlyArray<TenantBatch>) => {
  const hash = createHash("sha256").update(`${tenantId}\n${kind}\n`)
  for (const b of batches) hash.update(`${b.shardId}:${b.firstSequenceNumber}-${b.lastSequenceNumber}\n`)
  return hash.digest("hex")
}

/** Storage down is expected to heal: back off up to 5 s between attempts, forever. */
const storeRetry = Schedule.exponential(Duration.millis(50), 2).pipe(
  Schedule.either(Schedule.spaced(Duration.seconds(5))),
  Schedule.compose(Schedule.elapsed),
)

export const make = (
  tenantId: string,
  deps: {
    readonly config: ProcessorConfig
    readonly store: TelemetryStoreApi
    readonly live: LiveFeedApi
    readonly metrics: MetricsApi
  },
) =>
  Effect.gen(function* () {
    const { config, store, live, metrics } = deps
    const mailbox = yield* Queue.bounded<TenantBatch>(config.mailboxBatches)
    let draining = false
    /** From taking a batch until it is stored: drain must not interrupt in between. */
    let busy = false

    const write = <A>(
      kind: string,
      items: ReadonlyArray<A>,
      batches: ReadonlyArray<TenantBatch>,
      insert: (items: ReadonlyArray<A>, token: string) => Effect.Effect<void, unknown>,
    ) =>
      items.length === 0
        ? Effect.void
        : insert(items, dedupToken(tenantId, kind, batches)).pipe(
            Effect.tapError((error) =>
              Effect.logWarning(`storing ${items.length} ${kind} failed; retrying`, error).pipe(
                Effect.annotateLogs("tenant", tenantId),
              ),
            ),
            Effect.retry(storeRetry),
            Effect.orDie,
          )

    const flush = (batches: ReadonlyArray<TenantBatch>) =>
      Effect.gen(function* () {
        const rows: Array<TelemetryRow> = []
        const deadLetters: Array<DeadLetter> = []
        for (const b of batches) {
          for (const r of b.rows) rows.push(r)
          for (const d of b.deadLetters) deadLetters.push(d)
        }
        const started = performance.now()
        yield* write("rows", rows, batches, store.insert)
        if (rows.length > 0) {
          metrics.insertLatency.observe((performance.now() - started) / 1000)
          metrics.stored.inc(rows.length)
        }
        yield* write("dead letters", deadLetters, batches, store.insertDeadLetters)
        if (deadLetters.length > 0) metrics.deadLetters.inc(deadLetters.length)
        for (const b of batches) yield* b.ticket.settle()
      })

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
      drain: Effect.gen(function* () {
        draining = true
        // Senders have stopped; the loop is done once the mailbox is empty and no flush runs.
        while (busy || (yield* Queue.size(mailbox)) > 0) yield* Effect.sleep("5 millis")
        yield* Fiber.interrupt(fiber)
      }),
    } satisfies TenantActor
  })
