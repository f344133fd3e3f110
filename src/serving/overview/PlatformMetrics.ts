/**
 * The platform's counters as this serving process can see them. Under the supervisor (`npm
 * start`) ingress runs in other processes, so their counters are not in this registry: the
 * supervisor's listener (`src/platform/MachineMetrics.ts`) gathers every child's, and that is read
 * over loopback. Without a supervisor, or when it does not answer in time, this process's own
 * registry is what there is, and the answer says so.
 */
import cluster from "node:cluster"
import { Effect, Option } from "effect"
import { Metrics } from "../../observability/Metrics.js"
import * as MachineMetrics from "../../platform/MachineMetrics.js"
import * as ServingConfig from "../ServingConfig.js"

/** Per metric name, the values of its series. */
export type Samples = ReadonlyMap<string, ReadonlyArray<number>>

/** The series of a Prometheus text exposition, by metric name (labels dropped). */
export const parse = (text: string): Samples => {
  const samples = new Map<string, Array<number>>()
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)/.exec(line)
    if (match === null) continue
    const value = Number(match[3])
    if (!Number.isFinite(value)) continue
    const list = samples.get(match[1]!) ?? []
    list.push(value)
    samples.set(match[1]!, list)
  }
  return samples
}

/** Sum of a metric's series; null when no process in scope has it. */
export const sum = (samples: Samples, name: string): number | null => {
  const values = samples.get(name)
  return values === undefined || values.length === 0 ? null : values.reduce((a, b) => a + b, 0)
}

/** Largest of a metric's series; null when no process in scope has it. */
export const max = (samples: Samples, name: string): number | null => {
  const values = samples.get(name)
  return values === undefined || values.length === 0 ? null : Math.max(...values)
}

/** The supervisor is asked for at most this long: the console polls, a slow answer is worth less than a partial one. */
const SCRAPE_TIMEOUT_MS = 1_000

const wildcard = new Set(["0.0.0.0", "::", ""])

/** The supervisor's /metrics text, if this process is its child and it answers in time. */
const scrapeSupervisor = Effect.gen(function* () {
  if (!cluster.isWorker) return Option.none<string>()
  const port = yield* MachineMetrics.port
  // 0 asked the supervisor for any free port: its children cannot know which.
  if (port === 0) return Option.none<string>()
  const { host } = yield* ServingConfig.http
  const target = wildcard.has(host) ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host
  return yield* Effect.tryPromise(async () => {
    const response = await fetch(`http://${target}:${port}/metrics`, {
      signal: AbortSignal.timeout(SCRAPE_TIMEOUT_MS),
    })
    if (!response.ok) throw new Error(`supervisor answered ${response.status}`)
    return response.text()
  }).pipe(Effect.option)
}).pipe(Effect.orElseSucceed(() => Option.none<string>()))

/** The samples in scope and where they came from. */
export const read = Effect.gen(function* () {
  const machine = yield* scrapeSupervisor
  if (Option.isSome(machine)) return { source: "machine" as const, samples: parse(machine.value) }
  const metrics = yield* Metrics
  const own = yield* Effect.promise(() => metrics.registry.metrics())
  return { source: "process" as const, samples: parse(own) }
})
