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
 *
 * Devices reach it three ways, all into the same aedes instance under the same authentication,
 * topic rule and one connection limit: plain TCP (`mqtt_port`, 1883), TLS (`mqtts_port`, 8883,
 * when a certificate is configured: `src/platform/Tls.ts`) and WebSocket (`streams`, which the
 * ingress HTTP listener feeds from `/mqtt`: `MqttWebSocket.ts`). Over TLS a device may present a
 * client certificate instead of a password; `ClientCertificate.ts` has the hook that decides.
 */
import type { IncomingMessage } from "node:http"
import net from "node:net"
import type { Duplex } from "node:stream"
import tls from "node:tls"
import { Aedes, type AuthenticateError, type Client } from "aedes"
import { Context, Data, Duration, Effect, Layer, LogLevel, Option, Runtime, type Scope } from "effect"
import { Metrics } from "../observability/Metrics.js"
import { guard, type Refusals } from "../platform/ConnectionGuard.js"
import * as Tls from "../platform/Tls.js"
import type { AppendError } from "../stream/StreamError.js"
import type { StreamLog } from "../stream/StreamLog.js"
import { encodeEnvelope, partitionKeyOf } from "../tenancy/Envelope.js"
import { hashSecret } from "../tenancy/Secrets.js"
import { type Device, Tenancy } from "../tenancy/Tenancy.js"
import * as Appender from "./Appender.js"
import {
  type AuthenticateCertificate,
  CertificateAuthentication,
  type CertificateDecision,
  type ClientCertificate,
  commonName,
  refuseCertificates,
  refused as refusedCertificate,
} from "./ClientCertificate.js"
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

