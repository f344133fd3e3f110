/**
 * The serving role's HTTP listener: the REST API, the WebSocket live feed, /metrics, /healthz,
 * /readyz, /openapi.json, the API reference at /docs and the web console at /, on one port (SLUICE_HTTP_PORT, default
 * 8080). Device ingest is the ingress role's listener, not this one. With a TLS certificate
 * (SLUICE_TLS_CERT_FILE) it is HTTPS (and `wss://` for the live feed) on the same port, with no
 * plain HTTP beside it.
 */
import { HttpApiBuilder, HttpApiScalar, HttpMiddleware, type HttpServerRequest } from "@effect/platform"
import { Effect, Layer, Option } from "effect"
import { guardedServer, withLogAddress } from "../platform/ConnectionGuard.js"
import * as Tls from "../platform/Tls.js"
import * as Console from "./Console.js"
import { ApiLive } from "./Http.js"
import * as ServingConfig from "./ServingConfig.js"

export interface HttpServerOptions {
  /** Interface to bind; tests use 127.0.0.1. */
  readonly host: string
  /** Port to bind; 0 picks a free one. */
  readonly port: number
  /** Connections held at once; more are refused, logged and counted. Default 1024. */
  readonly maxConnections?: number | undefined
  /** HTTPS with this certificate; plain HTTP without. */
  readonly tls?: Tls.ServerTls | undefined
}

/**
 * The request tracer records the full URL in its span; a WebSocket client may carry its API key
 * in the query (`?api_key=`), so such requests are not traced rather than leak the key to a
 * tracing backend.
 */
const keyInUrl = (request: HttpServerRequest.HttpServerRequest) => /[?&]api(_|%5f)key=/i.test(request.url)

/**
 * Serves the API on `host:port`. Outputs `HttpServer.HttpServer` (its `address` tells the port
 * when 0 was asked). Requires TelemetryStore, Tenancy, LiveFeed, Metrics, Health. Its
 * connections are limited and every refusal logged and counted (`listener="serving"`). `Layer.fresh`:
 * the HttpApi router is a shared layer, so without it a process that also runs ingress would
 * mount both APIs on both listeners.
 */
export const layerWith = (options: HttpServerOptions) =>
  Layer.fresh(
    HttpApiBuilder.serve().pipe(
      Layer.provide(HttpApiScalar.layer({ path: "/docs" })),
      Layer.provide(Console.layer),
      Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
      Layer.provide(ApiLive),
      withLogAddress(options.tls !== undefined),
      HttpMiddleware.withTracerDisabledWhen(keyInUrl),
      Layer.provideMerge(
        guardedServer(
          "serving",
          options.maxConnections ?? 1024,
          { host: options.host, port: options.port },
          options.tls,
        ),
      ),
    ),
  )

/** Serves the API on SLUICE_HTTP_HOST:SLUICE_HTTP_PORT (default 0.0.0.0:8080), HTTPS with SLUICE_TLS_*. */
export const layer = Layer.unwrapEffect(
  Effect.gen(function* () {
    const http = yield* ServingConfig.http
    const tls = yield* Tls.Tls
    return layerWith({ ...http, tls: Option.getOrUndefined(tls) })
  }),
).pipe(Layer.provide(Tls.layer))
