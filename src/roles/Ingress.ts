/**
 * The ingress role: the embedded MQTT broker and the HTTP ingest listener, appending to the
 * stream. It owns no storage and no processing: this file (and what it imports) never loads
 * ClickHouse, chDB or the actors. Ready once both listeners listen; at shutdown it is the first
 * role to stop (not ready, stop accepting, answer what was appended, close).
 */
import { Layer } from "effect"
import * as IngressHttpServer from "../ingress/IngressHttpServer.js"
import * as MqttBroker from "../ingress/MqttBroker.js"
import * as Health from "../observability/Health.js"

/** Requires StreamLog, Tenancy, Metrics, Health. */
export const layer = Health.readyWhileAlive("ingress").pipe(
  Layer.provide(Layer.mergeAll(MqttBroker.layer, IngressHttpServer.layer)),
)
