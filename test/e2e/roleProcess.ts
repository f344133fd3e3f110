/**
 * Roles of the platform (`src/main.ts --role …`) as processes of their own, started by hand the
 * way separate machines would run them (no supervisor), for the multi-process end-to-end tests;
 * and SQL over the ClickHouse HTTP peer they store into. `platform.ts` runs the supervised whole.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { eventually, isReady } from "./platform.js"

const root = fileURLToPath(new URL("../..", import.meta.url))

export interface RoleProcess {
  readonly name: string
  readonly child: ChildProcess
  /** The tail of its stdout and stderr together. */
  readonly output: () => string
}

/**
 * Spawns `node --import tsx src/main.ts --host 127.0.0.1 ...args` with `env` over this process's
 * environment and `SLUICE_PROCESSOR_FLUSH_INTERVAL_MS=20` (which `env` may override), keeping the
 * last `outputChars` characters of its output (20 000 unless told). It does not wait for it to be
 * ready.
 */
export const startRole = (
  name: string,
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  options: { readonly outputChars?: number } = {},
): RoleProcess => {
  const outputChars = options.outputChars ?? 20_000
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts", "--host", "127.0.0.1", ...args], {
    cwd: root,
    env: { ...process.env, SLUICE_PROCESSOR_FLUSH_INTERVAL_MS: "20", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  })
  let output = ""
  const keep = (c: Buffer) => {
    output = (output + c.toString()).slice(-outputChars)
  }
  child.stdout!.on("data", keep)
  child.stderr!.on("data", keep)
  return { name, child, output: () => output }
}

/** True once the process has exited, by itself or by a signal. */
export const exited = (role: RoleProcess) => role.child.exitCode !== null || role.child.signalCode !== null

/**
 * SIGTERM, then SIGKILL if it has not exited after `killAfterMs` (30 s unless told); resolves its
 * exit code (null when a signal ended it). One that has already exited: its exit code at once.
 */
export const stop = (role: RoleProcess, options: { readonly killAfterMs?: number } = {}) =>
  new Promise<number | null>((resolve) => {
    if (exited(role)) return resolve(role.child.exitCode)
    const timer = setTimeout(() => role.child.kill("SIGKILL"), options.killAfterMs ?? 30_000)
    role.child.once("exit", (code) => {
      clearTimeout(timer)
      resolve(code)
    })
    role.child.kill("SIGTERM")
  })

/** Polls until every listener at `urls` answers /readyz with 200 (bounded: 30 s); true if they all did. */
export const ready = (...urls: ReadonlyArray<string>) =>
  eventually(
    async () => (await Promise.all(urls.map(isReady))).every(Boolean),
    (all) => all,
  )

/** SQL over the ClickHouse HTTP peer's interface at `url`, one JSON object per row (JSONEachRow). */
export const query = async <A>(url: string, sql: string): Promise<Array<A>> => {
  const response = await fetch(`${url}/?default_format=JSONEachRow`, { method: "POST", body: sql })
  const text = await response.text()
  if (!response.ok) throw new Error(`${response.status}: ${text}`)
  return text
    .split("\n")
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as A)
}
