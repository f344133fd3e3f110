/** The API implementation: the contract in `Api.ts` with every group's handlers and the auth middleware. */
import { HttpApiBuilder } from "@effect/platform"
import { Layer } from "effect"
import * as HealthHttp from "../observability/HealthHttp.js"
import { Api } from "./Api.js"
import * as Authentication from "./Authentication.js"
import { HttpAdminLive } from "./admin/Http.js"
import { HttpDeadLettersLive } from "./deadletters/Http.js"
import { HttpDevicesLive } from "./devices/Http.js"
import { HttpLiveLive } from "./live/Http.js"
import { HttpOverviewLive } from "./overview/Http.js"
import { HttpTelemetryLive } from "./telemetry/Http.js"

/**
 * The Api with the serving groups' handlers. Requires TelemetryStore, Tenancy, LiveFeed, Metrics,
 * Health; the admin groups write the device registry (`Registry`) when the context has one (every
 * process of the platform does) and answer 503 without it (a server over a fixed Tenancy).
 */
export const ApiLive = HttpApiBuilder.api(Api).pipe(
  Layer.provide([
    HttpDevicesLive,
    HttpAdminLive,
    HttpTelemetryLive,
    HttpDeadLettersLive,
    HttpLiveLive,
    HttpOverviewLive,
    HealthHttp.layerFor(Api),
  ]),
  Layer.provide(Authentication.layer),
)
