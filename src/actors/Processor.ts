/**
 * The processing tier: one worker fiber per readable shard (children only after their parents
 * are finished), one actor per tenant, device actors inside the shard workers. Shutdown drains in
 * order: stop pulling, store and checkpoint everything pulled, then stop the tenant actors.
 */
import { Duration, Effect, FiberMap, Layer, Option, Schedule, Scope } from "effect"
import { Metrics } from "../observability/Metrics.js"
import { TelemetryStore } from "../storage/TelemetryStore.js"
import { readableShards } from "../stream/Shards.js"
import { StreamLog } from "../stream/StreamLog.js"
import { type CompiledDeviceClass, compile } from "../tenancy/DeviceClass.js"
import { Tenancy } from "../tenancy/Tenancy.js"
import { LiveFeed } from "./LiveFeed.js"
import * as ProcessorConfig from "./ProcessorConfig.js"
import * as ShardWorker from "./ShardWorker.js"
import * as Spill from "./Spill.js"
import * as TenantActor from "./TenantActor.js"

/** How long shutdown waits for pulled records to be stored before giving up (they stay in the stream). */
const DRAIN_TIMEOUT = Duration.seconds(20)

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

    // Compiled once per class name; a class missing from the configuration sends its devices'
    // messages to the dead-letter table with the reason.
    const classes = new Map<string, CompiledDeviceClass | undefined>()
    const deviceClass = (name: string) => {
      if (!classes.has(name))
        classes.set(name, Option.getOrUndefined(Option.map(tenancy.deviceClass(name), compile)))
      return classes.get(name)
    }

    const spill = yield* Spill.make(config.dataDir, config.spillMaxBytes).pipe(Effect.orDie)
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

    let stopping = false
    const finished = new Set<string>()
    const workers = yield* FiberMap.make<string>()

    const startReadable: Effect.Effect<void> = Effect.gen(function* () {
      if (stopping) return
      const shards = yield* log.listShards.pipe(Effect.orElseSucceed(() => []))
      for (const shard of readableShards(shards, finished)) {
        if (yield* FiberMap.has(workers, shard.shardId)) continue
        const worker = ShardWorker.run(shard.shardId, {
          config,
          log,
          metrics,
          deviceClass,
          tenant,
          stopping: () => stopping,
        }).pipe(
          Effect.scoped,
          Effect.tapError((error) => Effect.logError(`shard worker failed; restarting`, error)),
          Effect.retry({
            schedule: Schedule.exponential(Duration.millis(100), 2).pipe(
              Schedule.either(Schedule.spaced("10 seconds")),
            ),
            while: () => !stopping,
          }),
          Effect.flatMap((ended) =>
            ended
              ? Effect.sync(() => finished.add(shard.shardId)).pipe(
                  Effect.zipRight(Effect.forkDaemon(startReadable)),
                )
              : Effect.void,
          ),
          Effect.ignore,
          Effect.annotateLogs("shard", shard.shardId),
        )
        yield* FiberMap.run(workers, shard.shardId, worker)
      }
    })

    // Tenants with batches left in the spill (a restart while their storage failed) drain them
    // now, whether or not new messages arrive for them.
    for (const tenantId of yield* Effect.orDie(spill.tenants)) yield* tenant(tenantId)
    yield* startReadable
    yield* startReadable.pipe(
      Effect.repeat(Schedule.spaced(Duration.millis(config.shardRefreshMs))),
      Effect.forkScoped,
    )

    // Registered last, so it runs first at shutdown, while workers and actors still run.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        stopping = true
        yield* FiberMap.awaitEmpty(workers)
        yield* Effect.forEach(tenants.values(), (actor) => actor.drain, { discard: true })
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
