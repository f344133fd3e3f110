/**
 * Mutual TLS against the device registry (`TenantCertificates.ts`): the broker over MQTTS with the
 * registry's certificate hook and its tenants' CAs as client certificate roots, a real SQLite
 * registry and the Tenancy that follows it, mosquitto_pub and mqtt.js with openssl-made
 * certificates. Accepted: a certificate of the tenant's CA naming its device (by CN, or by SAN).
 * Refused with CONNACK 5, a logged reason and the refusal counted: self-signed, expired, another
 * tenant's CA naming this tenant's device, an unregistered CN without just-in-time registration.
 * With it, an unregistered CN is created in the CA's default class on first connect (once, however
 * many connect at once, in one process or two) and its messages carry its tenant and class.
 */
import { execFile } from "node:child_process"
import { X509Certificate } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import mqtt, { type IClientOptions, type MqttClient } from "mqtt"
import type { ClientCertificate } from "../../src/ingress/ClientCertificate.js"
import * as MqttBroker from "../../src/ingress/MqttBroker.js"
import * as TenantCertificates from "../../src/ingress/TenantCertificates.js"
import * as Metrics from "../../src/observability/Metrics.js"
import * as Tls from "../../src/platform/Tls.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import * as Apply from "../../src/tenancy/Apply.js"
import { Registry } from "../../src/tenancy/Registry.js"
import { Draft } from "../../src/tenancy/RegistryState.js"
import * as SqliteRegistry from "../../src/tenancy/SqliteRegistry.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"
import {
  type CertificateFiles,
  makeCertificates,
  makeTenantCertificates,
  type TenantTestCertificates,
  type TestCertificates,
} from "../support/certs.js"
import { allRecords, counter, device1, device2, envelopeOf, ingressConfig, platform } from "./harness.js"

const NEW_DEVICE = "new-sensor-1"
const AUTO_CLASS = "acme-auto"

let certs: TestCertificates
let more: TenantTestCertificates
beforeAll(() => {
  certs = makeCertificates(device1.id)
  more = makeTenantCertificates(certs, { device: device1.id, unregistered: NEW_DEVICE })
})
afterAll(() => certs?.remove())

const layers = () => {
  const dir = mkdtempSync(join(tmpdir(), "sluice-mtls-"))
  const registry = SqliteRegistry.layerWith({ dataDir: dir, fsync: false })
  const tenancy = Layer.scoped(Tenancy.Tenancy, Tenancy.live({ pollMs: 50 })).pipe(Layer.provide(registry))
  return Layer.mergeAll(
    tenancy,
    registry,
    SqliteStreamLog.layerWith({ ...SqliteStreamLog.defaults(dir), fsync: false }),
    Metrics.layer,
    Layer.scopedDiscard(
      Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))),
    ),
  )
}

/** Log lines, message and annotations, for the reasons of refusals. */
const captured = () => {
  const lines: Array<string> = []
  const logger = Logger.replace(
    Logger.defaultLogger,
    Logger.make(({ message, annotations }) => {
      const text = Array.isArray(message) ? message.join(" ") : String(message)
      lines.push(`${text} ${JSON.stringify(Object.fromEntries(annotations))}`)
    }),
  )
  return { lines, logger }
}

/** Commits an edit of the registry, then waits until this process's Tenancy follows. */
const change = (edit: (draft: Draft) => void) =>
  Effect.gen(function* () {
    const registry = yield* Registry
    const state = yield* registry.load
    const draft = new Draft(state)
    edit(draft)
    expect(draft.check()).toEqual([])
    const revision = yield* registry.commit(draft.mutations(), state.revision)
    const tenancy = yield* Tenancy.Tenancy
    while (tenancy.revision() < revision) yield* Effect.sleep("20 millis")
  })

const pemOf = (path: string) => new X509Certificate(readFileSync(path))

const authority = (
  id: "acme" | "globex",
  options: { readonly autoRegister?: boolean; readonly defaultClass?: string | null } = {},
) => {
  const certificate = pemOf(id === "acme" ? certs.ca.cert : more.otherCa.cert)
  return {
    id: certificate.fingerprint256,
    tenantId: id,
    pem: certificate.toString(),
    autoRegister: options.autoRegister ?? false,
    defaultClass: options.defaultClass ?? null,
    name: `${id} devices`,
    source: "api" as const,
  }
}

