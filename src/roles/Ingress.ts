/**
 * The ingress role: the embedded MQTT broker and the HTTP ingest listener, appending to the
 * stream. It owns no storage and no processing: this file (and what it imports) never loads
 * ClickHouse, chDB or the actors. Ready once both listeners listen; at shutdown it is the first
 * role to stop (not ready, stop accepting, answer what was appended, close).
 */
import { Effect, Layer } from "effect"
import * as IngressHttpServer from "../ingress/IngressHttpServer.js"
import * as MqttBroker from "../ingress/MqttBroker.js"
import * as Health from "../observability/Health.js"
import * as ServingConfig from "../serving/ServingConfig.js"

/**
 * Requires StreamLog, Tenancy, Metrics, Health. `servingInProcess`: the serving API listens in this
 * process too, so its connections are kept out of the MQTT connection limit as well. The HTTP
 * listener feeds MQTT over WebSocket into the broker, so it stops before the broker does.
 */
export const layer = (options: { readonly servingInProcess: boolean }) =>
  Health.readyWhileAlive("ingress").pipe(
    Layer.provide(
      IngressHttpServer.layer.pipe(
        Layer.provideMerge(
          options.servingInProcess
            ? Layer.unwrapEffect(
                Effect.map(ServingConfig.http, (http) => MqttBroker.layerBeside(http.maxConnections)),
              )
            : MqttBroker.layer,
        ),
      ),
    ),
  )
