/**
 * Starts chDB behind ClickHouse's HTTP interface in a separate process (a test peer, not
 * clickhouse-server; see `clickhouse-http-peer.ts` for what it serves) on a free loopback port.
 * Point a `Server` ClickHouse target (or `SLUICE_CLICKHOUSE_URL`) at `url`; `stop` sends SIGTERM,
 * waits for the exit and removes the data directory it made.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, expect } from "vitest"

const root = fileURLToPath(new URL("../..", import.meta.url))

export interface ClickHouseHttpPeer {
  /** e.g. `http://127.0.0.1:41234` */
  readonly url: string
  /** SIGTERM, then the exit code (SIGKILL after 10 s). */
  readonly stop: () => Promise<number | null>
  readonly output: () => string
}

export const startClickHouseHttpPeer = async (
  options: { readonly dataDir?: string } = {},
): Promise<ClickHouseHttpPeer> => {
  const owned = options.dataDir === undefined
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "sluice-ch-peer-"))
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "test/support/clickhouse-http-peer.ts", "--data-dir", dataDir, "--port", "0"],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
  )
  let output = ""
  let stdout = ""
  child.stderr!.on("data", (c: Buffer) => (output = (output + c.toString()).slice(-20_000)))
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`ClickHouse HTTP peer did not start in 30 s:\n${output}`)),
      30_000,
    )
    child.stdout!.on("data", (c: Buffer) => {
      stdout += c.toString()
      output = (output + c.toString()).slice(-20_000)
      const line = /^\{"port":(\d+)\}$/m.exec(stdout)
      if (line !== null) {
        clearTimeout(timer)
        resolve(Number(line[1]))
      }
    })
    child.once("exit", (code) => {
      clearTimeout(timer)
      reject(new Error(`ClickHouse HTTP peer exited with ${code}:\n${output}`))
    })
  })
  const exited = new Promise<number | null>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode)
    else child.once("exit", (code) => resolve(code))
  })
  return {
    url: `http://127.0.0.1:${port}`,
    output: () => output,
    stop: async () => {
      child.kill("SIGTERM")
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000)
      const code = await exited
      clearTimeout(timer)
      if (owned) rmSync(dataDir, { recursive: true, force: true })
      return code
    },
  }
}

/**
 * One peer for a test file: started before its tests, stopped after them (and its exit code
 * checked). Returns the running peer's getter, for use inside tests.
 */
export const peerForFile = (): (() => ClickHouseHttpPeer) => {
  let peer: ClickHouseHttpPeer | undefined
  beforeAll(async () => {
    peer = await startClickHouseHttpPeer()
  }, 60_000)
  afterAll(async () => {
    expect(await peer?.stop()).toBe(0)
  })
  return () => {
    if (peer === undefined) throw new Error("the ClickHouse HTTP peer has not started")
    return peer
  }
}
