/**
 * A listener for a process that has no HTTP listener of its own (a processor alone): /healthz,
 * /readyz and /metrics on the serving port setting (SLUICE_HTTP_PORT), so that every process can
 * be probed and scraped.
 */
import { HttpApi, HttpApiBuilder, HttpServer } from "@effect/platform"
import { Layer } from "effect"
import { guardedServer } from "../platform/ConnectionGuard.js"
import { HealthApi } from "./HealthApi.js"
import * as HealthHttp from "./HealthHttp.js"

class OpsApi extends HttpApi.make("sluice-ops").add(HealthApi) {}

/** Serves the health group on `host:port`. Requires Health and Metrics. */
export const layerWith = (options: {
  readonly host: string
  readonly port: number
  readonly maxConnections: number
}) =>
  Layer.fresh(
    HttpApiBuilder.serve().pipe(
      Layer.provide(HttpApiBuilder.api(OpsApi).pipe(Layer.provide(HealthHttp.layerFor(OpsApi)))),
      HttpServer.withLogAddress,
      Layer.provideMerge(
        guardedServer("ops", options.maxConnections, { host: options.host, port: options.port }),
      ),
    ),
  )