/** Neither plain MQTT nor MQTTS would listen: SLUICE_INGRESS_MQTT_PLAINTEXT=false without a certificate. */
export class MqttNoListener extends Data.TaggedError("MqttNoListener")<{}> {
  override get message() {
    return (
      "SLUICE_INGRESS_MQTT_PLAINTEXT=false turns off plain MQTT, and no TLS certificate is configured " +
      "for MQTTS (SLUICE_TLS_CERT_FILE, SLUICE_TLS_KEY_FILE): the broker would listen nowhere"
    )
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
  /** The hash of the password it connected with; null when a client certificate admitted it. */
  readonly credentialHash: string | null
}

/** Where a listener of the broker listens once it is up. */
export interface MqttAddress {
  readonly host: string
  readonly port: number
}

/** The listener a connection came through (the `listener` label of refused connections). */
export type MqttListener = "mqtt" | "mqtts" | "mqtt-ws"

/** What the broker knows of a connection before CONNECT. */
interface ConnectionInfo {
  readonly listener: MqttListener
  readonly remoteAddress: string | undefined
  /** The TLS socket, for a connection over MQTTS (its peer certificate). */
  readonly tlsSocket?: tls.TLSSocket
}

/**
 * MQTT connections that arrive another way than the broker's own listeners (a WebSocket upgrade
 * on the HTTP listener), served under the same limit, authentication and rules.
 */
export interface MqttStreams {
  /** The limit every MQTT connection of this worker takes a place from. */
  readonly budget: ConnectionLimit.ConnectionBudget
  /** The largest MQTT packet accepted, payload and headroom: a bound for a WebSocket message too. */
  readonly maxPacketBytes: number
  /**
   * Serves one MQTT connection over `stream` (the caller took its place in `budget` and gives it
   * back when the connection closes).
   */
  readonly serve: (
    stream: Duplex,
    info: { readonly listener: MqttListener; readonly remoteAddress: string | undefined },
    request?: IncomingMessage,
  ) => void
  /** Waits until every message already handed to the stream is answered (before closing those connections). */
  readonly drain: Effect.Effect<void>
}

/** The running broker: where it listens, and the door for WebSocket connections. */
export interface MqttListeners extends MqttAddress {
  /** The plain TCP listener; undefined when SLUICE_INGRESS_MQTT_PLAINTEXT=false. */
  readonly plain: MqttAddress | undefined
  /** The TLS listener; undefined without a certificate. */
  readonly tls: MqttAddress | undefined
  readonly streams: MqttStreams
}

export interface MqttBrokerOptions {
  /** Connections other HTTP listeners of this process may hold, kept out of the MQTT limit. */
  readonly otherListenerConnections?: number | undefined
  /** TLS for the MQTTS listener; without it there is none. */
  readonly tls?: Tls.ServerTls | undefined
  /** Decides about client certificates (MQTTS, no password); default `refuseCertificates`. */
  readonly authenticateCertificate?: AuthenticateCertificate | undefined
}

/** A TLS socket's verification error as OpenSSL's code (Node gives the code, typed as an Error). */
const verificationErrorOf = (socket: tls.TLSSocket): string | undefined => {
  if (socket.authorized) return undefined
  const error = socket.authorizationError as unknown
  if (error === null || error === undefined) return "UNKNOWN"
  if (typeof error === "string") return error
  const { code, message } = error as { code?: string; message?: string }
  return code ?? message ?? String(error)
}

/** How long shutdown waits for the broker to close its clients, and then for their sockets to go. */
const SHUTDOWN_GRACE = Duration.seconds(5)

/** MQTT 3.1.1 §3.2.2.3, Table 3.1: CONNACK return code 4, "Connection Refused, bad user name or password". */
const BAD_USER_NAME_OR_PASSWORD = 4 as AuthenticateError["returnCode"]

/**
 * Runs the broker until the scope closes, and returns where it listens: plain MQTT unless
 * `config.mqttPlaintext` is false, MQTTS with `options.tls`, and `streams` for WebSocket
 * connections. `host` and `port` are the plain listener's, or the TLS one's without it.
 */
export const make = (
  config: IngressConfig.IngressConfig,
  options: MqttBrokerOptions = {},
): Effect.Effect<
  MqttListeners,
  MqttListenError | MqttNoListener,
  Tenancy | Metrics | StreamLog | Scope.Scope
> =>
  Effect.gen(function* () {
    const serverTls = options.tls
    if (!config.mqttPlaintext && serverTls === undefined) return yield* new MqttNoListener()
    const authenticateCertificate = options.authenticateCertificate ?? refuseCertificates
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
    // Keyed by the connection aedes sees (`client.conn`).
    const connections = new WeakMap<object, ConnectionInfo>()

    // Every connection of a device, so that a registry change (the device disabled or removed, its
    // credential rotated out) closes them at once.
    const byDevice = new Map<string, Set<Client>>()
    const admit = (client: Client, device: Device, credentialHash: string | null) => {
      const { tenantId, deviceId } = device
      // [MQTT-3.1.4-2] a CONNECT with a client id already connected closes the older connection.
      // Client ids are namespaced by the authenticated device, so a device can only ever
      // displace its own connections, never another device's.
      client.id = `${deviceId}/${client.id}`
      sessions.set(client, {
        device,
        topic: telemetryTopic(deviceId),
        partitionKey: partitionKeyOf(tenantId, deviceId),
        credentialHash,
      })
      let mine = byDevice.get(deviceId)
      if (mine === undefined) {
        mine = new Set()
        byDevice.set(deviceId, mine)
      }
      mine.add(client)
    }
    const forget = (client: Client) => {
      const session = sessions.get(client)
      if (session === undefined) return
      const mine = byDevice.get(session.device.deviceId)
      mine?.delete(client)
      if (mine?.size === 0) byDevice.delete(session.device.deviceId)
    }
    const unwatch = tenancy.watch((deviceIds) => {
      for (const deviceId of deviceIds) {
        for (const client of byDevice.get(deviceId) ?? []) {
          const session = sessions.get(client)
          if (session === undefined || tenancy.stillOpens(deviceId, session.credentialHash)) continue
          log(LogLevel.Info, "MQTT connection closed: the device's access was revoked in the registry", {
            ...deviceAnnotations(session, client),
          })
          forget(client)
          client.close()
        }
      }
    })
    yield* Effect.addFinalizer(() => Effect.sync(unwatch))

    /** A certificate and no password, over MQTTS: the hook decides. */
    const authenticateByCertificate = (
      client: Client,
      username: string | undefined,
      tlsSocket: tls.TLSSocket,
      certificate: ClientCertificate["certificate"],
      info: ConnectionInfo,
      done: Parameters<Aedes["authenticate"]>[3],
    ) => {
      const presented: ClientCertificate = {
        certificate,
        verified: tlsSocket.authorized,
        verificationError: verificationErrorOf(tlsSocket),
        remoteAddress: info.remoteAddress,
      }
      const finish = (decision: CertificateDecision) => {
        if (decision._tag === "Accepted") {
          admit(client, decision.device, null)
          return done(null, true)
        }
        refusedAuth.inc()
        log(LogLevel.Info, `MQTT connection refused: ${decision.reason}`, {
          claimedDeviceId: username ?? null,
          certificateSubject: certificate.subject.split("\n").join(", "),
          certificateSerial: certificate.serialNumber,
          certificateVerified: presented.verified,
          verificationError: presented.verificationError ?? null,
          remoteAddress: info.remoteAddress ?? null,
        })
        const error = new MqttRefusal({ reason: decision.reason }) as unknown as AuthenticateError
        error.returnCode = (decision.returnCode ?? 5) as AuthenticateError["returnCode"]
        done(error, null)
      }
      runFork(
        Effect.suspend(() => authenticateCertificate(presented, username)).pipe(
          Effect.catchAllCause((cause) =>
            Effect.as(
              Effect.logError("MQTT client certificate check failed", cause),
              refusedCertificate(
                `the certificate of ${commonName(certificate) ?? "a client"} could not be checked`,
              ),
            ),
          ),
          Effect.flatMap((decision) => Effect.sync(() => finish(decision))),
        ),
      )
    }

    const authenticate: Aedes["authenticate"] = (client, username, password, done) => {
      const info = connections.get(client.conn)
      if (password === undefined && info?.tlsSocket !== undefined) {
        const certificate = info.tlsSocket.getPeerX509Certificate()
        if (certificate !== undefined)
          return authenticateByCertificate(client, username, info.tlsSocket, certificate, info, done)
      }
      const device =
        username === undefined || password === undefined
          ? Option.none()
          : tenancy.authenticateDevice(username, password.toString("utf8"))
      if (Option.isNone(device)) {
        refusedAuth.inc()
        log(LogLevel.Info, "MQTT connection refused: bad user name or password", {
          claimedDeviceId: username ?? null,
          remoteAddress: info?.remoteAddress ?? null,
        })
        // §3.1.4: a CONNECT that fails authentication gets a CONNACK with a non-zero return code,
        // then the connection closes [MQTT-3.2.2-5]. Missing credentials are refused the same way:
        // an anonymous device has no identity to append under.
        const error = new MqttRefusal({ reason: "bad user name or password" }) as unknown as AuthenticateError
        error.returnCode = BAD_USER_NAME_OR_PASSWORD
        return done(error, null)
      }
      admit(client, device.value, hashSecret(password!.toString("utf8")))
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

    // One limit for every way MQTT arrives; each listener is also capped at it by Node (`guard`),
    // which only matters if the budget's own count were wrong.
    const maxConnections = yield* ConnectionLimit.mqttConnectionLimit(
      config,
      options.otherListenerConnections ?? 0,
    )
    const budget = new ConnectionLimit.ConnectionBudget(maxConnections)
    const plainServer = config.mqttPlaintext ? net.createServer({ noDelay: true }) : undefined
    const plainRefusals =
      plainServer === undefined ? undefined : yield* guard(plainServer, { listener: "mqtt", maxConnections })
    // The decision about a client certificate is the broker's (authenticate), never the
    // handshake's: a device without one still authenticates with its credential. The CONNECT
    // timeout covers the handshake too.
    const tlsServer =
      serverTls === undefined
        ? undefined
        : tls.createServer({
            ...serverTls.deviceOptions(),
            noDelay: true,
            requestCert: serverTls.requestClientCertificates,
            rejectUnauthorized: false,
            handshakeTimeout: config.mqttConnectTimeoutMs,
          })
    const tlsRefusals =
      tlsServer === undefined ? undefined : yield* guard(tlsServer, { listener: "mqtts", maxConnections })
    if (tlsServer !== undefined) yield* serverTls!.attach(tlsServer, "devices")

    /** Resolves once `server` has closed (at once if it never listened); bounded by the grace. */
    const closedSignal = (server: net.Server) => {
      let listening = false
      let closed = false
      server.once("listening", () => {
        listening = true
      })
      server.once("close", () => {
        closed = true
      })
      // Finalizers are uninterruptible; the waits in them must not be, or no timeout could end them.
      return Effect.async<void>((resume) => {
        if (!listening || closed) return resume(Effect.void)
        server.once("close", () => resume(Effect.void))
      }).pipe(Effect.interruptible, Effect.timeoutOption(SHUTDOWN_GRACE))
    }
    const serversClosed = Effect.all(
      [plainServer, tlsServer].filter((server) => server !== undefined).map(closedSignal),
      { discard: true },
    )

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
            serversClosed,
          ],
          { discard: true },
        ),
    )

