/**
 * `sluice --role ingress` with a TLS certificate, through real clients only: mosquitto_pub over
 * MQTTS with the demo device's credential, `fetch` over HTTPS (a child process trusting the test
 * CA through NODE_EXTRA_CA_CERTS), mqtt.js over `wss://`, plain MQTT beside; then the certificate
 * files replaced while it runs, and new connections on every TLS listener get the new one.
 */
import { execFile } from "node:child_process"
import { copyFileSync, mkdtempSync, renameSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import tls from "node:tls"
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  httpsRequest,
  makeCertificates,
  makeTenantCertificates,
  presentedSerial,
  type TestCertificates,
} from "../support/certs.js"
import { eventually, freePort } from "./platform.js"
import { startRole, stop } from "./roleProcess.js"

const DEVICE = { id: "thermo-1", credential: "thermo-1-secret" }
const TOPIC = `devices/${DEVICE.id}/telemetry`

let certs: TestCertificates
beforeAll(() => {
  certs = makeCertificates(DEVICE.id)
})
afterAll(() => certs?.remove())

/** Runs a program (bounded: 20 s); its exit code and output. */
const run = (file: string, args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  new Promise<{ code: number; output: string }>((resolve) => {
    execFile(
      file,
      [...args],
      { timeout: 20_000, env: { ...process.env, ...env } },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1
        resolve({ code, output: `${stdout}${stderr}` })
      },
    )
  })

/** The serial of the certificate a new TLS connection to `port` is given (raw TLS, no protocol). */
const tlsSerial = (port: number, ca: Buffer) =>
  new Promise<string>((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ca }, () => {
      const serial = socket.getPeerX509Certificate()?.serialNumber
      socket.destroy()
      if (serial === undefined) reject(new Error("no certificate"))
      else resolve(serial)
    })
    socket.on("error", reject)
  })

