/**
 * Live readings for a serving process without the processor: it tails the stream as a reader of
 * its own and decodes with the device classes, exactly as the processor's device actors do, into
 * the LiveFeed that `live/Http.ts` subscribes WebSockets to. The stream is the only transport
 * between the processes; there is no side channel to keep consistent with it.
 *
 * - Live, not history. Each shard is read from `Latest` when the tail starts (with the layer), and
 *   the first readers are open before the layer is done, so before the HTTP server accepts anyone:
 *   a subscriber that subscribed before a record was appended gets it. Readings appended before
 *   the serving process started are history (`/v1/devices/:deviceId/telemetry`), never replayed.
 * - No leases, no checkpoints. On the embedded log every processor application with leases pins
 *   retention (`ConsumedThrough.ts`); a tail that checkpointed would hold the disk
 *   for as long as its serving process is away. Its position lives in memory: a shard's lost
 *   reader is reopened after the last record it handled (or, if none, at the time the tail
 *   started), so nothing is missed or published twice; a restarted serving process starts anew.
 * - Only for watched tenants. Every envelope header is read (it names the tenant), but a payload
 *   is decoded only while its tenant has a live subscriber. Payloads that fail their class are the
 *   processor's dead letters, not the live feed's business: they are skipped here.
 * - At least once, like the in-process feed: the same readings, the same order per device, the
 *   same dedup of redelivered message ids within the processor's window (`DeviceActor`), but the
 *   window here only holds what this process decoded.
 * - Backends. The embedded log is a file: only a process on the same machine (same data dir) can
 *   tail it. Kinesis allows 5 GetRecords calls per second per shard, shared by every reader of the
 *   shard: the processor and each serving node's tail all pull every shard, so with more than one
 *   reader they are throttled and back off, and each added serving node makes live readings (and
 *   the processor's lag) later. Past a couple of serving nodes this needs enhanced fan-out
 *   (SubscribeToShard: a dedicated 2 MB/s per consumer, pushed), which the StreamLog contract
 *   does not use yet.
 *
 * The stream being unavailable is retried with backoff and logged; it stops live readings for a
 * while, never the serving process. `sluice_stream_lag_milliseconds{shard}` of a serving process
 * is how far its tail is behind.
 */
import { Deferred, Duration, Effect, Either, FiberMap, Layer, Schedule } from "effect"
import { DeviceActor, type DeviceOutput } from "../../actors/DeviceActor.js"
import { LiveFeed } from "../../actors/LiveFeed.js"
import { Metrics } from "../../observability/Metrics.js"
import { compareSequenceNumbers, readableShards } from "../../stream/Shards.js"
import type { ReadError } from "../../stream/StreamError.js"
import { Position, StreamLog, type StreamRecord } from "../../stream/StreamLog.js"
import { compiledClasses } from "../../tenancy/DeviceClass.js"
import { decodeStreamRecord } from "../../tenancy/IotCoreRecord.js"
import { Tenancy } from "../../tenancy/Tenancy.js"
import * as LiveTailConfig from "./LiveTailConfig.js"

/** Bytes per pull, as the processor's default: one pull is decoded in one event-loop turn. */
const PULL_MAX_BYTES = 4 * 1024 * 1024
/**
 * How long the layer waits for the first readers to be positioned. Past it the serving process
 * starts anyway (the stream may be down) and the readers keep trying in the background.
 */
const POSITION_TIMEOUT = Duration.seconds(5)

const backoff = Schedule.exponential(Duration.millis(50), 2).pipe(
  Schedule.either(Schedule.spaced("5 seconds")),
)

/** What the tail remembers of a shard across lost readers. */
interface ShardState {
  /** The last record handled: a new reader resumes after it. */
  lastSeen: string | undefined
  /** Records a new reader returns that were handled already or arrived before it should start. */
  skip: ((record: StreamRecord) => boolean) | undefined
  readonly devices: Map<string, DeviceActor>
}

