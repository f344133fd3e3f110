/**
 * MQTT ingress benchmark (not a test): QoS 1 publishes acknowledged per second through the embedded
 * broker into the embedded log. The broker runs in this process; the devices (mqtt.js clients) run
 * in a child process, so client CPU is not counted against the broker.
 *
 *   npm run bench:ingress [-- --seconds 5 --devices 100 --window 10 --batch-records 500 --fsync true]
 *
 * `--batch-records 1` appends every message on its own (no batching across messages), the
 * baseline the default is compared with.
 */
import { fork } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { Effect, Layer } from "effect"
import mqtt from "mqtt"
import * as IngressConfig from "../../src/ingress/IngressConfig.js"
import * as MqttBroker from "../../src/ingress/MqttBroker.js"
import * as Metrics from "../../src/observability/Metrics.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { StreamLog } from "../../src/stream/StreamLog.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    devices: { type: "string", default: "100" },
    window: { type: "string", default: "10" },
    "batch-records": { type: "string", default: "500" },
    fsync: { type: "string", default: "true" },
    // Internal: the load generator's role and the broker's port.
    client: { type: "string" },
  },
})
const seconds = Number(values.seconds)
const devices = Number(values.devices)
const window = Number(values.window)
const PAYLOAD = Buffer.from(JSON.stringify({ temperature: 21.5, humidity: 40, pad: "x".repeat(150) }))

const credential = (i: number) => `bench-device-${i}-secret`

/** The devices: each keeps `window` QoS 1 publishes in flight for `seconds`; prints the acked count. */
const generateLoad = async (port: number) => {
  const clients = await Promise.all(
    Array.from({ length: devices }, (_, i) =>
      mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
        username: `bench-device-${i}`,
        password: credential(i),
        reconnectPeriod: 0,
      }),
    ),
  )
  const topics = clients.map((_, i) => `devices/bench-device-${i}/telemetry`)
  let acked = 0
  let failed = 0
  const start = performance.now()
  const deadline = start + seconds * 1000
  await Promise.all(
    clients.map(
      (client, i) =>
        new Promise<void>((resolve) => {
          let inFlight = 0
          const send = () => {
            while (inFlight < window && performance.now() < deadline) {
              inFlight++
              client.publish(topics[i]!, PAYLOAD, { qos: 1 }, (error) => {
                inFlight--
                if (error) failed++
                else acked++
                if (performance.now() < deadline) send()
                else if (inFlight === 0) resolve()
              })
            }
          }
          send()
        }),
    ),
  )
  const ms = performance.now() - start
  await Promise.all(clients.map((c) => c.endAsync(true)))
  process.send!({ acked, failed, ms })
}

/** Stream appends made, to report how many records each carried. */
let appends = 0
const countingAppends = Layer.effect(
  StreamLog,
  Effect.map(StreamLog, (log) =>
    StreamLog.of({
      ...log,
      append: (records) => {
        appends++
        return log.append(records)
      },
    }),
  ),
)

const broker = Effect.gen(function* () {
  const { port } = yield* MqttBroker.make({
    ...IngressConfig.defaults,
    mqttHost: "127.0.0.1",
    mqttPort: 0,
    maxBatchRecords: Number(values["batch-records"]),
  })
  const child = fork(fileURLToPath(import.meta.url), [...process.argv.slice(2), "--client", String(port)], {
    execArgv: process.execArgv,
  })
  const cpuBefore = process.cpuUsage()
  const appendsBefore = appends
  const result = yield* Effect.async<{ acked: number; failed: number; ms: number }>((resume) => {
    child.once("message", (m) => resume(Effect.succeed(m as { acked: number; failed: number; ms: number })))
  })
  const cpu = process.cpuUsage(cpuBefore)
  const rate = (result.acked / result.ms) * 1000
  console.log(
    `devices ${devices}, window ${window}, batch-records ${values["batch-records"]}, fsync ${values.fsync}: ` +
      `${Math.round(rate).toLocaleString("en-US")} acked publishes/s ` +
      `(${result.acked.toLocaleString("en-US")} in ${(result.ms / 1000).toFixed(1)} s, ${result.failed} failed); ` +
      `broker CPU ${((cpu.user + cpu.system) / result.acked).toFixed(1)} µs/publish, ` +
      `${(result.acked / (appends - appendsBefore)).toFixed(1)} records/append`,
  )
})

if (values.client !== undefined) {
  await generateLoad(Number(values.client))
} else {
  const dir = mkdtempSync(join(tmpdir(), "sluice-bench-ingress-"))
  console.log(`${cpus()[0]?.model ?? "unknown CPU"} x${cpus().length}, Node ${process.version}`)
  const platform = {
    tenants: [{ id: "bench", api_keys: [] }],
    device_classes: [{ name: "climate", fields: {} }],
    devices: Array.from({ length: devices }, (_, i) => ({
      id: `bench-device-${i}`,
      tenant: "bench",
      class: "climate",
      credential: credential(i),
    })),
  }
  await Effect.runPromise(
    Effect.scoped(broker).pipe(
      Effect.provide(
        Layer.mergeAll(
          countingAppends.pipe(
            Layer.provide(
              SqliteStreamLog.layerWith({ ...SqliteStreamLog.defaults(dir), fsync: values.fsync === "true" }),
            ),
          ),
          Tenancy.layer(platform),
          Metrics.layer,
        ),
      ),
    ),
  )
  rmSync(dir, { recursive: true, force: true })
}
