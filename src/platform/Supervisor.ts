/**
 * `npm start`'s supervisor: one machine, every role, each tier in its own child process
 * (node:cluster), so the tiers use every core and a crash of one never stops the others — the
 * durable stream absorbs while a processor restarts, and devices reconnect to a restarted
 * ingress. Children:
 *
 * - `ingress` × `--ingress-workers` (default 1): they share the MQTT and HTTP ingest ports
 *   through node:cluster (the supervisor opens the listening sockets, each worker accepts);
 * - `processor,serving` × 1: chDB lives in one process, so with the embedded store the processor
 *   and serving run together and the LiveFeed stays in-process.
 *
 * It validates the configuration file before starting anything, restarts a child that dies (with
 * exponential backoff, logged) unless it never came up at all (a start-up failure such as a port
 * in use is the user's to fix: everything stops with exit 1), reports every child's state to the
 * children (their /healthz) and in its log, and on SIGINT/SIGTERM stops them in order: ingress
 * first (stop accepting, answer what was appended), then processor and serving (drain, checkpoint).
 */
import cluster, { type Worker } from "node:cluster"
import { createHash } from "node:crypto"
import { hostname } from "node:os"
import { resolve } from "node:path"
import { NodeRuntime } from "@effect/platform-node"
import { ConfigError, type ConfigProvider, Effect, Runtime } from "effect"
import * as IngressConfig from "../ingress/IngressConfig.js"
import type { ChildState, Role } from "../observability/Health.js"
import * as ServingConfig from "../serving/ServingConfig.js"
import * as Apply from "../tenancy/Apply.js"
import * as ConfigFile from "../tenancy/ConfigFile.js"
import * as RegistryBackend from "../tenancy/RegistryBackend.js"
import { dataDir } from "./DataDir.js"
import * as MachineMetrics from "./MachineMetrics.js"
import type { SupervisorMessage } from "./Process.js"
import * as Welcome from "./Welcome.js"

/** First restart delay; doubled per consecutive crash up to `MAX_BACKOFF_MS`. */
const MIN_BACKOFF_MS = 250
const MAX_BACKOFF_MS = 30_000
/** A child up this long has its backoff reset: its next crash restarts it after `MIN_BACKOFF_MS`. */
const STABLE_AFTER_MS = 60_000
/** How long a child may take to stop after SIGTERM before it is killed. */
const STOP_TIMEOUT_MS = 30_000

interface Child {
  readonly name: string
  readonly roles: ReadonlyArray<Role>
  worker: Worker | undefined
  state: ChildState["state"]
  restarts: number
  lastExit: string | null
  everReady: boolean
  startedAt: number
  backoffMs: number
  timer: NodeJS.Timeout | undefined
}

const stateOf = (child: Child): ChildState => ({
  name: child.name,
  roles: child.roles,
  pid: child.worker?.process.pid ?? null,
  state: child.state,
  restarts: child.restarts,
  lastExit: child.lastExit,
})

const describeExit = (code: number | null, signal: string | null) =>
  signal !== null ? `killed by ${signal}` : `exited with code ${code}`

