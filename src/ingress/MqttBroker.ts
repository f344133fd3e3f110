/**
 * The embedded MQTT 3.1.1 broker (aedes) as an ingress: devices connect with their device id as
 * user name and their credential as password, publish to `devices/{deviceId}/telemetry`, and get
 * their QoS 1 PUBACK only once the message is durable in the stream.
 *
 * It is an ingestion endpoint, not a message bus: subscriptions are refused (there is no downlink
 * yet, and serving live data is the WebSocket API's job), and retained messages are not kept.
 * QoS 0 messages are appended too, unacknowledged as MQTT has it; QoS 2 is at least once here: a
 * PUBLISH retransmitted because its PUBREC was lost is appended again, and the device actor drops
 * the duplicate by message id.
 */
import net from "node:net"
import { Aedes, type AuthenticateError, type Client } from "aedes"
import { Data, Duration, Effect, Layer, LogLevel, Option, Runtime, type Scope } from "effect"
import { Metrics } from "../observability/Metrics.js"
import { guard } from "../platform/ConnectionGuard.js"
import type { AppendError } from "../stream/StreamError.js"
import type { StreamLog } from "../stream/StreamLog.js"
import { encodeEnvelope, partitionKeyOf } from "../tenancy/Envelope.js"
import { type Device, Tenancy } from "../tenancy/Tenancy.js"
import * as Appender from "./Appender.js"
import * as ConnectionLimit from "./ConnectionLimit.js"
import * as IngressConfig from "./IngressConfig.js"
import { FrameLimitedConnection, MqttPacketTooLarge } from "./MqttFrameLimit.js"

/**
 * Bytes a packet may carry besides its payload: a PUBLISH's topic and packet id, or a CONNECT's
 * client id, credentials and will topic. Packets beyond `max_payload_bytes` plus this are cut at
 * their header, before the broker buffers them.
 */
export const PACKET_HEADROOM_BYTES = 4096

/** The broker could not listen (port in use, bad host). */
export class MqttListenError extends Data.TaggedError("MqttListenError")<{
  readonly host: string
  readonly port: number
  readonly reason: string
}> {
  override get message() {
    return `MQTT broker cannot listen on ${this.host}:${this.port}: ${this.reason}`
  }
}

/**
 * Why the broker refused a client or a message. aedes turns a hook's error into a disconnect
 * (MQTT 3.1.1 has no negative PUBACK) and reports it as `clientError`; the reason is logged here.
 */
class MqttRefusal extends Data.TaggedError("MqttRefusal")<{ readonly reason: string }> {
  override get message() {
    return this.reason
  }
}

/** The topic a device publishes telemetry to. */
export const telemetryTopic = (deviceId: string) => `devices/${deviceId}/telemetry`

/** What the broker knows of an authenticated connection, computed once at CONNECT. */
interface Session {
  readonly device: Device
  readonly topic: string
  readonly partitionKey: string
}

/** Where the broker listens once it is up. */
export interface MqttAddress {
  readonly host: string
  readonly port: number
}

/** How long shutdown waits for the broker to close its clients, and then for their sockets to go. */
const SHUTDOWN_GRACE = Duration.seconds(5)

/** MQTT 3.1.1 §3.2.2.3, Table 3.1: CONNACK return code 4, "Connection Refused, bad user name or password". */
const BAD_USER_NAME_OR_PASSWORD = 4 as AuthenticateError["returnCode"]

/**
 * Runs the broker until the scope closes, and returns where it listens. `otherListenerConnections`:
 * connections other HTTP listeners of this process may hold, kept out of the MQTT limit.
 */
