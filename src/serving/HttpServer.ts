/**
 * The HTTP server of the process: the REST API, the WebSocket live feed, HTTP ingest
 * (`POST /v1/telemetry`, handled by ingress), /metrics, /healthz, /readyz, /openapi.json and the
 * API reference at /docs, all on one port.
 */
import { createServer } from "node:http"
import {
  HttpApiBuilder,
  HttpApiScalar,
  HttpMiddleware,
  HttpServer,
  type HttpServerRequest,
} from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Config, Effect, Layer } from "effect"
import * as HttpIngress from "../ingress/HttpIngress.js"
import * as IngressConfig from "../ingress/IngressConfig.js"
import { Api } from "./Api.js"
import { ApiLive } from "./Http.js"
import * as ServingConfig from "./ServingConfig.js"

export interface HttpServerOptions {
  /** Interface to bind; tests use 127.0.0.1. */
  readonly host: string
  /** Port to bind; 0 picks a free one. */
  readonly port: number
  /** Settings of the ingest endpoint (body limit, in-flight limit, batching); default `IngressConfig.defaults`. */
  readonly ingress?: IngressConfig.IngressConfig | undefined
}

/**
 * The request tracer records the full URL in its span; a WebSocket client may carry its API key
 * in the query (`?api_key=`), so such requests are not traced rather than leak the key to a
 * tracing backend.
 */
const keyInUrl = (request: HttpServerRequest.HttpServerRequest) => /[?&]api(_|%5f)key=/i.test(request.url)

/**
 * Serves the API on `host:port`. Outputs `HttpServer.HttpServer` (its `address` tells the port
 * when 0 was asked). Requires TelemetryStore, Tenancy, LiveFeed, Metrics, Readiness, and
 * StreamLog (for ingest).
 */
export const layerWith = (options: HttpServerOptions) =>
  HttpApiBuilder.serve().pipe(
    Layer.provide(HttpApiScalar.layer({ path: "/docs" })),
    Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
    Layer.provide(ApiLive),
    Layer.provide(HttpIngress.layerWith(Api, options.ingress ?? IngressConfig.defaults)),
    HttpServer.withLogAddress,
    HttpMiddleware.withTracerDisabledWhen(keyInUrl),
    Layer.provideMerge(NodeHttpServer.layer(createServer, { host: options.host, port: options.port })),
  )

/** Serves the API on SLUICE_HTTP_HOST:SLUICE_HTTP_PORT (default 0.0.0.0:8080), ingest set by SLUICE_INGRESS_*. */
export const layer = Layer.unwrapEffect(
  Effect.map(Config.all({ http: ServingConfig.http, ingress: IngressConfig.config }), ({ http, ingress }) =>
    layerWith({ ...http, ingress }),
  ),
)