export const make = (config: LiveTailConfig.LiveTailConfig) =>
  Effect.gen(function* () {
    const log = yield* StreamLog
    const live = yield* LiveFeed
    const metrics = yield* Metrics
    const tenancy = yield* Tenancy
    const startedAt = Date.now()

    // Compiled once per class version, as in the processor; a missing class decodes to nothing here.
    const deviceClass = compiledClasses(tenancy.deviceClassVersion)

    const states = new Map<string, ShardState>()
    const stateOf = (shardId: string) => {
      let state = states.get(shardId)
      if (state === undefined) {
        state = { lastSeen: undefined, skip: undefined, devices: new Map() }
        states.set(shardId, state)
      }
      return state
    }

    /**
     * Opens a reader where the shard's live data continues: after the last record seen; else, for a
     * shard listed when the tail started, `Latest` (once); else every record that arrived since the
     * tail started — none of them was seen, and a child shard after a split holds only those.
     */
    const open = (shardId: string, state: ShardState, first: boolean) => {
      let latest = first
      const resume = (position: Position) => {
        const at = position._tag === "AtTimestamp" ? position.at : undefined
        const after = state.lastSeen
        state.skip =
          at !== undefined
            ? (r) => r.arrivedAt < at
            : after !== undefined
              ? (r) => compareSequenceNumbers(r.sequenceNumber, after) <= 0
              : undefined
        return log.reader(shardId, position)
      }
      const position = () => {
        if (state.lastSeen !== undefined) return Position.AfterSequence({ sequenceNumber: state.lastSeen })
        // After a failed first attempt, `Latest` would drop what arrived while the stream was down.
        if (latest) {
          latest = false
          return Position.Latest()
        }
        return Position.AtTimestamp({ at: startedAt })
      }
      return Effect.suspend(() => resume(position())).pipe(
        // A backstop, not a path taken today: every backend checks positions against the stream as
        // it is now. Should one still refuse the last seen position, `Latest` (skipping what was
        // seen) keeps the feed live, at the price of what arrived in between.
        Effect.catchTag("PositionPastEnd", () => resume(Position.Latest())),
        retryUnavailable("opening a reader"),
      )
    }

    /** Decodes the watched tenants' records of one pull into rows per tenant, in stream order. */
    const handle = (state: ShardState, records: ReadonlyArray<StreamRecord>) => {
      const now = Date.now()
      const byTenant = new Map<string, DeviceOutput>()
      for (const record of records) {
        if (state.skip !== undefined) {
          if (state.skip(record)) continue
          state.skip = undefined
        }
        const envelope = decodeStreamRecord(record.data, tenancy.deviceById)
        if (Either.isLeft(envelope)) continue
        const e = envelope.right
        if (!live.hasSubscribers(e.tenantId)) continue
        let out = byTenant.get(e.tenantId)
        if (out === undefined) {
          out = { rows: [], deadLetters: [] }
          byTenant.set(e.tenantId, out)
        }
        let actor = state.devices.get(record.partitionKey)
        if (actor === undefined) {
          actor = new DeviceActor(e.tenantId, e.deviceId, config.dedupWindow)
          state.devices.set(record.partitionKey, actor)
        }
        actor.receive(e, record, deviceClass(e.deviceClass), out, now)
      }
      return byTenant
    }

    const expireIdleDevices = (state: ShardState) => {
      const cutoff = Date.now() - config.deviceIdleMs
      for (const [key, actor] of state.devices) if (actor.lastActive < cutoff) state.devices.delete(key)
    }

    /** Tails one shard until it ends (closed and read to its end: true). */
    const tail = (shardId: string, first: boolean, positioned: Deferred.Deferred<void>) =>
      Effect.gen(function* () {
        const state = stateOf(shardId)
        const reader = yield* open(shardId, state, first)
        yield* Deferred.succeed(positioned, undefined)
        let pulls = 0
        for (;;) {
          const batch = yield* reader
            .pull({ maxRecords: config.pullMaxRecords, maxBytes: PULL_MAX_BYTES })
            .pipe(retryUnavailable("pulling"))
          metrics.streamLagMs.set({ shard: shardId }, batch.behindLatestMs)
          if (batch.records.length === 0) {
            if (batch.endOfShard) return true
            yield* Effect.sleep(Duration.millis(config.pollMs))
            continue
          }
          const byTenant = handle(state, batch.records)
          state.lastSeen = batch.records.at(-1)!.sequenceNumber
          for (const [tenantId, out] of byTenant) {
            if (out.rows.length > 0) yield* live.publish(tenantId, out.rows)
          }
          if (++pulls % 1000 === 0) expireIdleDevices(state)
        }
      }).pipe(Effect.scoped)

    const finished = new Set<string>()
    const tails = yield* FiberMap.make<string>()

    /** Starts a tail for every readable shard without one; the deferreds say when each is positioned. */
    const startReadable = (first: boolean): Effect.Effect<ReadonlyArray<Deferred.Deferred<void>>> =>
      Effect.gen(function* () {
        // A failed listing is tried again at the next refresh; shards started then miss nothing.
        const shards = yield* log.listShards.pipe(
          Effect.tapError((error) => Effect.logWarning("live tail: listing shards failed", error)),
          Effect.orElseSucceed(() => []),
        )
        const started: Array<Deferred.Deferred<void>> = []
        for (const shard of readableShards(shards, finished)) {
          if (yield* FiberMap.has(tails, shard.shardId)) continue
          const positioned = yield* Deferred.make<void>()
          const run = tail(shard.shardId, first, positioned).pipe(
            Effect.catchAll((error) =>
              Effect.as(
                Effect.logWarning("live tail stopped reading a shard; retrying at the next refresh", error),
                false,
              ),
            ),
            Effect.catchAllDefect((defect) =>
              Effect.as(Effect.logError("live tail failed; retrying at the next refresh", defect), false),
            ),
            Effect.flatMap((ended) =>
              ended
                ? Effect.sync(() => finished.add(shard.shardId)).pipe(Effect.zipRight(startReadable(false)))
                : Effect.void,
            ),
            // An initial tail that ends early must not hold up the layer until the timeout.
            Effect.ensuring(Deferred.succeed(positioned, undefined)),
            Effect.annotateLogs("shard", shard.shardId),
          )
          yield* FiberMap.run(tails, shard.shardId, run, { onlyIfMissing: true })
          started.push(positioned)
        }
        return started
      })

    const initial = yield* startReadable(true)
    yield* Effect.forEach(initial, Deferred.await, { discard: true }).pipe(
      Effect.timeout(POSITION_TIMEOUT),
      Effect.catchAll(() =>
        Effect.logWarning("live tail: the stream is not answering; live readings start once it does"),
      ),
    )
    yield* startReadable(false).pipe(
      Effect.delay(Duration.millis(config.shardRefreshMs)),
      Effect.forever,
      Effect.forkScoped,
    )
  })

/** Retries a stream operation while the stream is unavailable, logging each failure. */
const retryUnavailable =
  (operation: string) =>
  <A, R>(effect: Effect.Effect<A, ReadError, R>) =>
    effect.pipe(
      Effect.tapError((error) =>
        error._tag === "StreamUnavailable"
          ? Effect.logWarning(`live tail: ${operation} failed; retrying`, error)
          : Effect.void,
      ),
      Effect.retry({ schedule: backoff, while: (error) => error._tag === "StreamUnavailable" }),
    )

/**
 * The stream tail, configured from the environment (SLUICE_LIVE_TAIL_*). Requires StreamLog,
 * Tenancy, LiveFeed and Metrics. Run it only where the processor does not run: there the
 * processor's tenant actors feed the LiveFeed, and both would publish every reading twice.
 */
export const layer = Layer.scopedDiscard(Effect.flatMap(LiveTailConfig.liveTail, make))

/** The stream tail with explicit settings (tests). */
export const layerWith = (config: LiveTailConfig.LiveTailConfig) => Layer.scopedDiscard(make(config))
