/**
 * The processing tier: one worker fiber per shard whose lease this processor holds, one actor per
 * tenant, device actors inside the shard workers. Any number of processors of one consumer
 * application share the stream's shards through `ShardLeases` (the `LeaseCoordinator` decides
 * which this one holds: its fair share, children only after their parents ended); a worker starts
 * when its lease is acquired, from the lease's checkpoint, and is interrupted at once when the lease
 * is lost. Shutdown drains in order: stop pulling, store and checkpoint everything pulled, stop the
 * tenant actors, then release the leases for the other processors (graceful hand-off).
 */
import { Duration, Effect, FiberMap, Layer, Queue, Schedule, Scope } from "effect"
import { Metrics } from "../observability/Metrics.js"
import { TelemetryStore } from "../storage/TelemetryStore.js"
import * as LeaseCoordinator from "../stream/LeaseCoordinator.js"
import { type LeaseCheckpoint, LeaseLost } from "../stream/ShardLeases.js"
import { Position, StreamLog } from "../stream/StreamLog.js"
import { compiledClasses } from "../tenancy/DeviceClass.js"
import { Tenancy } from "../tenancy/Tenancy.js"
import { LiveFeed } from "./LiveFeed.js"
import * as ProcessorConfig from "./ProcessorConfig.js"
import * as ShardWorker from "./ShardWorker.js"
import * as Spill from "./Spill.js"
import * as TenantActor from "./TenantActor.js"

/** How long shutdown waits for pulled records to be stored before giving up (they stay in the stream). */
const DRAIN_TIMEOUT = Duration.seconds(20)

const storeRetry = Schedule.exponential(Duration.millis(100), 2).pipe(
  Schedule.either(Schedule.spaced("5 seconds")),
)

/** Where a worker starts, from its lease's checkpoint. */
const positionOf = (checkpoint: LeaseCheckpoint): Position => {
  switch (checkpoint._tag) {
    case "TrimHorizon":
      return Position.TrimHorizon()
    case "Latest":
      return Position.Latest()
    case "AtTimestamp":
      return Position.AtTimestamp({ at: checkpoint.at })
    case "AfterSequence":
      return Position.AfterSequence({ sequenceNumber: checkpoint.sequenceNumber })
    case "ShardEnd":
      // Never held: a finished shard's lease is released with its ShardEnd checkpoint.
      return Position.Latest()
  }
}

