/**
 * TLS on the ingress listeners and MQTT over WebSocket, with real clients: mosquitto_pub and
 * mqtt.js over MQTTS (with openssl-made certificates), mqtt.js over `ws://` and `wss://`, HTTPS
 * POSTs; client certificates handed to a stub hook; the certificate replaced on disk and picked up
 * by new connections without a restart; one MQTT limit for TCP, TLS and WebSocket.
 */
import { execFile } from "node:child_process"
import { copyFileSync, readFileSync, renameSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import tls from "node:tls"
import { HttpServer } from "@effect/platform"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Either, Layer, Logger, Option, Schedule } from "effect"
import mqtt, { type IClientOptions, type MqttClient } from "mqtt"
import {
  type AuthenticateCertificate,
  accepted,
  type ClientCertificate,
  commonName,
  refused,
} from "../../src/ingress/ClientCertificate.js"
import type { IngressConfig } from "../../src/ingress/IngressConfig.js"
import * as IngressHttpServer from "../../src/ingress/IngressHttpServer.js"
import * as MqttBroker from "../../src/ingress/MqttBroker.js"
import * as Health from "../../src/observability/Health.js"
import * as Tls from "../../src/platform/Tls.js"
import { httpsRequest, makeCertificates, presentedSerial, type TestCertificates } from "../support/certs.js"
import { allRecords, counter, dependencies, device1, device3, envelopeOf, ingressConfig } from "./harness.js"

const REFUSED = "sluice_refused_connections_total"

const readPem = (path: string) => readFileSync(path)

let certs: TestCertificates
beforeAll(() => {
  certs = makeCertificates(device1.id)
})
afterAll(() => certs?.remove())

/** The server certificate and key copied to files of the test's own, which it may replace. */
const serverFiles = (name: string) => {
  const cert = join(certs.dir, `${name}-live.pem`)
  const key = join(certs.dir, `${name}-live.key`)
  copyFileSync(certs.server.cert, cert)
  copyFileSync(certs.server.key, key)
  return { cert, key }
}

const settings = (
  files: { cert: string; key: string },
  options: { caFile?: string; reloadIntervalMs?: number } = {},
): Tls.TlsSettings => ({
  certFile: files.cert,
  keyFile: files.key,
  caFile: options.caFile,
  reloadIntervalMs: options.reloadIntervalMs ?? 5_000,
})

const config: IngressConfig = { ...ingressConfig, mqttsPort: 0, httpHost: "127.0.0.1", httpPort: 0 }

/**
 * The broker (plain MQTT and, with `tls`, MQTTS) and the ingress HTTP listener with MQTT over
 * WebSocket, as the ingress role wires them, until the scope closes.
 */
const startIngress = (
  options: {
    readonly tls?: Tls.ServerTls | undefined
    readonly authenticateCertificate?: AuthenticateCertificate
    readonly config?: Partial<IngressConfig>
  } = {},
) =>
  Effect.gen(function* () {
    const merged = { ...config, ...options.config }
    const broker = yield* MqttBroker.make(merged, {
      tls: options.tls,
      authenticateCertificate: options.authenticateCertificate,
    })
    const context = yield* Layer.build(
      IngressHttpServer.layerWith(merged, { tls: options.tls, mqtt: broker.streams }).pipe(
        Layer.provide(Health.layerReady(["ingress"])),
      ),
    )
    const { address } = Context.get(context, HttpServer.HttpServer)
    const httpPort = address._tag === "TcpAddress" ? address.port : 0
    return { broker, httpPort }
  })

/** A connected mqtt.js client, ended with the scope. */
const connect = (url: string, options: IClientOptions) =>
  Effect.acquireRelease(
    Effect.promise(() => mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5_000, ...options })),
    (client) => Effect.promise(() => client.endAsync(true)),
  )

/** "connected", or the CONNACK return code (or error) of a refused attempt. */
const outcome = (url: string, options: IClientOptions) =>
  Effect.promise(() =>
    mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5_000, ...options }, false).then(
      async (client) => {
        await client.endAsync(true)
        return "connected" as const
      },
      (error: Error & { code?: number | string }) => error.code ?? error.message,
    ),
  )

