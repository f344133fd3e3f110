/**
 * Runs the real platform (`src/main.ts`) as a separate process on free loopback ports with its
 * own data directory, for end-to-end tests that talk to it only through real clients.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("../..", import.meta.url))

export interface Platform {
  readonly mqttUrl: string
  readonly httpUrl: string
  readonly dataDir: string
  readonly output: () => string
  /** SIGKILL: no shutdown code runs. */
  readonly kill: () => Promise<void>
  /** SIGTERM and wait for a graceful exit; returns the exit code. */
  readonly stop: () => Promise<number | null>
}

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address() as net.AddressInfo
      server.close(() => resolve(address.port))
    })
  })

const exited = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode)
    child.once("exit", (code) => resolve(code))
  })

/** Starts the platform and resolves once /readyz answers 200 (bounded: 60 s). */
export const startPlatform = async (
  options: { dataDir?: string; ports?: { mqtt: number; http: number }; env?: Record<string, string> } = {},
): Promise<Platform> => {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "sluice-e2e-"))
  const ports = options.ports ?? { mqtt: await freePort(), http: await freePort() }
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
      "--http-port",
      String(ports.http),
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
    },
  )
  let output = ""
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-20_000)
  }
  child.stdout!.on("data", keep)
  child.stderr!.on("data", keep)
  const httpUrl = `http://127.0.0.1:${ports.http}`
  const deadline = Date.now() + 60_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`platform exited with ${child.exitCode}:\n${output}`)
    const ready = await fetch(`${httpUrl}/readyz`).then(
      (r) => r.status === 200,
      () => false,
    )
    if (ready) break
    if (Date.now() > deadline) {
      child.kill("SIGKILL")
      throw new Error(`platform not ready after 60 s:\n${output}`)
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  return {
    mqttUrl: `mqtt://127.0.0.1:${ports.mqtt}`,
    httpUrl,
    dataDir,
    output: () => output,
    kill: async () => {
      child.kill("SIGKILL")
      await exited(child)
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
