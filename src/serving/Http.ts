/** The API implementation: the contract in `Api.ts` with every group's handlers and the auth middleware. */
import { HttpApiBuilder } from "@effect/platform"
import { Layer } from "effect"
import { Api } from "./Api.js"
import * as Authentication from "./Authentication.js"
import { HttpDeadLettersLive } from "./deadletters/Http.js"
import { HttpDevicesLive } from "./devices/Http.js"
import { HttpHealthLive } from "./health/Http.js"
import { HttpLiveLive } from "./live/Http.js"
import { HttpTelemetryLive } from "./telemetry/Http.js"

/**
 * The Api with the serving groups' handlers. Requires TelemetryStore, Tenancy, LiveFeed, Metrics,
 * Readiness, and the `ingest` group's handlers (`HttpIngress.layerWith(Api, …)`).
 */
export const ApiLive = HttpApiBuilder.api(Api).pipe(
  Layer.provide([HttpDevicesLive, HttpTelemetryLive, HttpDeadLettersLive, HttpLiveLive, HttpHealthLive]),
  Layer.provide(Authentication.layer),
)
