/** Handlers of the health group: liveness, readiness (flag and store), Prometheus metrics. */
import { HttpApiBuilder } from "@effect/platform"
import { Duration, Effect } from "effect"
import * as Metrics from "../../observability/Metrics.js"
import { TelemetryStore } from "../../storage/TelemetryStore.js"
import { Api } from "../Api.js"
import { Readiness } from "../Readiness.js"
import { NotReady } from "./Api.js"

/** How long the store may take to answer the readiness query. */
const storeProbeTimeout = Duration.seconds(2)

/** A tenant id no real tenant can have (ids start with a letter or digit): the probe reads nothing. */
const probeTenant = "__readyz__"

export const HttpHealthLive = HttpApiBuilder.group(Api, "health", (handlers) =>
  Effect.gen(function* () {
    const store = yield* TelemetryStore
    const readiness = yield* Readiness
    const metrics = yield* Metrics.Metrics
    return handlers
      .handle("healthz", () => Effect.succeed({ status: "ok" as const }))
      .handle("readyz", () =>
        Effect.gen(function* () {
          if (!(yield* readiness.ready)) {
            return yield* new NotReady({ message: "starting or shutting down" })
          }
          yield* store.activity(probeTenant).pipe(
            Effect.timeoutFail({
              duration: storeProbeTimeout,
              onTimeout: () => new NotReady({ message: "store did not answer within 2 s" }),
            }),
            Effect.catchTag("StorageUnavailable", (e) => new NotReady({ message: e.message })),
          )
          return { status: "ready" as const }
        }),
      )
      .handle("metrics", () => Effect.provideService(Metrics.render, Metrics.Metrics, metrics))
  }),
)
