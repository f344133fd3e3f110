/**
 * End-to-end benchmark (not a test). In one run, on this machine:
 *  1. ceiling: the load generator against a bare aedes broker that does nothing;
 *  2. throughput: the same load against the platform (`src/main.ts`, embedded: SQLite log with
 *     fsync, chDB; by default as `npm start` runs it: a supervisor with the ingress process and
 *     the processor+serving process; `--single-process` for everything in one), measured from the
 *     first publish until every acknowledged message is stored in ClickHouse
 *     (sluice_stored_readings_total), with the CPU time all the platform's processes spent per
 *     stored message (from /proc);
 *  3. latency: publish → WebSocket delivery at a fixed rate (default 5,000 msg/s).
 * The load generator is `src/simulator/main.ts` (MQTT QoS 1, 3 numeric fields per message) in its
 * own process; the platform and the broker run in theirs.
 *
 *   npm run bench:e2e [-- --seconds 10 --devices 200 --latency-rate 5000 --single-process --ingress-workers 2]
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import net from "node:net"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import WebSocket from "ws"

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    devices: { type: "string", default: "200" },
    inflight: { type: "string", default: "4000" },
    "latency-rate": { type: "string", default: "5000" },
    "single-process": { type: "boolean", default: false },
    "ingress-workers": { type: "string", default: "1" },
  },
})
const seconds = values.seconds!
const devices = values.devices!
const KEY = "demo-api-key-0123456789"

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

const node = (args: Array<string>, env: Record<string, string> = {}, flags: Array<string> = []) =>
  spawn(process.execPath, [...flags, "--import", "tsx", ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  })

const output = (child: ChildProcess) =>
  new Promise<string>((resolve) => {
    let out = ""
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString()
    })
    child.on("exit", () => resolve(out))
  })

const waitFor = async (probe: () => Promise<boolean>, what: string, ms = 60_000) => {
  const deadline = Date.now() + ms
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

const stop = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGTERM")
    setTimeout(() => child.kill("SIGKILL"), 30_000).unref()
  })

interface LoadResult {
  sent: number
  acked: number
  skipped: number
  seconds: number
  ackedPerSecond: number
  pubackMs: { p50: number; p99: number }
}

const load = async (mqttPort: number, rate: string, extra: Array<string> = []) => {
  const sim = node([
    "src/simulator/main.ts",
    "--url",
    `mqtt://127.0.0.1:${mqttPort}`,
    "--devices",
    devices,
    "--rate",
    rate,
    "--duration",
    seconds,
    "--inflight",
    values.inflight!,
    "--json",
    ...extra,
  ])
  const out = await output(sim)
  return JSON.parse(out.trim().split("\n").at(-1)!) as LoadResult
}

/** Clock ticks per second of /proc/<pid>/stat's CPU times (USER_HZ, 100 on Linux). */
const USER_HZ = 100

/** CPU seconds (user + system) of every live process below `root` and of `root` itself, by pid. */
const processCpuSeconds = (root: number) => {
  const stats = new Map<number, { ppid: number; ticks: number }>()
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8")
      // Fields after the command name (which may hold spaces) start at state (field 3).
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      stats.set(Number(entry), { ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) })
    } catch {
      // The process ended while we looked.
    }
  }
  const tree = new Map<number, number>()
  for (const [pid, stat] of stats) {
    let p: number | undefined = pid
    while (p !== undefined && p !== root && p > 1) p = stats.get(p)?.ppid
    if (p === root) tree.set(pid, stat.ticks / USER_HZ)
  }
  return tree
}

/** CPU seconds spent by each process of the tree between `before` and `after`. */
const cpuDelta = (before: Map<number, number>, after: Map<number, number>) =>
  new Map([...after].map(([pid, s]) => [pid, s - (before.get(pid) ?? 0)]))

/** What /healthz of the serving process says each child is, by pid (empty in one process). */
const childNames = async (http: string) => {
  const health = (await (await fetch(`${http}/healthz`)).json()) as {
    supervisor?: { children: Array<{ name: string; pid: number | null }> }
  }
  return new Map((health.supervisor?.children ?? []).map((c) => [c.pid, c.name]))
}

