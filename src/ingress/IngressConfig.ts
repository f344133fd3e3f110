/**
 * Ingress configuration, read with Effect `Config`. Keys are snake_case with unit suffixes, nested
 * under `sluice.ingress`; from the environment they are upper-cased, e.g. `SLUICE_INGRESS_MQTT_PORT`.
 */
import { Config } from "effect"
import { MAX_RECORD_BYTES } from "../stream/Shards.js"

/**
 * Room left in a stream record for the envelope header and the partition key: a payload may be at
 * most the stream's per-record limit minus this.
 */
export const ENVELOPE_HEADROOM_BYTES = 4096

/** The largest `max_payload_bytes` the stream can carry (Kinesis: 1 MiB per record, header included). */
export const MAX_PAYLOAD_LIMIT_BYTES = MAX_RECORD_BYTES - ENVELOPE_HEADROOM_BYTES

export interface IngressConfig {
  /** Interface the embedded MQTT broker listens on (SLUICE_INGRESS_MQTT_HOST). Default `0.0.0.0`. */
  readonly mqttHost: string
  /** TCP port of the embedded MQTT broker (SLUICE_INGRESS_MQTT_PORT). Default 1883; 0 picks a free port. */
  readonly mqttPort: number
  /**
   * Whether the plain-TCP MQTT listener (`mqtt_port`) runs (SLUICE_INGRESS_MQTT_PLAINTEXT). Default
   * true. With a TLS certificate (SLUICE_TLS_CERT_FILE) it runs beside MQTTS unless this is false;
   * false without a certificate is refused at start (no MQTT listener would be left).
   */
  readonly mqttPlaintext: boolean
  /**
   * Port of MQTT over TLS (SLUICE_INGRESS_MQTTS_PORT), on `mqtt_host`, when a TLS certificate is
   * configured (SLUICE_TLS_CERT_FILE). Default 8883; 0 picks a free port.
   */
  readonly mqttsPort: number
  /**
   * Whether the HTTP ingest listener takes MQTT over WebSocket at `/mqtt`
   * (SLUICE_INGRESS_MQTT_WEBSOCKET): browser and JavaScript devices, `ws://host:8081/mqtt`, or
   * `wss://` when the listener is TLS. Default true.
   */
  readonly mqttWebSocket: boolean
  /** Interface the HTTP ingest listener binds (SLUICE_INGRESS_HTTP_HOST). Default `0.0.0.0`. */
  readonly httpHost: string
  /**
   * TCP port of the HTTP ingest listener, `POST /v1/telemetry` (SLUICE_INGRESS_HTTP_PORT). Default
   * 8081: devices post here, applications read from the serving port (8080). 0 picks a free port.
   */
  readonly httpPort: number
  /**
   * Largest accepted message payload, MQTT and HTTP alike (SLUICE_INGRESS_MAX_PAYLOAD_BYTES).
   * Default 256 KiB; at most 1 MiB minus 4 KiB (the stream's per-record limit less the envelope).
   */
  readonly maxPayloadBytes: number
  /**
   * Most concurrent MQTT connections on this machine, all ingress workers together; more are refused
   * at accept (SLUICE_INGRESS_MQTT_MAX_CONNECTIONS). Default 10,000. Each worker takes its share,
   * lowered where the fd limit leaves less (`ConnectionLimit.derive`).
   */
  readonly mqttMaxConnections: number
  /**
   * Ingress worker processes sharing the MQTT and HTTP ports on this machine
   * (SLUICE_INGRESS_WORKERS); they split `mqtt_max_connections`. Default 1.
   */
  readonly workers: number
  /**
   * Most concurrent connections on the ingress HTTP listener (SLUICE_INGRESS_HTTP_MAX_CONNECTIONS).
   * Default 1024. Its descriptors are kept from MQTT, so devices cannot starve HTTP of them.
   */
  readonly httpMaxConnections: number
  /** How long a new connection may take to send CONNECT (SLUICE_INGRESS_MQTT_CONNECT_TIMEOUT_MS). Default 10 s. */
  readonly mqttConnectTimeoutMs: number
  /**
   * How long the broker waits for a client that stopped reading before disconnecting it
   * (SLUICE_INGRESS_MQTT_DRAIN_TIMEOUT_MS). Default 30 s.
   */
  readonly mqttDrainTimeoutMs: number
  /**
   * Most HTTP ingest requests handled at once; beyond it a request gets 429 before its body is
   * read, which bounds the memory bodies can hold (SLUICE_INGRESS_HTTP_MAX_IN_FLIGHT). Default 1024.
   */
  readonly httpMaxInFlight: number
  /** `Retry-After` sent with 503 when the stream is unavailable (SLUICE_INGRESS_UNAVAILABLE_RETRY_AFTER_MS). Default 5 s. */
  readonly unavailableRetryAfterMs: number
  /**
   * Most records in one stream append: messages received in the same event-loop turn are appended
   * together, up to this many (SLUICE_INGRESS_MAX_BATCH_RECORDS). Default 500, Kinesis's PutRecords limit.
   */
  readonly maxBatchRecords: number
  /** Most bytes in one stream append (SLUICE_INGRESS_MAX_BATCH_BYTES). Default 4 MiB (PutRecords allows 5). */
  readonly maxBatchBytes: number
  /**
   * How long an MQTT PUBACK may be held back for a tenant over its quota before the device is
   * disconnected instead (SLUICE_INGRESS_QUOTA_MAX_DELAY_MS). Default 10 s.
   */
  readonly quotaMaxDelayMs: number
}

