/** The Sluice HTTP API: the contract every handler implements and the OpenAPI document describes. */
import { HttpApi, OpenApi } from "@effect/platform"
import { IngestApi } from "../ingress/IngestApi.js"
import { DeadLettersApi } from "./deadletters/Api.js"
import { DevicesApi } from "./devices/Api.js"
import { HealthApi } from "./health/Api.js"
import { LiveApi } from "./live/Api.js"
import { TelemetryApi } from "./telemetry/Api.js"

export class Api extends HttpApi.make("sluice")
  .add(IngestApi)
  .add(DevicesApi)
  .add(TelemetryApi)
  .add(DeadLettersApi)
  .add(LiveApi)
  .add(HealthApi)
  .annotate(OpenApi.Title, "Sluice")
  .annotate(
    OpenApi.Description,
    "IoT telemetry. Devices post readings to /v1/telemetry with their own credential as the bearer " +
      "token. Every other /v1 request reads one tenant's data (device history, aggregates, latest " +
      "readings, dead letters, live readings) and is scoped to the tenant of its API key " +
      "(`Authorization: Bearer <key>` or `X-Api-Key`).",
  )
  .annotate(OpenApi.Version, "0.1.0") {}