    broker.on("clientDisconnect", forget)
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
    const serve = (socket: Duplex, info: ConnectionInfo, request?: IncomingMessage) => {
      // A Duplex is all FrameLimitedConnection uses of its socket (data, end, close, error,
      // pause/resume, write, cork); the address comes from `info`.
      const connection = new FrameLimitedConnection(socket as net.Socket, maxPacketBytes)
      connections.set(connection, info)
      broker.handle(connection, request)
    }

    /** A connection on one of the broker's own listeners: its place in the budget, or refused. */
    const admitted = (socket: net.Socket, refusals: Refusals) => {
      if (!budget.take()) {
        refusals.refused("limit", { remoteAddress: socket.remoteAddress })
        socket.destroy()
        return false
      }
      socket.once("close", () => budget.release())
      return true
    }

    plainServer?.on("connection", (socket) => {
      if (!admitted(socket, plainRefusals!)) return
      serve(socket, { listener: "mqtt", remoteAddress: socket.remoteAddress })
    })

    if (tlsServer !== undefined) {
      // A connection takes its place in the budget before the TLS handshake, which is what the
      // server's own connection listener starts: it runs only for the admitted ones.
      const handshake = tlsServer.listeners("connection") as Array<(socket: net.Socket) => void>
      tlsServer.removeAllListeners("connection")
      tlsServer.on("connection", (socket: net.Socket) => {
        if (!admitted(socket, tlsRefusals!)) return
        for (const listener of handshake) listener.call(tlsServer, socket)
      })
      // Handshake failures and timeouts are counted by the guard (`tls_handshake`).
      tlsServer.on("secureConnection", (tlsSocket: tls.TLSSocket) => {
        serve(tlsSocket, { listener: "mqtts", remoteAddress: tlsSocket.remoteAddress, tlsSocket })
      })
    }