const supervise = Effect.gen(function* () {
  // A bad configuration stops everything before any child starts, with the file's own message.
  const config = yield* ConfigFile.fromSettings
  const demo = yield* ConfigFile.isBundledDemo
  // Applied once here, before any child starts; the children read the registry and never apply
  // (a restarted child must not undo a `sluice apply` made since).
  const applied = yield* Apply.apply(config).pipe(Effect.provide(RegistryBackend.layer))
  yield* Effect.logInfo(`configuration applied: ${Apply.describeReport(applied, false).split("\n")[0]}`)
  const ingress = yield* IngressConfig.config
  const http = yield* ServingConfig.http
  const runFork = Runtime.runFork(yield* Effect.runtime<never>())
  const log = (effect: Effect.Effect<void>) => void runFork(effect)
  const workers = ingress.workers
  const args = process.argv.slice(2)
  // The processor child's name in the lease table survives its restarts, so a restarted child
  // takes its own leases back at once instead of waiting out the failover time. Unique per
  // machine and data directory: two installations never share a name.
  const processorWorkerId =
    process.env.SLUICE_PROCESSOR_WORKER_ID ??
    `${hostname()}-${createHash("sha256")
      .update(resolve(yield* dataDir))
      .digest("hex")
      .slice(0, 8)}-processor`
  const children: Array<Child> = [
    ...Array.from({ length: workers }, (_, i) => ({
      name: workers === 1 ? "ingress" : `ingress-${i + 1}`,
      roles: ["ingress"] as ReadonlyArray<Role>,
    })),
    { name: "processor+serving", roles: ["processor", "serving"] as ReadonlyArray<Role> },
  ].map((spec) => ({
    ...spec,
    worker: undefined,
    state: "starting" as const,
    restarts: 0,
    lastExit: null,
    everReady: false,
    startedAt: 0,
    backoffMs: MIN_BACKOFF_MS,
    timer: undefined,
  }))
  let stopping = false
  let announced = false
  const failed = yield* Effect.makeLatch(false)
  let failure: string | undefined

  const broadcast = () => {
    const report: SupervisorMessage = { type: "sluice/children", children: children.map(stateOf) }
    for (const child of children) {
      if (child.worker?.isConnected()) child.worker.send(report)
    }
  }

  const start = (child: Child) => {
    child.timer = undefined
    if (stopping) return
    child.state = child.restarts === 0 ? "starting" : "restarting"
    child.startedAt = Date.now()
    // The entry point this supervisor was started with (src/main.ts under tsx, or bin/sluice.js).
    cluster.setupPrimary({ exec: process.argv[1]!, args: [...args, "--role", child.roles.join(",")] })
    const worker = cluster.fork(
      child.roles.includes("processor") ? { SLUICE_PROCESSOR_WORKER_ID: processorWorkerId } : {},
    )
    child.worker = worker
    // A failed IPC write (a child dying while a report is sent to it) is reported here; without a
    // listener it would be an uncaught exception that takes the supervisor down.
    worker.on("error", (error) => log(Effect.logWarning(`${child.name}: ${error.message}`)))
    worker.on("message", (message: SupervisorMessage) => {
      // A late message from a worker already replaced, or one arriving during shutdown, changes nothing.
      if (message?.type !== "sluice/ready" || child.worker !== worker || stopping) return
      child.state = "running"
      child.everReady = true
      log(Effect.logInfo(`${child.name} (pid ${worker.process.pid}) is up`))
      broadcast()
      if (!announced && children.every((c) => c.state === "running")) {
        announced = true
        const lines = Welcome.banner(config, ["ingress", "processor", "serving"], ingress, http, demo)
        const host = http.host === "0.0.0.0" || http.host === "::" ? "127.0.0.1" : http.host
        console.log(
          [
            lines[0],
            `  machine      http://${host}:${opsAddress.port}/metrics (every process)   /healthz (every child)`,
            ...lines.slice(1),
          ].join("\n"),
        )
      }
    })
    worker.on("exit", (code, signal) => {
      if (child.worker !== worker) return
      child.worker = undefined
      child.lastExit = describeExit(code, signal)
      if (stopping) {
        child.state = "stopped"
        return
      }
      if (!child.everReady) {
        // Never came up: retrying would only repeat the failure (a port in use, a bad setting).
        child.state = "stopped"
        failure = `${child.name} failed to start (${child.lastExit}); see its log above`
        log(Effect.logError(`${failure}; stopping`))
        Effect.runSync(failed.open)
        return
      }
      const upMs = Date.now() - child.startedAt
      if (upMs >= STABLE_AFTER_MS) child.backoffMs = MIN_BACKOFF_MS
      const delay = child.backoffMs
      child.backoffMs = Math.min(MAX_BACKOFF_MS, child.backoffMs * 2)
      child.restarts++
      child.state = "restarting"
      log(
        Effect.logWarning(
          `${child.name} ${child.lastExit} after ${(upMs / 1000).toFixed(1)} s; restarting in ${delay} ms (restart ${child.restarts})`,
        ),
      )
      broadcast()
      child.timer = setTimeout(() => start(child), delay)
    })
  }

  const stop = (child: Child) =>
    Effect.async<void>((resume) => {
      if (child.timer !== undefined) clearTimeout(child.timer)
      const worker = child.worker
      if (worker === undefined || worker.isDead()) {
        child.state = "stopped"
        return resume(Effect.void)
      }
      child.state = "stopping"
      const killer = setTimeout(() => worker.process.kill("SIGKILL"), STOP_TIMEOUT_MS)
      worker.once("exit", () => {
        clearTimeout(killer)
        resume(Effect.void)
      })
      worker.process.kill("SIGTERM")
    }).pipe(Effect.interruptible)

  // Shutdown in order: ingress stops accepting first, then processor and serving drain.
  yield* Effect.addFinalizer(() =>
    Effect.gen(function* () {
      stopping = true
      // No restart may start once shutdown has begun.
      for (const child of children) if (child.timer !== undefined) clearTimeout(child.timer)
      yield* Effect.logInfo("stopping: ingress first, then processor and serving")
      yield* Effect.forEach(
        children.filter((c) => c.roles.includes("ingress")),
        stop,
        { concurrency: "unbounded", discard: true },
      )
      broadcast()
      yield* Effect.forEach(
        children.filter((c) => !c.roles.includes("ingress")),
        stop,
        { concurrency: "unbounded", discard: true },
      )
      yield* Effect.logInfo("every child stopped")
    }),
  )

  const opsPort = yield* MachineMetrics.port
  const ops = yield* MachineMetrics.serve({
    host: http.host,
    port: opsPort,
    children: () => children.map(stateOf),
  }).pipe(
    Effect.mapError((error) => `the supervisor cannot listen on ${http.host}:${opsPort}: ${error.message}`),
  )
  const opsAddress = ops.address() as { port: number }
  yield* Effect.logInfo(`supervisor: the machine's /metrics and /healthz on ${http.host}:${opsAddress.port}`)

  // Each worker accepts from the shared listening socket itself. With node:cluster's default
  // round-robin the supervisor would accept every connection and re-offer one that a worker at its
  // connection limit declines to the next worker, in a loop while all are full, holding it open
  // and uncounted; this way a worker at its limit refuses (and counts) the connection.
  cluster.schedulingPolicy = cluster.SCHED_NONE
  // All at once: ingress does not wait for the processor, the log absorbs until it reads.
  for (const child of children) start(child)
  yield* failed.await
  return yield* Effect.fail(failure ?? "a child failed")
})

/** Runs the supervisor until SIGINT/SIGTERM (or a child that cannot start: exit 1). */
export const run = (provider: ConfigProvider.ConfigProvider) => {
  Effect.scoped(supervise).pipe(
    Effect.withConfigProvider(provider),
    Effect.catchAll((error) =>
      Effect.sync(() => {
        // A ConfigError's message lacks the key it is about; its string form names it.
        const message =
          typeof error === "string" ? error : ConfigError.isConfigError(error) ? String(error) : error.message
        console.error(`sluice: refusing to start\n${message}`)
        process.exit(1)
      }),
    ),
    NodeRuntime.runMain({ disablePrettyLogger: true }),
  )
  // runMain handles the first SIGINT/SIGTERM and then removes its handlers, so a second one (npm
  // forwards a terminal's Ctrl-C on top of the group's own) would kill the supervisor in the
  // middle of the ordered stop. The stop goes on; SIGKILL is the way to force it.
  let signals = 0
  const again = (signal: string) => {
    if (++signals > 1) console.error(`sluice: ${signal} received; already stopping in order (SIGKILL forces)`)
  }
  process.on("SIGINT", again)
  process.on("SIGTERM", again)
}
