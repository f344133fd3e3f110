/**
 * `npm run simulate -- --devices N --rate R --duration S`: a device fleet over real MQTT QoS 1.
 * Each simulated device connects with its own credential (from the configuration: listed devices,
 * then fleets) and publishes realistic readings for its class; the whole fleet publishes R
 * messages per second for S seconds. Prints what was sent and acknowledged.
 */
import { parseArgs } from "node:util"
import { Effect } from "effect"
import mqtt from "mqtt"
import * as ConfigFile from "../tenancy/ConfigFile.js"
import { allDevices } from "../tenancy/Fleet.js"
import { generator } from "./Readings.js"

const usage = `usage: npm run simulate -- [--devices N] [--rate MSGS_PER_S] [--duration S] [--malformed FRACTION]
       [--url mqtt://127.0.0.1:1883] [--config config/demo.yaml] [--prefix sim-thermo-] [--qos 0|1] [--inflight N] [--json]`

const { values } = parseArgs({
  options: {
    devices: { type: "string", default: "10" },
    rate: { type: "string", default: "100" },
    duration: { type: "string", default: "10" },
    malformed: { type: "string", default: "0" },
    url: { type: "string", default: "mqtt://127.0.0.1:1883" },
    config: { type: "string", default: "config/demo.yaml" },
    prefix: { type: "string", default: "sim-" },
    qos: { type: "string", default: "1" },
    inflight: { type: "string", default: "2000" },
    json: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
})
if (values.help) {
  console.log(usage)
  process.exit(0)
}
const count = Number(values.devices)
const rate = Number(values.rate)
const seconds = Number(values.duration)
const malformedShare = Number(values.malformed)
const qos = Number(values.qos) as 0 | 1
for (const [name, n] of Object.entries({ devices: count, rate, duration: seconds })) {
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`--${name} must be a positive number\n${usage}`)
    process.exit(2)
  }
}

const config = await Effect.runPromise(ConfigFile.load(values.config!)).catch((error: Error) => {
  console.error(error.message)
  process.exit(2)
})
const candidates = allDevices(config).filter((d) => d.id.startsWith(values.prefix!))
if (candidates.length < count) {
  console.error(
    `${values.config} has ${candidates.length} devices whose id starts with "${values.prefix}"; --devices ${count} needs more (add a fleet, see docs/configuration.md)`,
  )
  process.exit(2)
}
const classes = new Map(config.device_classes.map((c) => [c.name, c]))
const fleet = candidates.slice(0, count)

/** Connects every device, at most 200 handshakes at a time. */
const clients: Array<{ client: mqtt.MqttClient; topic: string; next: (malformed: boolean) => string }> = []
for (let i = 0; i < fleet.length; i += 200) {
  const connected = await Promise.all(
    fleet.slice(i, i + 200).map(async (d) => ({
      client: await mqtt.connectAsync(values.url!, {
        username: d.id,
        password: d.credential,
        clientId: `sim-${d.id}`,
        reconnectPeriod: 0,
        keepalive: 60,
      }),
      topic: `devices/${d.id}/telemetry`,
      next: generator(classes.get(d.class)!, d.id),
    })),
  )
  clients.push(...connected)
}

let sent = 0
let acked = 0
let failed = 0
let malformedSent = 0
let skipped = 0
/** Unacknowledged messages allowed across the fleet before the simulator waits for acks. */
const maxInflight = Number(values.inflight)
const started = performance.now()
const end = started + seconds * 1000
let turn = 0
const latencies: Array<number> = []
await new Promise<void>((resolve) => {
  const tick = () => {
    const now = performance.now()
    const due = Math.min(
      Math.floor(((Math.min(now, end) - started) / 1000) * rate),
      Math.floor(seconds * rate),
    )
    while (sent + skipped < due) {
      if (sent - acked - failed >= maxInflight) {
        // The platform is not keeping up: count what could not be sent at the asked rate.
        skipped += due - sent - skipped
        break
      }
      const device = clients[turn++ % clients.length]!
      const malformed = malformedShare > 0 && Math.random() < malformedShare
      if (malformed) malformedSent++
      const t0 = performance.now()
      device.client.publish(device.topic, device.next(malformed), { qos }, (error) => {
        if (error) failed++
        else {
          acked++
          if (latencies.length < 200_000) latencies.push(performance.now() - t0)
        }
      })
      sent++
    }
    if (now >= end) resolve()
    else setTimeout(tick, 5)
  }
  tick()
})
const drainDeadline = performance.now() + 15_000
while (qos === 1 && acked + failed < sent && performance.now() < drainDeadline)
  await new Promise((r) => setTimeout(r, 20))
const elapsed = (performance.now() - started) / 1000
await Promise.all(clients.map((c) => c.client.endAsync()))

latencies.sort((a, b) => a - b)
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0
const result = {
  devices: clients.length,
  sent,
  acked: qos === 1 ? acked : null,
  failed,
  malformed: malformedSent,
  skipped,
  seconds: Math.round(elapsed * 100) / 100,
  ackedPerSecond: Math.round(acked / elapsed),
  pubackMs: { p50: Math.round(pct(0.5) * 10) / 10, p99: Math.round(pct(0.99) * 10) / 10 },
}
if (values.json) console.log(JSON.stringify(result))
else
  console.log(
    `${result.devices} devices, ${seconds} s at ${rate} msg/s: sent ${sent}, acknowledged ${acked}, failed ${failed}, ` +
      `malformed ${malformedSent}, not sent (platform behind) ${skipped}; ${result.ackedPerSecond} acks/s; ` +
      `PUBACK p50 ${result.pubackMs.p50} ms, p99 ${result.pubackMs.p99} ms`,
  )
process.exit(failed > 0 ? 1 : 0)
