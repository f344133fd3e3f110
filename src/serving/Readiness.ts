/**
 * Whether this process should receive traffic. Liveness (`/healthz`) only says the process
 * answers; readiness (`/readyz`) says it is started, not shutting down, and its store answers.
 * Main marks it ready once every tier is built, and not ready when shutdown begins, so a load
 * balancer drains the node before its listeners close.
 */
import { Context, Effect, Layer, Ref } from "effect"

export interface ReadinessApi {
  /** True between startup completing and shutdown beginning. */
  readonly ready: Effect.Effect<boolean>
  readonly set: (ready: boolean) => Effect.Effect<void>
}

export class Readiness extends Context.Tag("sluice/serving/Readiness")<Readiness, ReadinessApi>() {}

const make = (initial: boolean) =>
  Effect.map(Ref.make(initial), (ref): ReadinessApi => ({ ready: Ref.get(ref), set: (b) => Ref.set(ref, b) }))

/** Starts not ready; provide `markReadyWhileAlive` after every other tier (or call `set`). */
export const layer = Layer.effect(Readiness, make(false))

/** Ready from the start: a serving-only process, or tests. */
export const layerReady = Layer.effect(Readiness, make(true))

/**
 * Marks the process ready when this layer is built and not ready when it is released. Built last
 * and released first, it brackets exactly the time every other tier is up.
 */
export const markReadyWhileAlive = Layer.scopedDiscard(
  Effect.flatMap(Readiness, (r) => Effect.acquireRelease(r.set(true), () => r.set(false))),
)