describe("--role ingress with TLS", () => {
  it("takes MQTTS, HTTPS and wss:// devices, keeps plain MQTT, and reloads its certificate without a restart", {
    timeout: 120_000,
  }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "sluice-tls-"))
    const cert = join(certs.dir, "e2e-live.pem")
    const key = join(certs.dir, "e2e-live.key")
    copyFileSync(certs.server.cert, cert)
    copyFileSync(certs.server.key, key)
    const [mqttPort, mqttsPort, ingestPort] = [await freePort(), await freePort(), await freePort()]
    const role = startRole(
      "ingress",
      ["--role", "ingress", "--mqtt-port", String(mqttPort), "--ingress-http-port", String(ingestPort)],
      {
        SLUICE_DATA_DIR: dataDir,
        SLUICE_TLS_CERT_FILE: cert,
        SLUICE_TLS_KEY_FILE: key,
        SLUICE_TLS_RELOAD_INTERVAL_MS: "250",
        SLUICE_INGRESS_MQTTS_PORT: String(mqttsPort),
      },
    )
    const ca = certs.caPem()
    const ingestUrl = `https://127.0.0.1:${ingestPort}`
    try {
      const ready = await eventually(
        () =>
          httpsRequest(`${ingestUrl}/readyz`, ca).then(
            (r) => r.status,
            () => 0,
          ),
        (status) => status === 200,
      )
      expect(ready, role.output()).toBe(200)

      // mosquitto_pub over MQTTS, verifying the server against the CA.
      const published = await run("mosquitto_pub", [
        ...["-h", "127.0.0.1", "-p", String(mqttsPort), "--cafile", certs.ca.cert],
        ...["-u", DEVICE.id, "-P", DEVICE.credential, "-q", "1", "-i", "e2e-mosquitto", "-t", TOPIC],
        ...["-m", JSON.stringify({ id: "e2e-mqtts-1", ts: Date.now(), temp_f: 70.1, humidity: 40 })],
      ])
      expect(published.code, `${published.output}\n${role.output()}`).toBe(0)

      // fetch over HTTPS, in a process that trusts the test CA.
      const body = JSON.stringify({ id: "e2e-https-1", ts: Date.now(), temp_f: 70.2, humidity: 41 })
      const fetched = await run(
        process.execPath,
        [
          "-e",
          `fetch(${JSON.stringify(`${ingestUrl}/v1/telemetry`)}, { method: "POST", headers: { authorization: "Bearer ${DEVICE.credential}", "content-type": "application/json" }, body: ${JSON.stringify(body)} }).then((r) => console.log(r.status), (e) => { console.log(e.cause?.code ?? e.message); process.exit(1) })`,
        ],
        { NODE_EXTRA_CA_CERTS: certs.ca.cert },
      )
      expect(fetched.output.trim(), fetched.output).toBe("202")

      // mqtt.js over wss:// on the ingest port, and plain MQTT on its own port.
      for (const [url, id, options] of [
        [`wss://127.0.0.1:${ingestPort}/mqtt`, "e2e-wss-1", { ca }],
        [`mqtt://127.0.0.1:${mqttPort}`, "e2e-plain-1", {}],
      ] as const) {
        const client = await mqtt.connectAsync(url, {
          username: DEVICE.id,
          password: DEVICE.credential,
          reconnectPeriod: 0,
          connectTimeout: 5_000,
          ...options,
        })
        try {
          await client.publishAsync(TOPIC, JSON.stringify({ id, ts: Date.now(), temp_f: 70, humidity: 40 }), {
            qos: 1,
          })
        } finally {
          await client.endAsync(true)
        }
      }
      const metrics = await httpsRequest(`${ingestUrl}/metrics`, ca)
      expect(metrics.text).toMatch(/sluice_ingested_messages_total\{transport="mqtt",role="ingress"\} 3\b/)
      expect(metrics.text).toMatch(/sluice_ingested_messages_total\{transport="http",role="ingress"\} 1\b/)

      // The certificate is renewed on disk: new connections get it within the poll interval.
      expect(await presentedSerial(ingestPort, ca)).toBe(certs.server.serialNumber)
      expect(await tlsSerial(mqttsPort, ca)).toBe(certs.server.serialNumber)
      const renewed = certs.issueServer("e2e-renewed")
      copyFileSync(renewed.key, `${key}.new`)
      renameSync(`${key}.new`, key)
      copyFileSync(renewed.cert, `${cert}.new`)
      renameSync(`${cert}.new`, cert)
      const started = Date.now()
      const seen = await eventually(
        async () => [await presentedSerial(ingestPort, ca), await tlsSerial(mqttsPort, ca)],
        (serials) => serials.every((s) => s === renewed.serialNumber),
      )
      expect(seen).toEqual([renewed.serialNumber, renewed.serialNumber])
      expect(Date.now() - started).toBeLessThan(5_000)
      expect(role.output()).toContain(
        `TLS certificate reloaded: CN=localhost (serial ${renewed.serialNumber})`,
      )

      // Still the same process, and it ingests with the new certificate.
      const again = await run("mosquitto_pub", [
        ...["-h", "127.0.0.1", "-p", String(mqttsPort), "--cafile", certs.ca.cert],
        ...["-u", DEVICE.id, "-P", DEVICE.credential, "-q", "1", "-t", TOPIC, "-m", '{"id":"e2e-mqtts-2"}'],
      ])
      expect(again.code, again.output).toBe(0)

      // A WebSocket device still connected at shutdown does not hold it up.
      const held = await mqtt.connectAsync(`wss://127.0.0.1:${ingestPort}/mqtt`, {
        username: DEVICE.id,
        password: DEVICE.credential,
        reconnectPeriod: 0,
        ca,
      })
      const closed = new Promise<void>((resolve) => held.once("close", () => resolve()))
      const stopping = Date.now()
      expect(await stop(role)).toBe(0)
      expect(Date.now() - stopping).toBeLessThan(10_000)
      await closed
      held.end(true)
    } finally {
      await stop(role, { killAfterMs: 5_000 })
    }
  })

  it("serves the API over HTTPS in one process with every role, with one certificate loader", {
    timeout: 120_000,
  }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "sluice-tls-all-"))
    const [mqttPort, mqttsPort, ingestPort, httpPort] = [
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
    ]
    const role = startRole(
      "all",
      [
        "--single-process",
        ...["--mqtt-port", String(mqttPort), "--ingress-http-port", String(ingestPort)],
        ...["--http-port", String(httpPort)],
      ],
      {
        SLUICE_DATA_DIR: dataDir,
        SLUICE_TLS_CERT_FILE: certs.server.cert,
        SLUICE_TLS_KEY_FILE: certs.server.key,
        SLUICE_INGRESS_MQTTS_PORT: String(mqttsPort),
        SLUICE_TLS_RELOAD_INTERVAL_MS: "250",
      },
      { outputChars: 200_000 },
    )
    const ca = certs.caPem()
    const apiUrl = `https://127.0.0.1:${httpPort}`
    try {
      const ready = await eventually(
        async () =>
          Promise.all(
            [apiUrl, `https://127.0.0.1:${ingestPort}`].map((url) =>
              httpsRequest(`${url}/readyz`, ca).then(
                (r) => r.status,
                () => 0,
              ),
            ),
          ),
        (statuses) => statuses.every((status) => status === 200),
      )
      expect(ready, role.output()).toEqual([200, 200])
      const published = await run("mosquitto_pub", [
        ...["-h", "127.0.0.1", "-p", String(mqttsPort), "--cafile", certs.ca.cert],
        ...["-u", DEVICE.id, "-P", DEVICE.credential, "-q", "1", "-t", TOPIC],
        ...["-m", JSON.stringify({ id: "e2e-all-1", ts: Date.now(), temp_f: 71.6, humidity: 41 })],
      ])
      expect(published.code, published.output).toBe(0)
      const latest = await eventually(
        () =>
          httpsRequest(`${apiUrl}/v1/devices/${DEVICE.id}/latest`, ca, {
            headers: { authorization: "Bearer demo-api-key-0123456789" },
          }),
        (response) => response.status === 200,
      )
      expect(latest.status, latest.text).toBe(200)
      expect(JSON.parse(latest.text)).toMatchObject({ msgId: "e2e-all-1", values: { temperature: 22 } })

      // A tenant CA registered through the admin API: in this one process too (the API's listener
      // built the TLS), MQTTS asks for client certificates, and an unregistered device of the CA
      // connects and is registered just in time.
      const tenant = makeTenantCertificates(certs, { device: DEVICE.id, unregistered: "jit-e2e-1" })
      const registered = await httpsRequest(`${apiUrl}/v1/certificate-authorities`, ca, {
        method: "POST",
        headers: { authorization: "Bearer demo-api-key-0123456789", "content-type": "application/json" },
        body: JSON.stringify({
          pem: certs.caPem().toString("utf8"),
          name: "e2e devices",
          auto_register: true,
          default_class: "thermostat",
        }),
      })
      expect(registered.status, registered.text).toBe(201)
      const jit = await eventually(
        () =>
          run("mosquitto_pub", [
            ...["-h", "127.0.0.1", "-p", String(mqttsPort), "--cafile", certs.ca.cert],
            ...["--cert", tenant.unregistered.cert, "--key", tenant.unregistered.key],
            ...["-q", "1", "-t", "devices/jit-e2e-1/telemetry"],
            ...["-m", JSON.stringify({ id: "e2e-jit-1", ts: Date.now(), temp_f: 71.6, humidity: 41 })],
          ]),
        (r) => r.code === 0,
      )
      expect(jit.code, `${jit.output}\n${role.output()}`).toBe(0)
      const jitLatest = await eventually(
        () =>
          httpsRequest(`${apiUrl}/v1/devices/jit-e2e-1/latest`, ca, {
            headers: { authorization: "Bearer demo-api-key-0123456789" },
          }),
        (response) => response.status === 200,
      )
      expect(JSON.parse(jitLatest.text)).toMatchObject({ msgId: "e2e-jit-1" })
      // The serving listener is TLS only, and one loader serves every listener of the process.
      expect(
        await fetch(`http://127.0.0.1:${httpPort}/healthz`).then(
          (r) => r.status,
          () => "refused",
        ),
      ).not.toBe(200)
      expect(role.output().match(/TLS certificate CN=localhost/g)?.length, role.output()).toBe(1)
      expect(await stop(role)).toBe(0)
    } finally {
      await stop(role, { killAfterMs: 5_000 })
    }
  })
})