const key = <A>(config: Config.Config<A>) => config.pipe(Config.nested("ingress"), Config.nested("sluice"))

const atLeast = (min: number) =>
  Config.validate<number>({ message: `must be at least ${min}`, validation: (n) => n >= min })

/** The ingress settings (SLUICE_INGRESS_*). */
export const config: Config.Config<IngressConfig> = Config.all({
  mqttHost: key(Config.string("mqtt_host").pipe(Config.withDefault("0.0.0.0"))),
  mqttPort: key(
    Config.integer("mqtt_port").pipe(
      Config.withDefault(1883),
      Config.validate({ message: "must be between 0 and 65535", validation: (n) => n >= 0 && n <= 65535 }),
    ),
  ),
  mqttPlaintext: key(Config.boolean("mqtt_plaintext").pipe(Config.withDefault(true))),
  mqttsPort: key(
    Config.integer("mqtts_port").pipe(
      Config.withDefault(8883),
      Config.validate({ message: "must be between 0 and 65535", validation: (n) => n >= 0 && n <= 65535 }),
    ),
  ),
  mqttWebSocket: key(Config.boolean("mqtt_websocket").pipe(Config.withDefault(true))),
  httpHost: key(Config.string("http_host").pipe(Config.withDefault("0.0.0.0"))),
  httpPort: key(
    Config.integer("http_port").pipe(
      Config.withDefault(8081),
      Config.validate({ message: "must be between 0 and 65535", validation: (n) => n >= 0 && n <= 65535 }),
    ),
  ),
  maxPayloadBytes: key(
    Config.integer("max_payload_bytes").pipe(
      Config.withDefault(256 * 1024),
      Config.validate({
        message: `must be between 1 and ${MAX_PAYLOAD_LIMIT_BYTES}`,
        validation: (n) => n >= 1 && n <= MAX_PAYLOAD_LIMIT_BYTES,
      }),
    ),
  ),
  mqttMaxConnections: key(
    Config.integer("mqtt_max_connections").pipe(Config.withDefault(10_000), atLeast(1)),
  ),
  workers: key(Config.integer("workers").pipe(Config.withDefault(1), atLeast(1))),
  httpMaxConnections: key(Config.integer("http_max_connections").pipe(Config.withDefault(1024), atLeast(1))),
  mqttConnectTimeoutMs: key(
    Config.integer("mqtt_connect_timeout_ms").pipe(Config.withDefault(10_000), atLeast(1)),
  ),
  mqttDrainTimeoutMs: key(
    Config.integer("mqtt_drain_timeout_ms").pipe(Config.withDefault(30_000), atLeast(1)),
  ),
  httpMaxInFlight: key(Config.integer("http_max_in_flight").pipe(Config.withDefault(1024), atLeast(1))),
  unavailableRetryAfterMs: key(
    Config.integer("unavailable_retry_after_ms").pipe(Config.withDefault(5_000), atLeast(0)),
  ),
  maxBatchRecords: key(Config.integer("max_batch_records").pipe(Config.withDefault(500), atLeast(1))),
  maxBatchBytes: key(Config.integer("max_batch_bytes").pipe(Config.withDefault(4 * 1024 * 1024), atLeast(1))),
  quotaMaxDelayMs: key(Config.integer("quota_max_delay_ms").pipe(Config.withDefault(10_000), atLeast(0))),
})

/** Defaults for `layerWith`, to override per use (tests bind 127.0.0.1 on a free port). */
export const defaults: IngressConfig = {
  mqttHost: "0.0.0.0",
  mqttPort: 1883,
  mqttPlaintext: true,
  mqttsPort: 8883,
  mqttWebSocket: true,
  httpHost: "0.0.0.0",
  httpPort: 8081,
  maxPayloadBytes: 256 * 1024,
  mqttMaxConnections: 10_000,
  workers: 1,
  httpMaxConnections: 1024,
  mqttConnectTimeoutMs: 10_000,
  mqttDrainTimeoutMs: 30_000,
  httpMaxInFlight: 1024,
  unavailableRetryAfterMs: 5_000,
  maxBatchRecords: 500,
  maxBatchBytes: 4 * 1024 * 1024,
  quotaMaxDelayMs: 10_000,
}