const publish = (client: MqttClient, deviceId: string, body: object) =>
  Effect.promise(() =>
    client
      .publishAsync(`devices/${deviceId}/telemetry`, JSON.stringify(body), { qos: 1 })
      .then(() => "acked"),
  )

/** Whether a QoS 1 publish is acknowledged, or the broker closes the connection first (bounded: 5 s). */
const publishOutcome = (client: MqttClient, topic: string, payload: string | Buffer) =>
  Effect.async<"acked" | "closed">((resume) => {
    if (client.disconnected) return resume(Effect.succeed("closed"))
    const onClose = () => resume(Effect.succeed("closed"))
    client.once("close", onClose)
    client.publish(topic, payload, { qos: 1 }, (error) => {
      if (!error) {
        client.off("close", onClose)
        resume(Effect.succeed("acked"))
      }
    })
  }).pipe(
    Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("no PUBACK and no disconnect") }),
  )

const asDevice = (device: { id: string; credential: string }): IClientOptions => ({
  username: device.id,
  password: device.credential,
})

/** Message ids in the stream from `deviceId`. */
const idsFrom = (deviceId: string) =>
  Effect.map(allRecords, (records) =>
    records
      .map(envelopeOf)
      .filter((envelope) => envelope.deviceId === deviceId)
      .map((envelope) => (JSON.parse(Buffer.from(envelope.payload).toString("utf8")) as { id: string }).id),
  )

/** Runs `mosquitto_pub` (bounded: 15 s); its exit code and output. */
const mosquittoPub = (args: ReadonlyArray<string>) =>
  Effect.async<{ code: number; output: string }>((resume) => {
    execFile("mosquitto_pub", [...args], { timeout: 15_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1
      resume(Effect.succeed({ code, output: `${stdout}${stderr}` }))
    })
  })

/** Retries `effect` until `done` holds of its result (every 50 ms, for at most `seconds`). */
const eventually = <A, E, R>(effect: Effect.Effect<A, E, R>, done: (a: A) => boolean, seconds = 5) =>
  effect.pipe(
    Effect.filterOrFail(done, (a) => new Error(`not yet: ${JSON.stringify(a)}`)),
    Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo(`${seconds} seconds`))),
  )

describe("Tls settings", () => {
  const fromEnv = (env: Record<string, string>) =>
    ConfigProvider.fromMap(new Map(Object.entries(env)), { pathDelim: "_" }).pipe(ConfigProvider.constantCase)
  const read = (env: Record<string, string>) =>
    Effect.either(Effect.withConfigProvider(Tls.config, fromEnv(env)))

  it.effect("are off without a certificate, and need the key with the certificate", () =>
    Effect.gen(function* () {
      expect(yield* read({})).toEqual(Either.right(Option.none()))
      const both = yield* read({ SLUICE_TLS_CERT_FILE: "/c.pem", SLUICE_TLS_KEY_FILE: "/k.pem" })
      expect(both).toEqual(
        Either.right(
          Option.some({ certFile: "/c.pem", keyFile: "/k.pem", caFile: undefined, reloadIntervalMs: 5_000 }),
        ),
      )
      expect(Either.isLeft(yield* read({ SLUICE_TLS_CERT_FILE: "/c.pem" }))).toBe(true)
      expect(Either.isLeft(yield* read({ SLUICE_TLS_KEY_FILE: "/k.pem" }))).toBe(true)
      expect(Either.isLeft(yield* read({ SLUICE_TLS_CA_FILE: "/ca.pem" }))).toBe(true)
    }),
  )

  it.scoped("refuse a key that is not the certificate's, saying which files", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Tls.make(settings({ cert: certs.server.cert, key: certs.client.key })))
      expect(error.message).toContain(certs.client.key)
      expect(error.message).toContain("not the key of the certificate")
      const missing = yield* Effect.flip(Tls.make(settings({ cert: "/no/such.pem", key: certs.server.key })))
      expect(missing.message).toContain("/no/such.pem")
    }),
  )
})

