/**
 * A listener for a process that has no HTTP listener of its own (a processor alone): /healthz,
 * /readyz and /metrics on the serving port setting (SLUICE_HTTP_PORT), so that every process can
 * be probed and scraped.
 */
import { createServer } from "node:http"
import { HttpApi, HttpApiBuilder, HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Layer } from "effect"
import { HealthApi } from "./HealthApi.js"
import * as HealthHttp from "./HealthHttp.js"

class OpsApi extends HttpApi.make("sluice-ops").add(HealthApi) {}

/** Serves the health group on `host:port`. Requires Health and Metrics. */
export const layerWith = (options: { readonly host: string; readonly port: number }) =>
  Layer.fresh(
    HttpApiBuilder.serve().pipe(
      Layer.provide(HttpApiBuilder.api(OpsApi).pipe(Layer.provide(HealthHttp.layerFor(OpsApi)))),
      HttpServer.withLogAddress,
      Layer.provideMerge(NodeHttpServer.layer(createServer, options)),
    ),
  )
