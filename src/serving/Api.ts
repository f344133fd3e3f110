/** The Sluice HTTP API: the contract every handler implements and the OpenAPI document describes. */
import { HttpApi, OpenApi } from "@effect/platform"
import { HealthApi } from "../observability/HealthApi.js"
import { DeadLettersApi } from "./deadletters/Api.js"
import { DevicesApi } from "./devices/Api.js"
import { LiveApi } from "./live/Api.js"
import { TelemetryApi } from "./telemetry/Api.js"

export class Api extends HttpApi.make("sluice")
  .add(DevicesApi)
  .add(TelemetryApi)
  .add(DeadLettersApi)
  .add(LiveApi)
  .add(HealthApi)
  .annotate(OpenApi.Title, "Sluice")
  .annotate(
    OpenApi.Description,
    "IoT telemetry. Every /v1 request reads one tenant's data (device history, aggregates, latest " +
      "readings, dead letters, live readings) and is scoped to the tenant of its API key " +
      "(`Authorization: Bearer <key>` or `X-Api-Key`). Devices post readings to the ingress " +
      "listener (port 8081 by default, its own reference at /docs there), not to this API.",
  )
  .annotate(OpenApi.Version, "0.1.0") {}
