/**
 * The ingress role's HTTP listener: `POST /v1/telemetry` for devices, `POST /v1/provision` for
 * devices registering themselves with a provisioning claim (`Provisioning.ts`), MQTT over
 * WebSocket at `/mqtt`, plus this process's /healthz, /readyz, /metrics and the ingest API's own
 * reference (/openapi.json, /docs). It is a listener of its own (SLUICE_INGRESS_HTTP_PORT,
 * default 8081), apart from the serving API (8080): devices and applications are different
 * clients, and each tier scales and fails alone. With a TLS certificate (SLUICE_TLS_CERT_FILE) it
 * is HTTPS (and `wss://`) on the same port, with no plain HTTP beside it.
 */
import { HttpApi, HttpApiBuilder, HttpApiScalar, OpenApi } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer, Option } from "effect"
import { HealthApi } from "../observability/HealthApi.js"
import * as HealthHttp from "../observability/HealthHttp.js"
import { guardedNodeServer, withLogAddress } from "../platform/ConnectionGuard.js"
import * as Tls from "../platform/Tls.js"
import * as HttpIngress from "./HttpIngress.js"
import { IngestApi } from "./IngestApi.js"
import * as IngressConfig from "./IngressConfig.js"
import { MqttBroker, type MqttStreams } from "./MqttBroker.js"
import * as MqttWebSocket from "./MqttWebSocket.js"
import * as Provisioning from "./Provisioning.js"

/** The device-facing HTTP API. */
export class IngressApi extends HttpApi.make("sluice-ingress")
  .add(IngestApi)
  .add(Provisioning.ProvisioningApi)
  .add(HealthApi)
  .annotate(OpenApi.Title, "Sluice ingest")
  .annotate(
    OpenApi.Description,
    "Devices post readings to /v1/telemetry with their own credential as the bearer token; the 202 " +
      "is sent once the reading is durable in the stream. A device holding a provisioning claim token of " +
      "its tenant registers itself at /v1/provision and receives its own credential.",
  )
  .annotate(OpenApi.Version, "0.1.0") {}

export interface IngressHttpOptions {
  /** HTTPS with this certificate; plain HTTP without. */
  readonly tls?: Tls.ServerTls | undefined
  /** The broker's door for MQTT over WebSocket at `/mqtt` (when `config.mqttWebSocket`); none without. */
  readonly mqtt?: MqttStreams | undefined
  /** The rate limits of `POST /v1/provision`; `Provisioning.defaultLimits` without. */
  readonly provisioning?: Provisioning.ProvisioningLimits | undefined
}

/**
 * Serves the ingest API on `config.httpHost:httpPort`. Outputs `HttpServer.HttpServer` (its
 * address tells the port when 0 was asked). Requires StreamLog, Tenancy, Metrics, Health;
 * provisioning writes the context's `Registry` (every process of the platform has it; 503 without).
 * `Layer.fresh`: the HttpApi router is a shared layer, so without it a process that also serves
 * the serving API would mount both APIs on both listeners.
 */
export const layerWith = (config: IngressConfig.IngressConfig, options: IngressHttpOptions = {}) =>
  Layer.unwrapScoped(
    Effect.gen(function* () {
      const server = yield* guardedNodeServer("http", config.httpMaxConnections, options.tls)
      const listener = NodeHttpServer.layer(() => server, { host: config.httpHost, port: config.httpPort })
      const webSocket =
        options.mqtt !== undefined && config.mqttWebSocket
          ? MqttWebSocket.layer(server, options.mqtt)
          : Layer.empty
      return Layer.fresh(
        HttpApiBuilder.serve().pipe(
          Layer.provide(HttpApiScalar.layer({ path: "/docs" })),
          Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
          Layer.provide(
            HttpApiBuilder.api(IngressApi).pipe(
              Layer.provide([
                HttpIngress.layerWith(IngressApi, config),
                Provisioning.layerWith(IngressApi, options.provisioning),
                HealthHttp.layerFor(IngressApi),
              ]),
            ),
          ),
          withLogAddress(options.tls !== undefined),
          // The WebSocket door is released before the server (it closes the MQTT connections the
          // server's close would otherwise wait for).
          Layer.provideMerge(Layer.provideMerge(webSocket, listener)),
        ),
      )
    }),
  )

/**
 * The ingest listener with the settings from the environment (SLUICE_INGRESS_*), TLS from
 * SLUICE_TLS_*, and MQTT over WebSocket into the broker. Requires MqttBroker too.
 */
export const layer = Layer.unwrapEffect(
  Effect.gen(function* () {
    const config = yield* IngressConfig.config
    const tls = yield* Tls.Tls
    const broker = yield* MqttBroker
    return layerWith(config, { tls: Option.getOrUndefined(tls), mqtt: broker.streams })
  }),
).pipe(Layer.provide(Tls.layer))