export const make = (
  config: IngressConfig.IngressConfig,
  otherListenerConnections = 0,
): Effect.Effect<MqttAddress, MqttListenError, Tenancy | Metrics | StreamLog | Scope.Scope> =>
  Effect.gen(function* () {
    const tenancy = yield* Tenancy
    const metrics = yield* Metrics
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const appender = yield* Appender.make({
      maxRecords: config.maxBatchRecords,
      maxBytes: config.maxBatchBytes,
    })

    // prom-client hashes label objects on every inc; bound children do not.
    const ingested = metrics.ingested.labels({ transport: "mqtt" })
    const refused = (reason: string) => metrics.refused.labels({ transport: "mqtt", reason })
    const refusedAuth = refused("auth")
    const refusedForbidden = refused("forbidden")
    const refusedTooLarge = refused("too_large")
    const refusedPushback = refused("pushback")
    const refusedUnavailable = refused("unavailable")
    const refusedQuota = refused("quota")
    const throttled = metrics.throttled.labels({ transport: "mqtt" })

    const log = (level: LogLevel.LogLevel, message: string, annotations: Record<string, unknown>) => {
      runFork(Effect.logWithLevel(level, message).pipe(Effect.annotateLogs(annotations)))
    }
    const deviceAnnotations = (session: Session, client: Client) => ({
      tenantId: session.device.tenantId,
      deviceId: session.device.deviceId,
      clientId: client.id,
    })

    const sessions = new WeakMap<Client, Session>()

    const authenticate: Aedes["authenticate"] = (client, username, password, done) => {
      const device =
        username === undefined || password === undefined
          ? Option.none()
          : tenancy.authenticateDevice(username, password.toString("utf8"))
      if (Option.isNone(device)) {
        refusedAuth.inc()
        log(LogLevel.Info, "MQTT connection refused: bad user name or password", {
          claimedDeviceId: username ?? null,
          remoteAddress: client.conn instanceof FrameLimitedConnection ? client.conn.remoteAddress : null,
        })
        // §3.1.4: a CONNECT that fails authentication gets a CONNACK with a non-zero return code,
        // then the connection closes [MQTT-3.2.2-5]. Missing credentials are refused the same way:
        // an anonymous device has no identity to append under.
        const error = new MqttRefusal({ reason: "bad user name or password" }) as unknown as AuthenticateError
        error.returnCode = BAD_USER_NAME_OR_PASSWORD
        return done(error, null)
      }
      const { tenantId, deviceId } = device.value
      // [MQTT-3.1.4-2] a CONNECT with a client id already connected closes the older connection.
      // Client ids are namespaced by the authenticated device, so a device can only ever
      // displace its own connections, never another device's.
      client.id = `${deviceId}/${client.id}`
      sessions.set(client, {
        device: device.value,
        topic: telemetryTopic(deviceId),
        partitionKey: partitionKeyOf(tenantId, deviceId),
      })
      done(null, true)
    }

    const refuse = (callback: (error?: Error | null) => void, reason: string) =>
      callback(new MqttRefusal({ reason }))

    const streamRefused = (
      session: Session,
      client: Client,
      error: AppendError,
      callback: (error?: Error | null) => void,
    ) => {
      ;(error._tag === "StreamFull" ? refusedPushback : refusedUnavailable).inc()
      // No PUBACK: the message is still the device's to resend after reconnecting (with a
      // persistent session the client MUST resend it, [MQTT-4.4.0-1]).
      const reason = `message not accepted, disconnecting: ${error.message}`
      log(LogLevel.Warning, reason, deviceAnnotations(session, client))
      refuse(callback, reason)
    }

    const authorizePublish: Aedes["authorizePublish"] = (client, packet, callback) => {
      // A will published by the broker for a client that is already gone has no identity to check.
      const session = client === null ? undefined : sessions.get(client)
      if (client === null || session === undefined)
        return refuse(callback, "publish without an authenticated device")
      if (packet.topic !== session.topic) {
        refusedForbidden.inc()
        const reason = `publish to ${JSON.stringify(packet.topic)} refused: a device publishes only to ${session.topic}`
        log(LogLevel.Warning, reason, deviceAnnotations(session, client))
        return refuse(callback, reason)
      }
      const payload =
        typeof packet.payload === "string" ? Buffer.from(packet.payload, "utf8") : packet.payload
      if (payload.byteLength > config.maxPayloadBytes) {
        refusedTooLarge.inc()
        const reason = `payload of ${payload.byteLength} bytes refused: the limit is ${config.maxPayloadBytes}`
        log(LogLevel.Warning, reason, deviceAnnotations(session, client))
        return refuse(callback, reason)
      }
      // Deliberately not [MQTT-3.3.1-5] (a server stores a retained message): nobody may
      // subscribe, so a retained message would only hold memory per device.
      packet.retain = false
      const { tenantId, deviceId, deviceClass } = session.device
      const append = () =>
        appender.submit(
          {
            partitionKey: session.partitionKey,
            data: encodeEnvelope({ tenantId, deviceId, deviceClass, receivedAt: Date.now() }, payload),
          },
          (error) => {
            if (error !== undefined) return streamRefused(session, client, error, callback)
            ingested.inc()
            // Only now may aedes acknowledge: PUBACK (QoS 1) or PUBREC (QoS 2) follows this callback.
            callback(null)
          },
        )
      // A tenant over its quota: hold this PUBACK until its turn. aedes reads a connection's next
      // packet only after this one is answered, so the tenant's devices slow down, nobody else's.
      const reservation = tenancy.reserve(tenantId, config.quotaMaxDelayMs)
      if (!reservation.granted) {
        refusedQuota.inc()
        const reason = `tenant ${tenantId} is over its ingest quota by more than ${config.quotaMaxDelayMs} ms; disconnecting`
        log(LogLevel.Warning, reason, deviceAnnotations(session, client))
        return refuse(callback, reason)
      }
      if (reservation.waitMs === 0) return append()
      throttled.inc()
      setTimeout(append, reservation.waitMs)
    }

    const authorizeSubscribe: Aedes["authorizeSubscribe"] = (client, subscription, callback) => {
      const session = sessions.get(client)
      log(
        LogLevel.Debug,
        `subscription to ${JSON.stringify(subscription.topic)} refused: the broker only ingests`,
        session === undefined ? { clientId: client.id } : deviceAnnotations(session, client),
      )
      // §3.9.3: a refused subscription is answered with SUBACK return code 0x80 (Failure); the
      // connection stays up.
      callback(null, null)
    }

    const server = net.createServer({ noDelay: true })
    yield* guard(server, {
      listener: "mqtt",
      maxConnections: yield* ConnectionLimit.mqttConnectionLimit(config, otherListenerConnections),
    })
    let listening = false
    let closed = false
    server.once("close", () => {
      closed = true
    })
    // Finalizers are uninterruptible; the waits in them must not be, or no timeout could end them.
    const serverClosed = Effect.async<void>((resume) => {
      if (!listening || closed) return resume(Effect.void)
      server.once("close", () => resume(Effect.void))
    }).pipe(Effect.interruptible, Effect.timeoutOption(SHUTDOWN_GRACE))

    const broker = yield* Effect.acquireRelease(
      Effect.promise(() =>
        Aedes.createBroker({
          authenticate,
          authorizePublish,
          authorizeSubscribe,
          connectTimeout: config.mqttConnectTimeoutMs,
          drainTimeout: config.mqttDrainTimeoutMs,
        }),
      ),
      // Second of the shutdown, once the server stopped accepting (below): messages already
      // handed to the stream are answered, then every client is closed, then the last sockets go.
      (broker) =>
        Effect.all(
          [
            appender.drain,
            Effect.async<void>((resume) => broker.close(() => resume(Effect.void))).pipe(
              Effect.interruptible,
              Effect.timeoutOption(SHUTDOWN_GRACE),
            ),
            serverClosed,
          ],
          { discard: true },
        ),
    )

    broker.on("clientError", (client, error) => {
      if (error instanceof MqttRefusal) return // logged where it was decided
      const session = sessions.get(client)
      const annotations = session === undefined ? { clientId: client.id } : deviceAnnotations(session, client)
      if (error instanceof MqttPacketTooLarge) {
        refusedTooLarge.inc()
        log(LogLevel.Warning, `MQTT connection closed: ${error.message}`, annotations)
      } else {
        log(LogLevel.Info, `MQTT connection closed: ${error.message}`, annotations)
      }
    })
    broker.on("connectionError", (_client, error) => {
      if (error instanceof MqttPacketTooLarge) refusedTooLarge.inc()
      log(LogLevel.Info, `MQTT connection failed before CONNECT completed: ${error.message}`, {})
    })

    const maxPacketBytes = config.maxPayloadBytes + PACKET_HEADROOM_BYTES
    server.on("connection", (socket) => {
      broker.handle(new FrameLimitedConnection(socket, maxPacketBytes))
    })

    const address = yield* Effect.acquireRelease(
      Effect.async<MqttAddress, MqttListenError>((resume) => {
        const onError = (error: Error) =>
          resume(
            Effect.fail(
              new MqttListenError({ host: config.mqttHost, port: config.mqttPort, reason: error.message }),
            ),
          )
        server.once("error", onError)
        server.listen(config.mqttPort, config.mqttHost, () => {
          server.off("error", onError)
          listening = true
          const bound = server.address() as net.AddressInfo
          resume(Effect.succeed({ host: bound.address, port: bound.port }))
        })
      }),
      // First of the shutdown: stop accepting. Open connections end when the broker closes them.
      () =>
        Effect.sync(() => {
          server.close()
        }),
    )
    yield* Effect.logInfo(`MQTT broker listening on ${address.host}:${address.port}`)
    return address
  })

/** The broker with the ingress settings from the environment (SLUICE_INGRESS_*). */
export const layer = Layer.scopedDiscard(Effect.flatMap(IngressConfig.config, (config) => make(config)))

/** The broker in a process whose other HTTP listeners may hold `connections` (they are reserved). */
export const layerBeside = (connections: number) =>
  Layer.scopedDiscard(Effect.flatMap(IngressConfig.config, (config) => make(config, connections)))

/** The broker with explicit settings (tests). */
export const layerWith = (config: IngressConfig.IngressConfig) => Layer.scopedDiscard(make(config))