export const make = (config: ProcessorConfig.ProcessorConfig) =>
  Effect.gen(function* () {
    const log = yield* StreamLog
    const store = yield* TelemetryStore
    const live = yield* LiveFeed
    const metrics = yield* Metrics
    const tenancy = yield* Tenancy
    // Tenant actors are created on demand, so their fibers get a scope of their own that the
    // drain below closes last; forked into the layer's scope they would be interrupted first
    // (finalizers run newest first), stranding the batches their shard workers wait for.
    const tenantScope = yield* Effect.acquireRelease(Scope.make(), (scope, exit) => Scope.close(scope, exit))

    // Compiled once per class version: a version added to the registry decodes the next message.
    // A class missing from the registry sends its devices' messages to the dead letters with the reason.
    const deviceClass = compiledClasses(tenancy.deviceClassVersion)

    // Tenants with batches left in the spill (a restart while their storage failed, or another
    // processor that stopped) drain them now, whether or not new messages arrive for them.
    const spill = yield* Spill.fromConfig(config).pipe(Effect.orDie)
    const tenants = new Map<string, TenantActor.TenantActor>()
    const creating = yield* Effect.makeSemaphore(1)
    const tenant = (tenantId: string) => {
      const existing = tenants.get(tenantId)
      if (existing !== undefined) return Effect.succeed(existing)
      return creating.withPermits(1)(
        Effect.suspend(() => {
          const again = tenants.get(tenantId)
          if (again !== undefined) return Effect.succeed(again)
          return TenantActor.make(tenantId, { config, store, live, metrics, spill }).pipe(
            Effect.tap((actor) => Effect.sync(() => tenants.set(tenantId, actor))),
            Effect.provideService(Scope.Scope, tenantScope),
          )
        }),
      )
    }

    // ...and again every spill_scan_ms: a shared spill (S3) may hold batches of a processor that
    // stopped for good, whose shards this one took over.
    const scanSpill = Effect.gen(function* () {
      for (const tenantId of yield* spill.tenants) yield* Effect.flatMap(tenant(tenantId), (a) => a.wakeSpill)
    })
    yield* Effect.orDie(scanSpill)
    yield* scanSpill.pipe(
      Effect.catchAll((error) => Effect.logWarning("could not list the spill's tenants", error)),
      Effect.repeat(Schedule.spaced(Duration.millis(config.spillScanMs))),
      Effect.delay(Duration.millis(config.spillScanMs)),
      Effect.forkScoped,
    )

    let stopping = false
    const workers = yield* FiberMap.make<string>()
    const coordinator = yield* LeaseCoordinator.make({
      workerId: config.workerId,
      shards: log.listShards,
      failoverMs: config.failoverMs,
      initial: config.initialPosition,
    })

    // Checkpoints through the lease; a store that does not answer is retried until the
    // coordinator gives the lease up (it stops renewing it after the failover time).
    const checkpoint = (shardId: string) => (sequenceNumber: string | null) =>
      coordinator
        .checkpoint(
          shardId,
          sequenceNumber === null ? { _tag: "ShardEnd" } : { _tag: "AfterSequence", sequenceNumber },
        )
        .pipe(
          Effect.tapErrorTag("LeaseStoreUnavailable", (error) =>
            Effect.logWarning("checkpoint not stored; retrying", error),
          ),
          Effect.retry({ schedule: storeRetry, while: (error) => error._tag === "LeaseStoreUnavailable" }),
          Effect.catchTag("LeaseStoreUnavailable", (error) =>
            Effect.fail(new LeaseLost({ shardId, reason: error.message })),
          ),
          Effect.asVoid,
        )

    // A worker per held shard, from the lease's checkpoint. A failed worker starts again from the
    // lease (the checkpoint it reached) while the lease is held; a lost lease ends it for good.
    const start = (shardId: string) =>
      Effect.gen(function* () {
        const lease = (yield* coordinator.held).get(shardId)
        if (lease === undefined || stopping) return
        yield* ShardWorker.run(shardId, {
          config,
          log,
          metrics,
          deviceClass,
          deviceById: tenancy.deviceById,
          tenant,
          position: positionOf(lease.checkpoint),
          checkpoint: checkpoint(shardId),
          stopping: () => stopping,
        }).pipe(Effect.scoped)
      }).pipe(
        Effect.tapError((error) =>
          error._tag === "LeaseLost"
            ? Effect.logWarning("shard lease lost; worker stopped", error)
            : Effect.logError("shard worker failed; restarting", error),
        ),
        Effect.retry({
          schedule: storeRetry,
          while: (error) => error._tag !== "LeaseLost" && !stopping,
        }),
        Effect.ignore,
        Effect.annotateLogs("shard", shardId),
      )

    // Workers follow the leases: started on acquisition, interrupted at once on loss.
    const follow = Effect.gen(function* () {
      const change = yield* Queue.take(coordinator.changes)
      if (change._tag === "Acquired") {
        metrics.leasesHeld.inc()
        metrics.leaseChanges.inc({ change: "acquired" })
        yield* Effect.logInfo(`lease of ${change.shardId} acquired`)
        if (!stopping) yield* FiberMap.run(workers, change.shardId, start(change.shardId))
      } else {
        metrics.leasesHeld.dec()
        metrics.leaseChanges.inc({ change: "lost" })
        yield* Effect.logInfo(`lease of ${change.shardId} lost`)
        yield* FiberMap.remove(workers, change.shardId)
      }
    })
    yield* Effect.forkScoped(Effect.forever(follow))

    // Registered last, so it runs first at shutdown, while workers and actors still run.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        stopping = true
        yield* FiberMap.awaitEmpty(workers)
        yield* Effect.forEach(tenants.values(), (actor) => actor.drain, { discard: true })
        // Hand-off: the final checkpoints are in the leases; free them for the other processors.
        yield* coordinator.shutdown
        yield* Effect.logInfo("processor drained: every pulled record is stored and checkpointed")
      }).pipe(
        // Finalizers are uninterruptible: without this the timeout would wait for the drain anyway.
        Effect.interruptible,
        Effect.timeout(DRAIN_TIMEOUT),
        Effect.catchAll(() =>
          Effect.logWarning("processor drain timed out; unstored records stay in the stream"),
        ),
      ),
    )
  })

/** The processor, configured from the environment (SLUICE_PROCESSOR_*). */
export const layer = Layer.scopedDiscard(Effect.flatMap(ProcessorConfig.processor, make))

/** The processor with explicit settings (tests, benchmarks). */
export const layerWith = (config: ProcessorConfig.ProcessorConfig) => Layer.scopedDiscard(make(config))
