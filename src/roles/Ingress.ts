/**
 * The ingress role: the embedded MQTT broker and the HTTP ingest listener, appending to the
 * stream. It owns no storage and no processing: this file (and what it imports) never loads
 * ClickHouse, chDB or the actors. Ready once both listeners listen; at shutdown it is the first
 * role to stop (not ready, stop accepting, answer what was appended, close).
 *
 * Devices may authenticate over MQTTS with a client certificate from their tenant's CA
 * (`TenantCertificates.ts`): the broker gets the registry's hook, and its TLS listener asks for a
 * client certificate, verified against every tenant's CA (re-read at every TLS reload check).
 * The TLS material is built once per process, by whichever listener comes first; the roots come
 * from the process's infrastructure (`Infrastructure.ts`), so in a process that also serves the
 * API (`--single-process`) the API's listener builds it with the tenants' CAs too.
 */
import { Effect, Layer } from "effect"
import * as IngressHttpServer from "../ingress/IngressHttpServer.js"
import * as MqttBroker from "../ingress/MqttBroker.js"
import * as TenantCertificates from "../ingress/TenantCertificates.js"
import * as Health from "../observability/Health.js"
import * as ServingConfig from "../serving/ServingConfig.js"

/** The certificate hook and the client certificate roots, from the registry. */
const certificates = Layer.merge(TenantCertificates.layer, TenantCertificates.rootsLayer)

/**
 * Requires StreamLog, Tenancy, Registry, Metrics, Health. `servingInProcess`: the serving API
 * listens in this process too, so its connections are kept out of the MQTT connection limit as
 * well. The HTTP listener feeds MQTT over WebSocket into the broker, so it stops before the broker
 * does.
 */
export const layer = (options: { readonly servingInProcess: boolean }) =>
  Health.readyWhileAlive("ingress").pipe(
    Layer.provide(
      IngressHttpServer.layer.pipe(
        Layer.provideMerge(
          (options.servingInProcess
            ? Layer.unwrapEffect(
                Effect.map(ServingConfig.http, (http) => MqttBroker.layerBeside(http.maxConnections)),
              )
            : MqttBroker.layer
          ).pipe(Layer.provide(certificates)),
        ),
      ),
    ),
  )
