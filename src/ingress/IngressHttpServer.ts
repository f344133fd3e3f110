/**
 * The ingress role's HTTP listener: `POST /v1/telemetry` for devices, plus this process's
 * /healthz, /readyz, /metrics and the ingest API's own reference (/openapi.json, /docs). It is a
 * listener of its own (SLUICE_INGRESS_HTTP_PORT, default 8081), apart from the serving API
 * (8080): devices and applications are different clients, and each tier scales and fails alone.
 */
import { HttpApi, HttpApiBuilder, HttpApiScalar, HttpServer, OpenApi } from "@effect/platform"
import { Effect, Layer } from "effect"
import { HealthApi } from "../observability/HealthApi.js"
import * as HealthHttp from "../observability/HealthHttp.js"
import { guardedServer } from "../platform/ConnectionGuard.js"
import * as HttpIngress from "./HttpIngress.js"
import { IngestApi } from "./IngestApi.js"
import * as IngressConfig from "./IngressConfig.js"

/** The device-facing HTTP API. */
export class IngressApi extends HttpApi.make("sluice-ingress")
  .add(IngestApi)
  .add(HealthApi)
  .annotate(OpenApi.Title, "Sluice ingest")
  .annotate(
    OpenApi.Description,
    "Devices post readings to /v1/telemetry with their own credential as the bearer token; the 202 " +
      "is sent once the reading is durable in the stream.",
  )
  .annotate(OpenApi.Version, "0.1.0") {}

/**
 * Serves the ingest API on `config.httpHost:httpPort`. Outputs `HttpServer.HttpServer` (its
 * address tells the port when 0 was asked). Requires StreamLog, Tenancy, Metrics, Health.
 * `Layer.fresh`: the HttpApi router is a shared layer, so without it a process that also serves
 * the serving API would mount both APIs on both listeners.
 */
export const layerWith = (config: IngressConfig.IngressConfig) =>
  Layer.fresh(
    HttpApiBuilder.serve().pipe(
      Layer.provide(HttpApiScalar.layer({ path: "/docs" })),
      Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
      Layer.provide(
        HttpApiBuilder.api(IngressApi).pipe(
          Layer.provide([HttpIngress.layerWith(IngressApi, config), HealthHttp.layerFor(IngressApi)]),
        ),
      ),
      HttpServer.withLogAddress,
      Layer.provideMerge(
        guardedServer("http", config.httpMaxConnections, { host: config.httpHost, port: config.httpPort }),
      ),
    ),
  )

/** The ingest listener with the settings from the environment (SLUICE_INGRESS_*). */
export const layer = Layer.unwrapEffect(Effect.map(IngressConfig.config, layerWith))