/** The platform of the harness, a class of acme's own, and a CA for each tenant (no JIT). */
const seed = Effect.gen(function* () {
  yield* Apply.apply(platform)
  yield* change((draft) => {
    draft.classes.set(AUTO_CLASS, {
      name: AUTO_CLASS,
      tenantId: "acme",
      versions: [
        { version: 1, definition: { name: AUTO_CLASS, fields: { temperature: { type: "number" } } } },
      ],
      source: "api",
    })
    for (const tenant of ["acme", "globex"] as const) {
      const ca = authority(tenant)
      draft.authorities.set(ca.id, ca)
    }
  })
})

/** The broker with MQTTS, the registry's hook and the tenants' CAs as roots. */
const startBroker = Effect.gen(function* () {
  const tenancy = yield* Tenancy.Tenancy
  const registry = yield* Registry
  const serverTls = yield* Tls.make(
    { certFile: certs.server.cert, keyFile: certs.server.key, caFile: undefined, reloadIntervalMs: 100 },
    { clientCertificateRoots: TenantCertificates.roots(tenancy) },
  )
  expect(serverTls.requestClientCertificates).toBe(true)
  const hook = yield* TenantCertificates.make(tenancy, registry)
  const broker = yield* MqttBroker.make(
    { ...ingressConfig, mqttsPort: 0 },
    { tls: serverTls, authenticateCertificate: hook },
  )
  return { url: `mqtts://127.0.0.1:${broker.tls!.port}`, port: broker.tls!.port }
})

const withCertificate = (files: CertificateFiles, options: IClientOptions = {}): IClientOptions => ({
  ca: certs.caPem(),
  cert: readFileSync(files.cert),
  key: readFileSync(files.key),
  reconnectPeriod: 0,
  connectTimeout: 5_000,
  ...options,
})

/** A connected mqtt.js client, ended with the scope. */
const connect = (url: string, options: IClientOptions) =>
  Effect.acquireRelease(
    Effect.promise(() => mqtt.connectAsync(url, options)),
    (client) => Effect.promise(() => client.endAsync(true)),
  )