/** The platform's data directories, removed when the run ends however it ends. */
const dataDirs: Array<string> = []
const removeDataDirs = () => {
  for (const dir of dataDirs) rmSync(dir, { recursive: true, force: true })
}

const startPlatform = async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "sluice-bench-e2e-"))
  dataDirs.push(dataDir)
  const mqttPort = await freePort()
  const ingestPort = await freePort()
  const httpPort = await freePort()
  const supervisorPort = await freePort()
  const child = node(
    [
      "src/main.ts",
      "--host",
      "127.0.0.1",
      "--mqtt-port",
      String(mqttPort),
      "--ingress-http-port",
      String(ingestPort),
      "--http-port",
      String(httpPort),
      ...(values["single-process"]
        ? ["--single-process"]
        : ["--ingress-workers", values["ingress-workers"]!, "--supervisor-port", String(supervisorPort)]),
    ],
    { SLUICE_DATA_DIR: dataDir },
    // As `npm start` runs it: a larger young generation means fewer scavenges (about 25 % less GC time).
    ["--max-semi-space-size=32"],
  )
  child.stdout!.resume()
  const http = `http://127.0.0.1:${httpPort}`
  const ready = async (url: string) => (await fetch(`${url}/readyz`)).status === 200
  await waitFor(
    async () => (await ready(http)) && (await ready(`http://127.0.0.1:${ingestPort}`)),
    "the platform",
  )
  return { child, mqttPort, http }
}

const metric = async (http: string, name: string) => {
  const text = await (await fetch(`${http}/metrics`)).text()
  const line = text.split("\n").find((l) => l.startsWith(name))
  return line === undefined ? 0 : Number(line.split(" ").at(-1))
}

