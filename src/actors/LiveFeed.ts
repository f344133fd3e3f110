/**
 * Live fan-out of processed telemetry to subscribers (WebSocket clients), per tenant. A slow
 * subscriber never slows the pipeline: each has a bounded sliding buffer and drops its oldest
 * readings when it falls behind (it can read history to fill the gap).
 */
import { Context, Effect, Layer, PubSub, Queue, type Scope } from "effect"
import type { TelemetryRow } from "../storage/TelemetryStore.js"

export interface LiveFeedApi {
  /**
   * Publishes one tenant's decoded readings to its subscribers — before they are stored, so a
   * live feed does not wait for an insert; a replay publishes them again (at least once).
   */
  readonly publish: (tenantId: string, rows: ReadonlyArray<TelemetryRow>) => Effect.Effect<void>
  /**
   * Subscribes to a tenant's readings (optionally one device's) until the scope closes. Subscribe
   * first, then read history, so nothing falls in the gap.
   */
  readonly subscribe: (
    tenantId: string,
    deviceId?: string,
  ) => Effect.Effect<Queue.Dequeue<TelemetryRow>, never, Scope.Scope>
  /**
   * Whether the tenant has a subscriber right now. A plain function, not an effect: a reader of
   * the stream asks it per record to skip decoding what nobody is watching.
   */
  readonly hasSubscribers: (tenantId: string) => boolean
}

export class LiveFeed extends Context.Tag("sluice/LiveFeed")<LiveFeed, LiveFeedApi>() {}

/** Readings a subscriber may fall behind by before its oldest are dropped. */
const SUBSCRIBER_BUFFER = 4096

export const make = Effect.sync((): LiveFeedApi => {
  const topics = new Map<string, { hub: PubSub.PubSub<TelemetryRow>; subscribers: number }>()
  return {
    publish: (tenantId, rows) => {
      const topic = topics.get(tenantId)
      // No subscribers: no work at all on the hot path.
      return topic === undefined ? Effect.void : Effect.asVoid(PubSub.publishAll(topic.hub, rows))
    },
    subscribe: (tenantId, deviceId) =>
      Effect.gen(function* () {
        const topic = yield* Effect.acquireRelease(
          Effect.sync(() => {
            let t = topics.get(tenantId)
            if (t === undefined) {
              t = { hub: Effect.runSync(PubSub.sliding<TelemetryRow>(SUBSCRIBER_BUFFER)), subscribers: 0 }
              topics.set(tenantId, t)
            }
            t.subscribers++
            return t
          }),
          (t) =>
            Effect.sync(() => {
              if (--t.subscribers === 0) topics.delete(tenantId)
            }),
        )
        const all = yield* PubSub.subscribe(topic.hub)
        if (deviceId === undefined) return all
        const mine = yield* Queue.sliding<TelemetryRow>(SUBSCRIBER_BUFFER)
        yield* Queue.take(all).pipe(
          Effect.flatMap((row) => (row.deviceId === deviceId ? Queue.offer(mine, row) : Effect.void)),
          Effect.forever,
          Effect.forkScoped,
        )
        return mine
      }),
    hasSubscribers: (tenantId) => topics.has(tenantId),
  }
})

export const layer = Layer.effect(LiveFeed, make)