    const listen = (server: net.Server, port: number, name: string) =>
      Effect.acquireRelease(
        Effect.async<MqttAddress, MqttListenError>((resume) => {
          const onError = (error: Error) =>
            resume(Effect.fail(new MqttListenError({ host: config.mqttHost, port, reason: error.message })))
          server.once("error", onError)
          server.listen(port, config.mqttHost, () => {
            server.off("error", onError)
            const bound = server.address() as net.AddressInfo
            resume(Effect.succeed({ host: bound.address, port: bound.port }))
          })
        }),
        // First of the shutdown: stop accepting. Open connections end when the broker closes them.
        () =>
          Effect.sync(() => {
            server.close()
          }),
      ).pipe(
        Effect.tap((address) =>
          Effect.logInfo(`${name} listening on ${address.host}:${address.port}`).pipe(
            Effect.annotateLogs({ maxConnections }),
          ),
        ),
      )

    const plain =
      plainServer === undefined ? undefined : yield* listen(plainServer, config.mqttPort, "MQTT broker")
    const secure =
      tlsServer === undefined
        ? undefined
        : yield* listen(
            tlsServer,
            config.mqttsPort,
            serverTls!.requestClientCertificates
              ? "MQTT broker over TLS (client certificates requested)"
              : "MQTT broker over TLS",
          )
    const first = (plain ?? secure)!
    return {
      host: first.host,
      port: first.port,
      plain,
      tls: secure,
      streams: {
        budget,
        maxPacketBytes,
        serve: (stream, info, request) => serve(stream, info, request),
        drain: appender.drain,
      },
    } satisfies MqttListeners
  })

/** The running broker, for the listeners that feed it connections (MQTT over WebSocket). */
export class MqttBroker extends Context.Tag("sluice/ingress/MqttBroker")<MqttBroker, MqttListeners>() {}

const fromEnvironment = (otherListenerConnections: number) =>
  Layer.scoped(
    MqttBroker,
    Effect.gen(function* () {
      const config = yield* IngressConfig.config
      const tls = yield* Tls.Tls
      const hook = yield* Effect.serviceOption(CertificateAuthentication)
      return yield* make(config, {
        otherListenerConnections,
        tls: Option.getOrUndefined(tls),
        authenticateCertificate: Option.getOrUndefined(hook),
      })
    }),
  ).pipe(Layer.provide(Tls.layer))

/**
 * The broker with the ingress settings from the environment (SLUICE_INGRESS_*), TLS from
 * SLUICE_TLS_*, and the `CertificateAuthentication` hook if there is one.
 */
export const layer = fromEnvironment(0)

/** The broker in a process whose other HTTP listeners may hold `connections` (they are reserved). */
export const layerBeside = (connections: number) => fromEnvironment(connections)

/** The broker with explicit settings (tests). */
export const layerWith = (config: IngressConfig.IngressConfig, options: MqttBrokerOptions = {}) =>
  Layer.scoped(MqttBroker, make(config, options))