const main = async () => {
  console.log(
    `machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}; ${devices} devices, ${seconds} s per phase, QoS 1, 3 numeric fields; platform ${values["single-process"] ? "in one process (--single-process)" : `as processes (the default), ${values["ingress-workers"]} ingress worker(s)`}`,
  )

  // 1. The ceiling.
  const barePort = await freePort()
  const bare = node(["bench/e2e/bare-broker.ts", String(barePort)])
  await waitFor(
    () =>
      new Promise((resolve) => {
        const socket = net.connect(barePort, "127.0.0.1", () => {
          socket.end()
          resolve(true)
        })
        socket.on("error", () => resolve(false))
      }),
    "the bare broker",
  )
  const ceiling = await load(barePort, "1000000")
  await stop(bare)
  console.log(
    `ceiling (bare aedes):           ${ceiling.ackedPerSecond} acks/s, PUBACK p50 ${ceiling.pubackMs.p50} ms p99 ${ceiling.pubackMs.p99} ms`,
  )

  // 2. Throughput end to end: publish → stored in ClickHouse.
  const platform = await startPlatform()
  const before = await metric(platform.http, "sluice_stored_readings_total")
  const cpuBefore = processCpuSeconds(platform.child.pid!)
  const t0 = performance.now()
  const sustained = await load(platform.mqttPort, "1000000")
  await waitFor(
    async () => (await metric(platform.http, "sluice_stored_readings_total")) - before >= sustained.acked,
    "every acknowledged message to be stored",
    120_000,
  )
  const storedSeconds = (performance.now() - t0) / 1000
  const cpu = cpuDelta(cpuBefore, processCpuSeconds(platform.child.pid!))
  const cpuSeconds = [...cpu.values()].reduce((a, b) => a + b, 0)
  const names = await childNames(platform.http)
  const e2eRate = Math.round(sustained.acked / storedSeconds)
  console.log(
    `platform, ingest (acks):        ${sustained.ackedPerSecond} acks/s, PUBACK p50 ${sustained.pubackMs.p50} ms p99 ${sustained.pubackMs.p99} ms`,
  )
  console.log(
    `platform, end to end:           ${e2eRate} msg/s (${sustained.acked} messages queryable ${storedSeconds.toFixed(1)} s after the first publish)`,
  )
  console.log(`ratio end to end / ceiling:     ${(e2eRate / ceiling.ackedPerSecond).toFixed(2)}`)
  console.log(
    `platform CPU per stored message: ${((cpuSeconds * 1e6) / sustained.acked).toFixed(0)} µs (${cpuSeconds.toFixed(1)} CPU s over all its processes for ${sustained.acked} messages)`,
  )
  for (const [pid, seconds] of [...cpu].sort((a, b) => b[1] - a[1])) {
    const name =
      pid === platform.child.pid
        ? names.size > 0
          ? "supervisor"
          : "the process"
        : (names.get(pid) ?? `pid ${pid}`)
    console.log(
      `  ${name.padEnd(30)}${((seconds * 1e6) / sustained.acked).toFixed(0).padStart(4)} µs/msg, ${((seconds / storedSeconds) * 100).toFixed(0)} % of a core`,
    )
  }

  // 3. Latency publish → WebSocket at a fixed rate.
  await fetch(`${platform.http}/metrics`) // resets the event-loop histogram for this phase
  const latencies: Array<number> = []
  // receivedAt is stamped by ingress: it splits the latency into the device → ingress leg (the
  // load generator, the MQTT hop, aedes) and the ingress → WebSocket leg (append, pull, decode, fan-out).
  const toIngress: Array<number> = []
  const fromIngress: Array<number> = []
  const socket = new WebSocket(`${platform.http.replace("http", "ws")}/v1/live`, {
    headers: { authorization: `Bearer ${KEY}` },
  })
  socket.on("message", (data) => {
    const reading = JSON.parse(data.toString()) as { ts: number; receivedAt: number }
    const now = Date.now()
    latencies.push(now - reading.ts)
    toIngress.push(reading.receivedAt - reading.ts)
    fromIngress.push(now - reading.receivedAt)
  })
  await new Promise((resolve, reject) => {
    socket.once("open", resolve)
    socket.once("error", reject)
  })
  const fixed = await load(platform.mqttPort, values["latency-rate"]!)
  await new Promise((r) => setTimeout(r, 1000))
  socket.close()
  for (const list of [latencies, toIngress, fromIngress]) list.sort((a, b) => a - b)
  const pctOf = (list: Array<number>, p: number) =>
    list[Math.min(list.length - 1, Math.floor(list.length * p))]
  const pct = (p: number) => pctOf(latencies, p)
  console.log(
    `latency at ${values["latency-rate"]} msg/s:          publish → WebSocket p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms, max ${latencies.at(-1)} ms (${latencies.length} of ${fixed.acked} delivered; ${fixed.skipped} not sent); PUBACK p50 ${fixed.pubackMs.p50} ms, p99 ${fixed.pubackMs.p99} ms`,
  )
  console.log(
    `  of which device → ingress:    p50 ${pctOf(toIngress, 0.5)} ms, p99 ${pctOf(toIngress, 0.99)} ms; ingress → WebSocket p50 ${pctOf(fromIngress, 0.5)} ms, p99 ${pctOf(fromIngress, 0.99)} ms`,
  )
  // prom-client resets the event-loop histogram on every scrape: read all three from one.
  const scrape = await (await fetch(`${platform.http}/metrics`)).text()
  const lag = (name: string) => {
    // The series carries the process's role label: `nodejs_eventloop_lag_p50_seconds{role="…"} 0.01`.
    const line = scrape.split("\n").find((l) => l.startsWith(`nodejs_eventloop_lag_${name}_seconds`))
    return line === undefined ? "?" : (Number(line.split(" ").at(-1)) * 1000).toFixed(1)
  }
  console.log(
    `event-loop delay (latency phase, ${values["single-process"] ? "the process" : "processor+serving"}): p50 ${lag("p50")} ms, p99 ${lag("p99")} ms, max ${lag("max")} ms`,
  )
  await stop(platform.child)
}

main().then(
  () => {
    removeDataDirs()
    process.exit(0)
  },
  (error) => {
    console.error(error)
    removeDataDirs()
    process.exit(1)
  },
)
