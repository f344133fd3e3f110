/** Handlers of the health group, for any HttpApi that includes `HealthApi`. */
import { HttpApi, HttpApiBuilder } from "@effect/platform"
import { Effect } from "effect"
import { Health } from "./Health.js"
import { HealthApi, NotReady } from "./HealthApi.js"
import * as Metrics from "./Metrics.js"

/**
 * The `health` group's handlers for `api`. Handler layers are keyed by the API's identifier only,
 * so the group is built against an API of that identifier holding just this group.
 */
export const layerFor = <ApiId extends string>(api: { readonly identifier: ApiId }) =>
  HttpApiBuilder.group(HttpApi.make(api.identifier).add(HealthApi), "health", (handlers) =>
    Effect.gen(function* () {
      const health = yield* Health
      const metrics = yield* Metrics.Metrics
      return handlers
        .handle("healthz", () =>
          Effect.sync(() => {
            const children = health.supervisor()
            return {
              status: "ok" as const,
              pid: process.pid,
              roles: health.roles,
              ...(children === undefined ? {} : { supervisor: { children } }),
            }
          }),
        )
        .handle("readyz", () =>
          Effect.gen(function* () {
            const roles = yield* health.check
            const waiting = Object.entries(roles).filter(([, state]) => !state.ready)
            if (waiting.length > 0) {
              const message = waiting
                .map(([role, state]) => `${role}: ${state.reason ?? "not ready"}`)
                .join("; ")
              return yield* new NotReady({ message, roles })
            }
            return { status: "ready" as const, roles }
          }),
        )
        .handle("metrics", () => Effect.provideService(Metrics.render, Metrics.Metrics, metrics))
    }),
  )
