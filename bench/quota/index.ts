/**
 * `npm run bench:quota`: what one `reserve` costs on the hot path, in-memory (`Quota.make`) vs
 * shared by the machine's ingress workers (`SharedQuota.make`), per path a message can take:
 * no quota, granted, refused (HTTP, over quota), waiting (MQTT, over quota), and the SQLite lease
 * itself (a lease per call, alone and with three processes leasing from one file at once).
 *
 * npm run bench:quota [-- --calls 2000000]
 */
import { spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { Effect, Exit, Scope } from "effect"
import type { Quotas } from "../../src/tenancy/Quota.js"
import * as Quota from "../../src/tenancy/Quota.js"
import * as SharedQuota from "../../src/tenancy/SharedQuota.js"

const { values } = parseArgs({
  options: {
    calls: { type: "string", default: "2000000" },
    // Internal: one of the processes of the contended-lease case.
    contend: { type: "string" },
  },
})
const calls = Number(values.calls)
const leaseCalls = 20_000

/** ns per call: the median of 5 timed runs after a warm-up. */
const measure = (reserve: () => boolean, n: number) => {
  for (let i = 0; i < Math.min(n, 100_000); i++) reserve()
  const runs: Array<number> = []
  let granted = 0
  for (let r = 0; r < 5; r++) {
    const start = process.hrtime.bigint()
    for (let i = 0; i < n; i++) if (reserve()) granted++
    runs.push(Number(process.hrtime.bigint() - start) / n)
  }
  runs.sort((a, b) => a - b)
  return { ns: runs[2]!, granted }
}

const HUGE = 1e12 // messages per second: never over quota
const rates = (t: string) =>
  t === "huge" ? HUGE : t === "limited" ? 1000 : t === "waiting" ? 1e6 : undefined

// Files stay open until the bench ends: closing them is not what is measured.
const scope = Effect.runSync(Scope.make())
const shared = (dir: string, options: SharedQuota.Options = {}) =>
  Effect.runSync(Scope.extend(SharedQuota.make(dir, rates, options), scope))

const cases = (inMemory: Quotas, sharedQuotas: Quotas, leasePerCall: Quotas) => [
  {
    path: "no quota",
    memory: () => inMemory.reserve("free", 0),
    shared: () => sharedQuotas.reserve("free", 0),
  },
  {
    path: "granted (under quota)",
    memory: () => inMemory.reserve("huge", 0),
    shared: () => sharedQuotas.reserve("huge", 0),
  },
  {
    path: "refused (over quota, HTTP)",
    memory: () => inMemory.reserve("limited", 0),
    shared: () => sharedQuotas.reserve("limited", 0),
  },
  {
    path: "waiting (over quota, MQTT)",
    memory: () => inMemory.reserve("waiting", 10_000),
    shared: () => sharedQuotas.reserve("waiting", 10_000),
  },
  { path: "a SQLite lease per call", memory: undefined, shared: () => leasePerCall.reserve("huge", 0) },
]

/** One process of the contended case: a lease per call, prints ns per call. */
const contend = (dir: string) => {
  const quotas = shared(dir, { leaseMs: 1e-9, busyTimeoutMs: 1000 })
  const { ns } = measure(() => quotas.reserve("huge", 0).granted, leaseCalls)
  process.stdout.write(`${ns}\n`)
  Effect.runSync(Scope.close(scope, Exit.void))
}

const contended = (dir: string, processes: number) =>
  Promise.all(
    Array.from(
      { length: processes },
      () =>
        new Promise<number>((resolve, reject) => {
          const child = spawn(
            process.execPath,
            ["--import", "tsx", fileURLToPath(import.meta.url), "--contend", dir],
            { stdio: ["ignore", "pipe", "inherit"] },
          )
          let out = ""
          child.stdout.on("data", (chunk: Buffer) => {
            out += chunk.toString("utf8")
          })
          child.on("error", reject)
          child.on("exit", (code) =>
            code === 0 ? resolve(Number(out.trim())) : reject(new Error(`exit ${code}`)),
          )
        }),
    ),
  )

const main = async () => {
  const dir = mkdtempSync(join(tmpdir(), "sluice-bench-quota-"))
  const inMemory = Quota.make(rates)
  const sharedQuotas = shared(dir)
  const leasePerCall = shared(dir, { leaseMs: 1e-9 })
  console.log(
    `reserve: ns per call, median of 5 runs of ${calls.toLocaleString()} calls (leases: ${leaseCalls})`,
  )
  console.log("| path | in-memory | shared |")
  console.log("| --- | ---: | ---: |")
  for (const c of cases(inMemory, sharedQuotas, leasePerCall)) {
    const n = c.memory === undefined ? leaseCalls : calls
    const memory = c.memory === undefined ? undefined : measure(() => c.memory().granted, n)
    const sharedNs = measure(() => c.shared().granted, n)
    const fmt = (ns: number) => (ns < 1000 ? `${ns.toFixed(0)} ns` : `${(ns / 1000).toFixed(1)} µs`)
    console.log(`| ${c.path} | ${memory === undefined ? "—" : fmt(memory.ns)} | ${fmt(sharedNs.ns)} |`)
  }
  const perProcess = await contended(mkdtempSync(join(tmpdir(), "sluice-bench-quota-")), 3)
  console.log(
    `a SQLite lease per call, 3 processes on one file at once: ${perProcess
      .map((ns) => `${(ns / 1000).toFixed(1)} µs`)
      .join(", ")} per call`,
  )
  Effect.runSync(Scope.close(scope, Exit.void))
}

if (values.contend !== undefined) contend(values.contend)
else await main()
