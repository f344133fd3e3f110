/**
 * One shard's worker: pulls bounded batches from where the consumer's checkpoint says, hands each
 * record to its device's actor, sends each tenant its share, and checkpoints a batch only after
 * every tenant stored its share — in pull order, so the checkpoint never passes an unstored record.
 *
 * Backpressure: the worker waits when a tenant's mailbox is full or when `maxInflightRecords`
 * pulled records are unstored, and while it waits it does not pull. The bound counts records, not
 * batches: at a low rate pulls are small and many fit in one insert interval, and a bound on their
 * count would hold the next pull (and with it the live feed) until the insert.
 */
import { Deferred, Duration, Effect, Either, Fiber, Queue, Schedule } from "effect"
import type { MetricsApi } from "../observability/Metrics.js"
import type { StreamLogApi, StreamRecord } from "../stream/StreamLog.js"
import type { CompiledDeviceClass } from "../tenancy/DeviceClass.js"
import { decodeEnvelope } from "../tenancy/Envelope.js"
import { DeviceActor, type DeviceOutput } from "./DeviceActor.js"
import type { ProcessorConfig } from "./ProcessorConfig.js"
import { BatchTicket, type TenantBatch } from "./Protocol.js"
import type { TenantActor } from "./TenantActor.js"

export interface ShardWorkerDeps {
  readonly config: ProcessorConfig
  readonly log: StreamLogApi
  readonly metrics: MetricsApi
  readonly deviceClass: (name: string) => CompiledDeviceClass | undefined
  readonly tenant: (tenantId: string) => Effect.Effect<TenantActor>
  /** Becomes true when the processor shuts down: stop pulling, finish what was pulled. */
  readonly stopping: () => boolean
}

/** Records that cannot be attributed to a tenant (a corrupt envelope) are kept under this id. */
export const UNATTRIBUTED_TENANT = "_unattributed"

const transientRetry = Schedule.exponential(Duration.millis(50), 2).pipe(Schedule.upTo(Duration.seconds(30)))
const foreverRetry = Schedule.exponential(Duration.millis(50), 2).pipe(
  Schedule.either(Schedule.spaced("5 seconds")),
)

/** Runs the shard until it ends (closed and fully read: returns true) or the processor stops. */
export const run = (shardId: string, deps: ShardWorkerDeps) =>
  Effect.gen(function* () {
    const { config, log, metrics } = deps
    const devices = new Map<string, DeviceActor>()
    const position = yield* log.resumePosition(config.consumer, shardId)
    const reader = yield* log.reader(shardId, position)
    // `null` tells the checkpointer that no more batches come. Bounded by the records it holds.
    const inflight = yield* Queue.unbounded<{ ticket: BatchTicket; records: number } | null>()
    const unstored = yield* Effect.makeSemaphore(config.maxInflightRecords)

    // Checkpoints in pull order, each once its batch is stored everywhere.
    const checkpointer = yield* Effect.forkScoped(
      Effect.gen(function* () {
        for (;;) {
          const next = yield* Queue.take(inflight)
          if (next === null) return
          const { ticket, records } = next
          yield* Deferred.await(ticket.done)
          // Retried without end: giving up would strand the shard (nothing else advances it).
          yield* log.checkpoint(config.consumer, shardId, ticket.lastSequenceNumber).pipe(
            Effect.tapError((error) => Effect.logWarning("checkpoint failed; retrying", error)),
            Effect.retry(foreverRetry),
          )
          yield* unstored.release(records)
        }
      }),
    )

    const handle = (records: ReadonlyArray<StreamRecord>) => {
      const now = Date.now()
      const byTenant = new Map<string, DeviceOutput>()
      for (const record of records) {
        const envelope = decodeEnvelope(record.data)
        if (Either.isLeft(envelope)) {
          const out = byTenant.get(UNATTRIBUTED_TENANT) ?? { rows: [], deadLetters: [] }
          byTenant.set(UNATTRIBUTED_TENANT, out)
          out.deadLetters.push({
            tenantId: UNATTRIBUTED_TENANT,
            deviceId: record.partitionKey,
            receivedAt: record.arrivedAt,
            shardId,
            sequenceNumber: record.sequenceNumber,
            reason: envelope.left,
            raw: Buffer.from(record.data).toString("utf8"),
          })
          continue
        }
        const e = envelope.right
        let out = byTenant.get(e.tenantId)
        if (out === undefined) {
          out = { rows: [], deadLetters: [] }
          byTenant.set(e.tenantId, out)
        }
        let actor = devices.get(record.partitionKey)
        if (actor === undefined) {
          actor = new DeviceActor(e.tenantId, e.deviceId, config.dedupWindow)
          devices.set(record.partitionKey, actor)
          metrics.liveActors.inc()
        }
        actor.receive(e, record, deps.deviceClass(e.deviceClass), out, now)
      }
      return byTenant
    }

    const expireIdleDevices = () => {
      const cutoff = Date.now() - config.deviceIdleMs
      for (const [key, actor] of devices) {
        if (actor.lastActive < cutoff) {
          devices.delete(key)
          metrics.liveActors.dec()
        }
      }
    }
    yield* Effect.addFinalizer(() => Effect.sync(() => metrics.liveActors.dec(devices.size)))

    let pulls = 0
    while (!deps.stopping()) {
      const batch = yield* reader
        .pull({ maxRecords: config.pullMaxRecords, maxBytes: config.pullMaxBytes })
        .pipe(Effect.retry({ schedule: transientRetry, while: (e) => e._tag === "StreamUnavailable" }))
      metrics.streamLagMs.set({ shard: shardId }, batch.behindLatestMs)
      if (batch.records.length === 0) {
        if (batch.endOfShard) break
        yield* Effect.sleep(Duration.millis(config.idlePollMs))
        continue
      }
      const first = batch.records[0]!.sequenceNumber
      const last = batch.records.at(-1)!.sequenceNumber
      const byTenant = handle(batch.records)
      const ticket = new BatchTicket(shardId, last, byTenant.size)
      // A pull larger than the whole bound still goes, alone.
      const records = Math.min(batch.records.length, config.maxInflightRecords)
      yield* unstored.take(records)
      yield* Queue.offer(inflight, { ticket, records })
      for (const [tenantId, out] of byTenant) {
        const actor = yield* deps.tenant(tenantId)
        yield* actor.send({
          tenantId,
          rows: out.rows,
          deadLetters: out.deadLetters,
          shardId,
          firstSequenceNumber: first,
          lastSequenceNumber: last,
          ticket,
        } satisfies TenantBatch)
      }
      if (++pulls % 1000 === 0) expireIdleDevices()
    }
    // Stopping or the shard ended: wait until every pulled batch is stored and checkpointed.
    const ended = !deps.stopping()
    yield* Queue.offer(inflight, null)
    yield* Fiber.join(checkpointer)
    return ended
  }).pipe(Effect.annotateLogs("shard", shardId))