/** "connected", or the CONNACK return code (or error) of a refused attempt. */
const outcome = (url: string, options: IClientOptions) =>
  Effect.promise(() =>
    mqtt.connectAsync(url, options, false).then(
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

const closed = (client: MqttClient) =>
  new Promise<number>((resolve) => {
    if (client.disconnected) return resolve(0)
    const started = Date.now()
    client.once("close", () => resolve(Date.now() - started))
  })

/** Runs `mosquitto_pub` (bounded: 15 s); its exit code and output. */
const mosquittoPub = (args: ReadonlyArray<string>) =>
  Effect.async<{ code: number; output: string }>((resume) => {
    execFile("mosquitto_pub", [...args], { timeout: 15_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1
      resume(Effect.succeed({ code, output: `${stdout}${stderr}` }))
    })
  })

const mosquittoWithCertificate = (port: number, files: CertificateFiles, deviceId: string, id: string) =>
  mosquittoPub([
    ...["-h", "127.0.0.1", "-p", String(port), "--cafile", certs.ca.cert],
    ...["--cert", files.cert, "--key", files.key, "-i", `mosquitto-${id}`, "-q", "1"],
    ...["-t", `devices/${deviceId}/telemetry`, "-m", JSON.stringify({ id, temperature: 20 })],
  ])

/** The envelopes in the stream with their message ids. */
const messages = Effect.map(allRecords, (records) =>
  records.map(envelopeOf).map((e) => ({
    tenantId: e.tenantId,
    deviceId: e.deviceId,
    deviceClass: e.deviceClass,
    id: (JSON.parse(Buffer.from(e.payload).toString("utf8")) as { id: string }).id,
  })),
)

const refusedAuth = counter("sluice_refused_messages_total", { transport: "mqtt", reason: "auth" })

describe("mutual TLS with tenant CAs", () => {
  it.scopedLive(
    "accepts a certificate of the tenant's CA naming its device; refuses self-signed, expired, another tenant's CA, an unregistered CN",
    () => {
      const { lines, logger } = captured()
      return Effect.gen(function* () {
        yield* seed
        const { url, port } = yield* startBroker

        // mqtt.js with the device's certificate, and mosquitto_pub with it: the device of acme.
        const client = yield* connect(url, withCertificate(certs.client))
        expect(yield* publish(client, device1.id, { id: "mqttjs-cert", temperature: 21 })).toBe("acked")
        const published = yield* mosquittoWithCertificate(port, certs.client, device1.id, "mosquitto-cert")
        expect(published.code, published.output).toBe(0)
        // The device id from a DNS SAN when the subject has no CN.
        const sanOnly = more.issue("san-only", "/O=Sluice test", { san: `DNS:${device2.id}` })
        const bySan = yield* connect(url, withCertificate(sanOnly))
        expect(yield* publish(bySan, device2.id, { id: "by-san" })).toBe("acked")
        expect((yield* messages).map((m) => [m.tenantId, m.deviceId, m.deviceClass, m.id])).toEqual(
          expect.arrayContaining([
            ["acme", device1.id, "climate", "mqttjs-cert"],
            ["acme", device1.id, "climate", "mosquitto-cert"],
            ["acme", device2.id, "climate", "by-san"],
          ]),
        )
        expect(yield* refusedAuth).toBe(0)

        // Refused, each with CONNACK 5 and its reason in the log.
        const refusals: Array<[string, IClientOptions, string]> = [
          [
            "self-signed",
            withCertificate(certs.selfSigned),
            "not issued by a registered certificate authority (it is self-signed)",
          ],
          ["expired", withCertificate(certs.expired), "the certificate expired on 2020-02-01T00:00:00.000Z"],
          [
            "another tenant's CA naming acme's device",
            withCertificate(more.otherCaDevice),
            `belongs to tenant globex, the device "${device1.id}" to another`,
          ],
          [
            "an unregistered CN",
            withCertificate(more.unregistered),
            `device "${NEW_DEVICE}" is not registered, and the certificate's CA "acme devices"`,
          ],
          [
            "the CA's own certificate",
            withCertificate(certs.ca),
            "a CA certificate cannot authenticate a device",
          ],
          [
            "a user name that is not the certificate's device",
            withCertificate(certs.client, { username: device2.id }),
            `the user name "${device2.id}" is not the device the certificate names`,
          ],
        ]
        for (const [what, options, reason] of refusals) {
          expect(yield* outcome(url, options), what).toBe(5)
          expect(
            lines.some((line) => line.includes(`MQTT connection refused:`) && line.includes(reason)),
            `${what}: ${lines.filter((l) => l.includes("refused")).join("\n")}`,
          ).toBe(true)
        }
        expect(yield* refusedAuth).toBe(refusals.length)
        // The other tenant's device id is never named for it.
        const crossTenant = lines.find((line) => line.includes("belongs to tenant globex"))!
        expect(crossTenant).not.toContain("acme")
        // mosquitto_pub refused too.
        const refusedPub = yield* mosquittoWithCertificate(port, certs.selfSigned, device1.id, "refused")
        expect(refusedPub.code).not.toBe(0)
        expect((yield* Effect.flatMap(Registry, (r) => r.load)).devices.has(NEW_DEVICE)).toBe(false)

        // Disabled: its certificate connection is closed, and it is refused after.
        const wasClosed = closed(client)
        yield* change((draft) => {
          const d = draft.devices.get(device1.id)!
          draft.devices.set(d.id, { ...d, enabled: false })
        })
        expect(yield* Effect.promise(() => wasClosed)).toBeLessThan(2_000)
        expect(yield* outcome(url, withCertificate(certs.client))).toBe(5)
        expect(lines.some((line) => line.includes(`device "${device1.id}" is disabled`))).toBe(true)
        expect(bySan.connected).toBe(true)
      }).pipe(Effect.provide(layers()), Effect.provide(logger))
    },
  )

  it.scopedLive(
    "registers an unregistered CN just in time in the CA's default class, once for concurrent first connects; a removed CA closes and refuses",
    () => {
      const { lines, logger } = captured()
      return Effect.gen(function* () {
        yield* seed
        const { url, port } = yield* startBroker
        expect(yield* outcome(url, withCertificate(more.unregistered))).toBe(5)

        yield* change((draft) => {
          const ca = authority("acme", { autoRegister: true, defaultClass: AUTO_CLASS })
          draft.authorities.set(ca.id, ca)
        })
        // Three first connects at once (mqtt.js with two client ids, and mosquitto_pub): all accepted.
        const [first, second, pub] = yield* Effect.all(
          [
            connect(url, withCertificate(more.unregistered, { clientId: "jit-a" })),
            connect(url, withCertificate(more.unregistered, { clientId: "jit-b" })),
            mosquittoWithCertificate(port, more.unregistered, NEW_DEVICE, "jit-mosquitto"),
          ],
          { concurrency: "unbounded" },
        )
        expect(pub.code, pub.output).toBe(0)
        expect(yield* publish(first, NEW_DEVICE, { id: "jit-1", temperature: 19 })).toBe("acked")
        expect(yield* publish(second, NEW_DEVICE, { id: "jit-2", temperature: 19 })).toBe("acked")

        const state = yield* Effect.flatMap(Registry, (r) => r.load)
        expect(state.devices.get(NEW_DEVICE)).toEqual({
          id: NEW_DEVICE,
          tenantId: "acme",
          className: AUTO_CLASS,
          enabled: true,
          credentials: [],
          source: "api",
        })
        const registered = lines.filter((line) =>
          line.includes(`device ${NEW_DEVICE} registered just in time by CA "acme devices"`),
        )
        expect(registered.length, lines.join("\n")).toBe(1)
        expect(registered[0]).toContain(`"deviceClass":"${AUTO_CLASS}"`)
        const mine = (yield* messages).filter((m) => m.deviceId === NEW_DEVICE)
        expect(mine.map((m) => m.id).sort()).toEqual(["jit-1", "jit-2", "jit-mosquitto"])
        for (const m of mine) expect([m.tenantId, m.deviceClass]).toEqual(["acme", AUTO_CLASS])

        // The other tenant's CA does not register acme's devices, nor devices named like them.
        expect(yield* outcome(url, withCertificate(more.otherCaDevice))).toBe(5)

        // The CA removed: acme has no CA left, so its certificate connections close, and are refused after.
        const firstClosed = closed(first)
        const secondClosed = closed(second)
        yield* change((draft) => {
          draft.authorities.delete(authority("acme").id)
        })
        expect(yield* Effect.promise(() => Promise.all([firstClosed, secondClosed]))).toEqual([
          expect.any(Number),
          expect.any(Number),
        ])
        expect(yield* outcome(url, withCertificate(more.unregistered))).toBe(5)
        expect(yield* outcome(url, withCertificate(certs.client))).toBe(5)
        // A password still works for acme's devices.
        expect(
          yield* outcome(url, { ca: certs.caPem(), username: device2.id, password: device2.credential }),
        ).toBe("connected")
      }).pipe(Effect.provide(layers()), Effect.provide(logger))
    },
  )

  it.scopedLive("two processes meeting the same new device's first connect both accept it", () =>
    Effect.gen(function* () {
      yield* seed
      yield* change((draft) => {
        const ca = authority("acme", { autoRegister: true, defaultClass: AUTO_CLASS })
        draft.authorities.set(ca.id, ca)
      })
      const tenancy = yield* Tenancy.Tenancy
      const registry = yield* Registry
      // Two hooks, each with its own writer and registry state: two ingress processes.
      const hooks = [
        yield* TenantCertificates.make(tenancy, registry),
        yield* TenantCertificates.make(tenancy, registry),
      ]
      const presented = (files: CertificateFiles): ClientCertificate => ({
        certificate: pemOf(files.cert),
        verified: true,
        verificationError: undefined,
        remoteAddress: "127.0.0.1",
      })
      const devices = Array.from({ length: 5 }, (_, i) => ({
        id: `race-${i}`,
        files: more.issue(`race-${i}`, `/CN=race-${i}`),
      }))
      const decisions = yield* Effect.all(
        devices.flatMap((d) =>
          hooks.flatMap((hook) => [hook(presented(d.files), undefined), hook(presented(d.files), d.id)]),
        ),
        { concurrency: "unbounded" },
      )
      expect(decisions.map((d) => d._tag)).toEqual(decisions.map(() => "Accepted"))
      expect(decisions[0]).toEqual({
        _tag: "Accepted",
        device: { tenantId: "acme", deviceId: "race-0", deviceClass: AUTO_CLASS },
      })
      const state = yield* registry.load
      for (const d of devices) expect(state.devices.get(d.id)?.className).toBe(AUTO_CLASS)
    }).pipe(Effect.provide(layers())),
  )
})

describe("the device a certificate names", () => {
  it("is the subject CN, else the first DNS or URI SAN", () => {
    const withBoth = more.issue("cn-and-san", "/CN=by-cn", { san: "DNS:by-san" })
    expect(TenantCertificates.deviceIdOf(pemOf(withBoth.cert))).toEqual({ id: "by-cn", from: "subject CN" })
    const uri = more.issue("uri-san", "/O=Sluice test", {
      san: "IP:127.0.0.1,URI:urn:device:by-uri,DNS:later",
    })
    expect(TenantCertificates.deviceIdOf(pemOf(uri.cert))).toEqual({
      id: "urn:device:by-uri",
      from: "URI subject alternative name",
    })
    const none = more.issue("no-name", "/O=Sluice test")
    expect(TenantCertificates.deviceIdOf(pemOf(none.cert))).toBeUndefined()
  })
})
