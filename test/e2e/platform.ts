/**
 * Runs the real platform (`src/main.ts`) as a separate process on free loopback ports with its
 * own data directory, for end-to-end tests that talk to it only through real clients. By default
 * it is what `npm start` runs: the supervisor with its child processes; `args` can ask for
 * `--single-process` or roles.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("../..", import.meta.url))

export interface Ports {
  /** The supervisor's machine-wide /metrics and /healthz. */
  readonly supervisor: number
  readonly mqtt: number
  /** The ingress role's HTTP ingest listener. */
  readonly ingest: number
  /** The serving API. */
  readonly http: number
}

/** A supervised child as /healthz reports it. */
export interface ChildState {
  readonly name: string
  readonly pid: number | null
  readonly state: string
  readonly restarts: number
}

export interface Platform {
  readonly ports: Ports
  readonly mqttUrl: string
  /** The serving API. */
  readonly httpUrl: string
  /** The HTTP ingest listener (`POST /v1/telemetry`). */
  readonly ingestUrl: string
  /** The supervisor's listener (machine-wide /metrics). */
  readonly supervisorUrl: string
  /** The top process's pid (the supervisor by default). */
  readonly pid: number
  readonly dataDir: string
  readonly output: () => string
  /** SIGKILL to every process of the platform at once (its process group), like a power cut. */
  readonly kill: () => Promise<void>
  /** SIGTERM and wait for a graceful exit; returns the exit code. */
  readonly stop: () => Promise<number | null>
}

/**
 * A loopback port free now, for a process about to be started on it. Chosen below Linux's
 * ephemeral range (32768–60999), not with `listen(0)`: a port from that range is exactly what the
 * next outbound connection of any process on the machine may take in the moment between this
 * check and the platform binding it (seen in CI as EADDRINUSE). Below it, only another test's
 * random pick can collide.
 */
export const freePort = async (): Promise<number> => {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    const free = await new Promise<boolean>((resolve) => {
      const server = net.createServer()
      server.once("error", () => resolve(false))
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)))
    })
    if (free) return port
  }
}

const exited = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode)
    child.once("exit", (code) => resolve(code))
  })

/** Starts the platform and resolves once /readyz answers 200 (bounded: 60 s). */
export const startPlatform = async (
  options: {
    dataDir?: string
    ports?: Ports
    env?: Record<string, string>
    /** Extra flags, e.g. `["--single-process"]` or `["--ingress-workers", "2"]`. */
    args?: ReadonlyArray<string>
  } = {},
): Promise<Platform> => {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "sluice-e2e-"))
  const ports = options.ports ?? {
    supervisor: await freePort(),
    mqtt: await freePort(),
    ingest: await freePort(),
    http: await freePort(),
  }
  const child = spawn(
    process.execPath,
    [
      // As `npm start` runs it.
      "--max-semi-space-size=32",
      "--import",
      "tsx",
      "src/main.ts",
      "--host",
      "127.0.0.1",
      "--mqtt-port",
      String(ports.mqtt),
      "--ingress-http-port",
      String(ports.ingest),
      "--supervisor-port",
      String(ports.supervisor),
      "--http-port",
      String(ports.http),
      ...(options.args ?? []),
    ],
    {
      cwd: root,
      env: {
        ...process.env,
        SLUICE_DATA_DIR: dataDir,
        SLUICE_PROCESSOR_FLUSH_INTERVAL_MS: "20",
        ...options.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group, so `kill` can take the supervisor and its children down together.
      detached: true,
    },
  )
  let output = ""
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-20_000)
  }
  child.stdout!.on("data", keep)
  child.stderr!.on("data", keep)
  const httpUrl = `http://127.0.0.1:${ports.http}`
  const ingestUrl = `http://127.0.0.1:${ports.ingest}`
  const deadline = Date.now() + 60_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`platform exited with ${child.exitCode}:\n${output}`)
    if ((await isReady(httpUrl)) && (await isReady(ingestUrl))) break
    if (Date.now() > deadline) {
      child.kill("SIGKILL")
      throw new Error(`platform not ready after 60 s:\n${output}`)
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  return {
    ports,
    mqttUrl: `mqtt://127.0.0.1:${ports.mqtt}`,
    httpUrl,
    ingestUrl,
    supervisorUrl: `http://127.0.0.1:${ports.supervisor}`,
    pid: child.pid!,
    dataDir,
    output: () => output,
    kill: async () => {
      process.kill(-child.pid!, "SIGKILL")
      await exited(child)
      // The children die with the group; give the kernel a moment to release their ports and locks.
      await new Promise((r) => setTimeout(r, 200))
    },
    stop: async () => {
      child.kill("SIGTERM")
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000)
      const code = await exited(child)
      clearTimeout(timer)
      return code
    },
  }
}

/** True when the listener's /readyz answers 200. */
export const isReady = (url: string) =>
  fetch(`${url}/readyz`).then(
    (r) => r.status === 200,
    () => false,
  )

/** The supervisor's children, as /healthz of the serving process reports them. */
export const children = async (platform: Platform): Promise<ReadonlyArray<ChildState>> => {
  const response = await fetch(`${platform.httpUrl}/healthz`)
  const body = (await response.json()) as { supervisor?: { children: ReadonlyArray<ChildState> } }
  return body.supervisor?.children ?? []
}

/** The pid of a child, read from /healthz of the listener at `url` (`ingress` is on `ingestUrl`). */
export const childPid = async (url: string, name: string): Promise<number> => {
  const response = await fetch(`${url}/healthz`)
  const body = (await response.json()) as { supervisor?: { children: ReadonlyArray<ChildState> } }
  const child = body.supervisor?.children.find((c) => c.name === name)
  if (child?.pid == null) throw new Error(`no running child ${name}: ${JSON.stringify(body)}`)
  return child.pid
}

export const DEMO_KEY = "demo-api-key-0123456789"
export const OTHER_KEY = "other-api-key-0123456789"

/** GET a JSON API path with a tenant key. */
export const api = async (platform: Platform, path: string, key = DEMO_KEY) => {
  const response = await fetch(`${platform.httpUrl}${path}`, { headers: { authorization: `Bearer ${key}` } })
  return { status: response.status, body: (await response.json()) as unknown }
}

/** Polls until `check` holds or 30 s pass; returns the last value. */
export const eventually = async <A>(probe: () => Promise<A>, check: (a: A) => boolean): Promise<A> => {
  const deadline = Date.now() + 30_000
  let last = await probe()
  while (!check(last) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100))
    last = await probe()
  }
  return last
}
