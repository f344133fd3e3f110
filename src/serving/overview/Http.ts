/** `GET /v1/overview`: the platform's counters (see `PlatformMetrics.ts`) and the key's tenant's devices. */
import { HttpApiBuilder } from "@effect/platform"
import { Effect } from "effect"
import { TelemetryStore } from "../../storage/TelemetryStore.js"
import { Tenancy } from "../../tenancy/Tenancy.js"
import { Api } from "../Api.js"
import { CurrentPrincipal } from "../Authentication.js"
import { onlineWindowMs } from "../devices/DevicesConfig.js"
import * as PlatformMetrics from "./PlatformMetrics.js"

export const HttpOverviewLive = HttpApiBuilder.group(Api, "overview", (handlers) =>
  Effect.gen(function* () {
    const store = yield* TelemetryStore
    const tenancy = yield* Tenancy
    const windowMs = yield* Effect.orDie(onlineWindowMs)

    /** The tenant's devices and how many were heard from within the online window. */
    const tenantPart = Effect.fn("Overview.tenant")(function* (tenantId: string) {
      const since = Date.now() - windowMs
      // Devices since deleted from the registry but heard from in the window count too.
      const online = yield* store
        .countSeenSince(tenantId, since)
        .pipe(Effect.catchTag("InvalidQuery", Effect.die))
      return {
        devices: tenancy.devices(tenantId).length,
        online,
        onlineWindowMs: windowMs,
      }
    })

    return handlers.handle(
      "get",
      Effect.fn("Overview.get")(function* () {
        const principal = yield* CurrentPrincipal
        const [{ source, samples }, tenant] = yield* Effect.all(
          [
            PlatformMetrics.read,
            principal.tenantId === null ? Effect.succeed(null) : tenantPart(principal.tenantId),
          ],
          { concurrency: 2 },
        )
        return {
          at: Date.now(),
          source,
          // Under the supervisor ingress is always one of the children, and its counter has no
          // series until its first message: none yet is 0. In one process, no series may as well
          // mean no ingress here, so it stays unknown.
          ingestedTotal:
            PlatformMetrics.sum(samples, "sluice_ingested_messages_total") ??
            (source === "machine" ? 0 : null),
          storedTotal: PlatformMetrics.sum(samples, "sluice_stored_readings_total"),
          deadLettersTotal: PlatformMetrics.sum(samples, "sluice_dead_letters_total"),
          streamLagMs: PlatformMetrics.max(samples, "sluice_stream_lag_milliseconds"),
          liveSubscribers: PlatformMetrics.sum(samples, "sluice_live_subscribers"),
          tenant,
        }
      }),
    )
  }),
)
