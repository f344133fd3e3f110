/**
 * One shard's worker, running while this processor holds the shard's lease: pulls bounded batches
 * from the lease's checkpoint, hands each record to its device's actor, sends each tenant its
 * share, and checkpoints through the lease only after every tenant stored its share — in pull
 * order, so the checkpoint never passes an unstored record. Checkpoints are written at most every
 * `checkpointIntervalMs` (the newest stored position then), and once more when the worker stops.
 * A checkpoint the lease store refuses (`LeaseLost`: another processor took the shard) stops the
 * worker at once; its pulled records may still be inserted, which the storage tier deduplicates.
 *
 * Backpressure: the worker waits when a tenant's mailbox is full or when `maxInflightRecords`
 * pulled records are unstored, and while it waits it does not pull. The bound counts records, not
 * batches: at a low rate pulls are small and many fit in one insert interval, and a bound on their
 * count would hold the next pull (and with it the live feed) until the insert.
 */
import { Clock, Deferred, Duration, Effect, Either, Option, Queue, Schedule } from "effect"
import type { MetricsApi } from "../observability/Metrics.js"
import type { LeaseLost } from "../stream/ShardLeases.js"
import type { Position, StreamLogApi, StreamRecord } from "../stream/StreamLog.js"
import type { CompiledDeviceClass } from "../tenancy/DeviceClass.js"
import { decodeStreamRecord } from "../tenancy/IotCoreRecord.js"
import type { Device } from "../tenancy/Tenancy.js"
import { DeviceActor, type DeviceOutput } from "./DeviceActor.js"
import type { ProcessorConfig } from "./ProcessorConfig.js"
import { BatchTicket, type TenantBatch } from "./Protocol.js"
import type { TenantActor } from "./TenantActor.js"

export interface ShardWorkerDeps {
  readonly config: ProcessorConfig
  readonly log: StreamLogApi
  readonly metrics: MetricsApi
  readonly deviceClass: (name: string) => CompiledDeviceClass | undefined
  /** The registered device with this id, any tenant: attributes AWS IoT Core records by client id. */
  readonly deviceById: (deviceId: string) => Option.Option<Device>
  readonly tenant: (tenantId: string) => Effect.Effect<TenantActor>
  /** Where the shard's lease says to start. */
  readonly position: Position
  /**
   * Stores "processed through `sequenceNumber`" in the shard's lease, or the shard's end (`null`)
   * which also releases it. Retries a store that does not answer; fails only when the lease is lost.
   */
  readonly checkpoint: (sequenceNumber: string | null) => Effect.Effect<void, LeaseLost>
  /** Becomes true when the processor shuts down: stop pulling, finish what was pulled. */
  readonly stopping: () => boolean
}

/** Records that cannot be attributed to a tenant (a corrupt envelope) are kept under this id. */
export const UNATTRIBUTED_TENANT = "_unattributed"

const transientRetry = Schedule.exponential(Duration.millis(50), 2).pipe(Schedule.upTo(Duration.seconds(30)))

/** Runs the shard until it ends (closed and fully read: returns true) or the processor stops. */
export const run = (shardId: string, deps: ShardWorkerDeps) =>
  Effect.gen(function* () {
    const { config, log, metrics } = deps
    const devices = new Map<string, DeviceActor>()
    const reader = yield* log.reader(shardId, deps.position)
    // `null` tells the checkpointer that no more batches come. Bounded by the records it holds.
    const inflight = yield* Queue.unbounded<{ ticket: BatchTicket; records: number } | null>()
    const unstored = yield* Effect.makeSemaphore(config.maxInflightRecords)

    // Takes batches in pull order, each once it is stored everywhere; checkpoints the newest
    // stored one at most every checkpointIntervalMs, and the last one before it returns.
    const checkpointer = Effect.gen(function* () {
      let stored: string | undefined
      let writtenAt = yield* Clock.currentTimeMillis
      const write = Effect.gen(function* () {
        if (stored === undefined) return
        yield* deps.checkpoint(stored)
        stored = undefined
        writtenAt = yield* Clock.currentTimeMillis
      })
      for (;;) {
        const wait = writtenAt + config.checkpointIntervalMs - (yield* Clock.currentTimeMillis)
        const next =
          stored === undefined
            ? Option.some(yield* Queue.take(inflight))
            : yield* Effect.timeoutOption(Queue.take(inflight), Duration.millis(Math.max(0, wait)))
        if (Option.isNone(next)) {
          yield* write
          continue
        }
        if (next.value === null) return yield* write
        const { ticket, records } = next.value
        yield* Deferred.await(ticket.done)
        yield* unstored.release(records)
        stored = ticket.lastSequenceNumber
        if ((yield* Clock.currentTimeMillis) - writtenAt >= config.checkpointIntervalMs) yield* write
      }
    })

    const handle = (records: ReadonlyArray<StreamRecord>) => {
      const now = Date.now()
      const byTenant = new Map<string, DeviceOutput>()
      for (const record of records) {
        // Sluice's own envelope, or a record an AWS IoT Core topic rule wrote (docs/aws-iot-core.md),
        // which flows like an envelope; an unknown client id is a dead letter like a corrupt record.
        const envelope = decodeStreamRecord(record.data, deps.deviceById)
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

    const pullLoop = Effect.gen(function* () {
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
      // Stopping or the shard ended: no more batches; the checkpointer finishes what was pulled.
      const ended = !deps.stopping()
      yield* Queue.offer(inflight, null)
      return ended
    })

    // Together, so that a lost lease (the checkpointer fails) stops the pulls at once too.
    const [ended] = yield* Effect.all([pullLoop, checkpointer], { concurrency: 2 })
    // The shard's end, recorded in its lease (which releases it), lets its children start.
    if (ended) yield* deps.checkpoint(null)
    return ended
  }).pipe(Effect.annotateLogs("shard", shardId))