describe("MQTT over TLS", () => {
  it.scopedLive("takes mosquitto_pub and mqtt.js over MQTTS with a password, beside plain MQTT", () =>
    Effect.gen(function* () {
      const serverTls = yield* Tls.make(settings(serverFiles("mqtts")))
      const { broker } = yield* startIngress({ tls: serverTls })
      const mqttsPort = broker.tls!.port
      expect(broker.plain?.port).toBe(broker.port)

      const published = yield* mosquittoPub([
        ...["-h", "127.0.0.1", "-p", String(mqttsPort), "--cafile", certs.ca.cert],
        ...["-u", device1.id, "-P", device1.credential, "-i", "mosquitto-tls", "-q", "1"],
        ...[
          "-t",
          `devices/${device1.id}/telemetry`,
          "-m",
          JSON.stringify({ id: "mosquitto-1", temperature: 21 }),
        ],
      ])
      expect(published.code, published.output).toBe(0)

      const secure = yield* connect(`mqtts://127.0.0.1:${mqttsPort}`, {
        ...asDevice(device1),
        ca: certs.caPem(),
      })
      expect(yield* publish(secure, device1.id, { id: "mqttjs-tls-1", temperature: 22 })).toBe("acked")
      const plain = yield* connect(`mqtt://127.0.0.1:${broker.plain!.port}`, asDevice(device1))
      expect(yield* publish(plain, device1.id, { id: "plain-1", temperature: 23 })).toBe("acked")
      expect((yield* idsFrom(device1.id)).sort()).toEqual(["mosquitto-1", "mqttjs-tls-1", "plain-1"])

      // Wrong password over TLS: the same CONNACK 4 as plain.
      expect(
        yield* outcome(`mqtts://127.0.0.1:${mqttsPort}`, {
          username: device1.id,
          password: "wrong",
          ca: certs.caPem(),
        }),
      ).toBe(4)
      // A client that does not trust the certificate, and one speaking plain MQTT to the TLS port:
      // refused in the handshake, counted for the listener.
      expect(yield* outcome(`mqtts://127.0.0.1:${mqttsPort}`, asDevice(device1))).not.toBe("connected")
      expect(yield* outcome(`mqtt://127.0.0.1:${mqttsPort}`, asDevice(device1))).not.toBe("connected")
      yield* eventually(counter(REFUSED, { listener: "mqtts", reason: "tls_handshake" }), (n) => n >= 2)
    }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive("turns plain MQTT off when told, and refuses to have no MQTT listener at all", () =>
    Effect.gen(function* () {
      const serverTls = yield* Tls.make(settings(serverFiles("tls-only")))
      const broker = yield* MqttBroker.make({ ...config, mqttPlaintext: false }, { tls: serverTls })
      expect(broker.plain).toBeUndefined()
      expect(broker.port).toBe(broker.tls!.port)
      const error = yield* Effect.flip(MqttBroker.make({ ...config, mqttPlaintext: false }))
      expect(error._tag).toBe("MqttNoListener")
    }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive(
    "hands a client certificate to the hook, and still takes passwords from clients without one",
    () =>
      Effect.gen(function* () {
        const serverTls = yield* Tls.make(settings(serverFiles("mtls"), { caFile: certs.ca.cert }))
        expect(serverTls.requestClientCertificates).toBe(true)
        const seen: Array<{ presented: ClientCertificate; username: string | undefined }> = []
        // A stub registry: the device whose id is the CN, if the certificate verified against the CA file.
        const hook: AuthenticateCertificate = (presented, username) =>
          Effect.sync(() => {
            seen.push({ presented, username })
            if (!presented.verified)
              return refused(`certificate not verified: ${presented.verificationError}`)
            return commonName(presented.certificate) === device1.id
              ? accepted({ tenantId: "acme", deviceId: device1.id, deviceClass: "climate" })
              : refused("no such device")
          })
        const { broker } = yield* startIngress({ tls: serverTls, authenticateCertificate: hook })
        const url = `mqtts://127.0.0.1:${broker.tls!.port}`
        const withCertificate = (files: { cert: string; key: string }): IClientOptions => ({
          ca: certs.caPem(),
          cert: readPem(files.cert),
          key: readPem(files.key),
        })

        const client = yield* connect(url, withCertificate(certs.client))
        expect(yield* publish(client, device1.id, { id: "by-certificate", temperature: 20 })).toBe("acked")
        const envelope = envelopeOf((yield* allRecords).at(-1)!)
        expect([envelope.tenantId, envelope.deviceId]).toEqual(["acme", device1.id])
        expect(seen[0]!.presented.verified).toBe(true)
        expect(seen[0]!.presented.certificate.serialNumber).toBe(certs.client.serialNumber)
        expect(seen[0]!.presented.remoteAddress).toBe("127.0.0.1")

        // mosquitto_pub with the certificate and no password.
        const published = yield* mosquittoPub([
          ...["-h", "127.0.0.1", "-p", String(broker.tls!.port), "--cafile", certs.ca.cert],
          ...["--cert", certs.client.cert, "--key", certs.client.key, "-i", "mosquitto-cert", "-q", "1"],
          ...["-t", `devices/${device1.id}/telemetry`, "-m", JSON.stringify({ id: "mosquitto-cert" })],
        ])
        expect(published.code, published.output).toBe(0)
        expect(yield* idsFrom(device1.id)).toContain("mosquitto-cert")

        // Not signed by the CA, or expired: the hook sees why, the device gets CONNACK 5.
        expect(yield* outcome(url, withCertificate(certs.selfSigned))).toBe(5)
        expect(seen.at(-1)!.presented).toMatchObject({
          verified: false,
          verificationError: "DEPTH_ZERO_SELF_SIGNED_CERT",
        })
        expect(yield* outcome(url, { ...withCertificate(certs.expired), username: device1.id })).toBe(5)
        expect(seen.at(-1)!.presented).toMatchObject({
          verified: false,
          verificationError: "CERT_HAS_EXPIRED",
        })
        expect(seen.at(-1)!.username).toBe(device1.id)

        // No certificate: the password, over the same listener.
        const calls = seen.length
        const byPassword = yield* connect(url, { ...asDevice(device3), ca: certs.caPem() })
        expect(yield* publish(byPassword, device3.id, { id: "by-password" })).toBe("acked")
        expect(seen.length).toBe(calls)
        expect(yield* counter("sluice_refused_messages_total", { transport: "mqtt", reason: "auth" })).toBe(2)
      }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive("verifies against roots a registry provides, read again at every reload check", () =>
    Effect.gen(function* () {
      // The registry knows no CA at first, then registers the test CA.
      let roots: Array<Buffer> = []
      const serverTls = yield* Tls.make(settings(serverFiles("roots"), { reloadIntervalMs: 100 }), {
        clientCertificateRoots: () => roots,
      })
      expect(serverTls.requestClientCertificates).toBe(true)
      const verified: Array<boolean> = []
      const hook: AuthenticateCertificate = (presented) =>
        Effect.sync(() => {
          verified.push(presented.verified)
          return presented.verified
            ? accepted({ tenantId: "acme", deviceId: device1.id, deviceClass: "climate" })
            : refused(`not verified: ${presented.verificationError}`)
        })
      const { broker } = yield* startIngress({ tls: serverTls, authenticateCertificate: hook })
      const options = {
        ca: certs.caPem(),
        cert: readPem(certs.client.cert),
        key: readPem(certs.client.key),
      }
      const url = `mqtts://127.0.0.1:${broker.tls!.port}`
      expect(yield* outcome(url, options)).toBe(5)
      roots = [certs.caPem()]
      yield* eventually(outcome(url, options), (result) => result === "connected")
      expect(verified[0]).toBe(false)
      expect(verified.at(-1)).toBe(true)
    }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive("refuses certificates by default: nothing decides about them yet", () =>
    Effect.gen(function* () {
      const serverTls = yield* Tls.make(settings(serverFiles("mtls-default"), { caFile: certs.ca.cert }))
      const { broker } = yield* startIngress({ tls: serverTls })
      const url = `mqtts://127.0.0.1:${broker.tls!.port}`
      const options = { ca: certs.caPem(), cert: readPem(certs.client.cert), key: readPem(certs.client.key) }
      expect(yield* outcome(url, options)).toBe(5)
      // With a password as well, the password decides.
      expect(yield* outcome(url, { ...options, ...asDevice(device1) })).toBe("connected")
    }).pipe(Effect.provide(dependencies())),
  )
})

describe("HTTPS and certificate reload", () => {
  it.scopedLive(
    "serves ingest over HTTPS and picks up a replaced certificate within the poll interval",
    () => {
      const logs: Array<string> = []
      const logger = Logger.replace(
        Logger.defaultLogger,
        Logger.make(({ message }) => {
          logs.push(String(Array.isArray(message) ? message.join(" ") : message))
        }),
      )
      return Effect.gen(function* () {
        const files = serverFiles("reload")
        const serverTls = yield* Tls.make(settings(files, { reloadIntervalMs: 200 }))
        const { broker, httpPort } = yield* startIngress({ tls: serverTls })
        const ca = certs.caPem()

        const posted = yield* Effect.promise(() =>
          httpsRequest(`https://127.0.0.1:${httpPort}/v1/telemetry`, ca, {
            method: "POST",
            headers: { authorization: `Bearer ${device1.credential}`, "content-type": "application/json" },
            body: JSON.stringify({ id: "https-1", temperature: 19 }),
          }),
        )
        expect(posted.status, posted.text).toBe(202)
        // Plain HTTP on the same port is not served.
        const plain = yield* Effect.promise(() =>
          fetch(`http://127.0.0.1:${httpPort}/healthz`).then(
            (r) => r.status,
            () => "refused",
          ),
        )
        expect(plain).not.toBe(200)

        const serialOverMqtts = () =>
          Effect.async<string>((resume) => {
            const socket = tls.connect({ host: "127.0.0.1", port: broker.tls!.port, ca }, () => {
              const serial = socket.getPeerX509Certificate()!.serialNumber
              socket.destroy()
              resume(Effect.succeed(serial))
            })
            socket.on("error", (error) => resume(Effect.die(error)))
          })
        expect(yield* Effect.promise(() => presentedSerial(httpPort, ca))).toBe(certs.server.serialNumber)
        expect(yield* serialOverMqtts()).toBe(certs.server.serialNumber)
        const held = yield* connect(`mqtts://127.0.0.1:${broker.tls!.port}`, { ...asDevice(device1), ca })

        // A bad file: logged, the certificate in use stays.
        writeFileSync(files.cert, "not a certificate")
        yield* eventually(
          Effect.sync(() => logs.some((line) => line.includes("TLS certificate not reloaded"))),
          (b) => b,
        )
        expect(yield* Effect.promise(() => presentedSerial(httpPort, ca))).toBe(certs.server.serialNumber)

        // The renewed certificate, moved in over the old files (as cert-manager or an editor does).
        const renewed = certs.issueServer("renewed")
        const started = Date.now()
        copyFileSync(renewed.key, `${files.key}.new`)
        renameSync(`${files.key}.new`, files.key)
        copyFileSync(renewed.cert, `${files.cert}.new`)
        renameSync(`${files.cert}.new`, files.cert)
        yield* eventually(
          Effect.promise(() => presentedSerial(httpPort, ca)),
          (serial) => serial === renewed.serialNumber,
          2,
        )
        expect(Date.now() - started).toBeLessThan(2_000)
        expect(yield* serialOverMqtts()).toBe(renewed.serialNumber)
        expect(
          logs.some((line) =>
            line.includes(`TLS certificate reloaded: CN=localhost (serial ${renewed.serialNumber})`),
          ),
        ).toBe(true)
        // The connection opened before keeps going.
        expect(yield* publish(held, device1.id, { id: "after-reload" })).toBe("acked")
      }).pipe(Effect.provide(dependencies()), Effect.provide(logger))
    },
  )
})

describe("MQTT over WebSocket", () => {
  it.scopedLive("takes mqtt.js over ws:// at /mqtt with the same authentication and topic rule", () =>
    Effect.gen(function* () {
      const { httpPort } = yield* startIngress()
      const url = `ws://127.0.0.1:${httpPort}/mqtt`
      const client = yield* connect(url, asDevice(device1))
      expect(yield* publish(client, device1.id, { id: "ws-1", temperature: 18 })).toBe("acked")
      expect(yield* idsFrom(device1.id)).toEqual(["ws-1"])
      expect(yield* outcome(url, { username: device1.id, password: "wrong" })).toBe(4)
      // Another device's topic: refused with a disconnect, as over TCP.
      const other = yield* connect(url, asDevice(device3))
      expect(yield* publishOutcome(other, `devices/${device1.id}/telemetry`, "{}")).toBe("closed")
      // The API is still there on the same listener.
      const health = yield* Effect.promise(() => fetch(`http://127.0.0.1:${httpPort}/healthz`))
      expect(health.status).toBe(200)
      // A packet over the limit is cut, as over TCP.
      const big = yield* connect(url, asDevice(device1))
      expect(yield* publishOutcome(big, `devices/${device1.id}/telemetry`, Buffer.alloc(64 * 1024))).toBe(
        "closed",
      )
      expect(yield* idsFrom(device1.id)).toEqual(["ws-1"])
    }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive("takes mqtt.js over wss:// when the listener is HTTPS", () =>
    Effect.gen(function* () {
      const serverTls = yield* Tls.make(settings(serverFiles("wss")))
      const { httpPort } = yield* startIngress({ tls: serverTls })
      const client = yield* connect(`wss://127.0.0.1:${httpPort}/mqtt`, {
        ...asDevice(device3),
        ca: certs.caPem(),
      })
      expect(yield* publish(client, device3.id, { id: "wss-1" })).toBe("acked")
      expect(yield* idsFrom(device3.id)).toEqual(["wss-1"])
    }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive("shares one MQTT limit between TCP, TLS and WebSocket, counting refusals per listener", () =>
    Effect.gen(function* () {
      const serverTls = yield* Tls.make(settings(serverFiles("limit")))
      const { broker, httpPort } = yield* startIngress({ tls: serverTls, config: { mqttMaxConnections: 1 } })
      const ca = certs.caPem()
      const held = yield* connect(`mqtt://127.0.0.1:${broker.plain!.port}`, asDevice(device1))
      expect(yield* outcome(`wss://127.0.0.1:${httpPort}/mqtt`, { ...asDevice(device3), ca })).not.toBe(
        "connected",
      )
      expect(yield* outcome(`mqtts://127.0.0.1:${broker.tls!.port}`, { ...asDevice(device3), ca })).not.toBe(
        "connected",
      )
      expect(yield* counter(REFUSED, { listener: "mqtt-ws", reason: "limit" })).toBe(1)
      expect(yield* counter(REFUSED, { listener: "mqtts", reason: "limit" })).toBe(1)
      // HTTP itself is not held back by the MQTT limit.
      const health = yield* Effect.promise(() =>
        httpsRequest(`https://127.0.0.1:${httpPort}/healthz`, ca).then((r) => r.status),
      )
      expect(health).toBe(200)
      yield* Effect.promise(() => held.endAsync(true))
      // Once the place is free, a WebSocket device gets it.
      yield* eventually(
        outcome(`wss://127.0.0.1:${httpPort}/mqtt`, { ...asDevice(device3), ca }),
        (result) => result === "connected",
      )
    }).pipe(Effect.provide(dependencies())),
  )
})
