/**
 * The life of a role process: how it runs (a bad configuration is a plain message and exit 1),
 * and how it says it is up — a banner when it runs alone, a "ready" message to its supervisor
 * when it is a supervised child, which in turn sends it the state of every child for /healthz.
 */
import cluster from "node:cluster"
import { NodeRuntime } from "@effect/platform-node"
import { type ConfigProvider, Effect, Layer } from "effect"
import * as IngressConfig from "../ingress/IngressConfig.js"
import { type ChildState, Health, type Role } from "../observability/Health.js"
import { Metrics } from "../observability/Metrics.js"
import * as ServingConfig from "../serving/ServingConfig.js"
import * as ConfigFile from "../tenancy/ConfigFile.js"
import * as MachineMetrics from "./MachineMetrics.js"
import * as Welcome from "./Welcome.js"

/** Messages between the supervisor and its children (node:cluster's IPC channel). */
export type SupervisorMessage =
  | { readonly type: "sluice/ready" }
  | { readonly type: "sluice/children"; readonly children: ReadonlyArray<ChildState> }

/** True in a child started by the supervisor. */
export const supervised = cluster.isWorker

/** Built last: announces that every role of this process is up. */
export const announce = (roles: ReadonlyArray<Role>) =>
  Layer.scopedDiscard(
    Effect.gen(function* () {
      if (supervised) {
        const health = yield* Health
        const onMessage = (message: SupervisorMessage) => {
          if (message?.type === "sluice/children") health.setSupervisor(message.children)
        }
        process.on("message", onMessage)
        yield* Effect.addFinalizer(() => Effect.sync(() => process.off("message", onMessage)))
        MachineMetrics.answerSupervisor((yield* Metrics).registry)
        process.send?.({ type: "sluice/ready" } satisfies SupervisorMessage)
        return
      }
      const lines = Welcome.banner(
        yield* ConfigFile.fromSettings,
        roles,
        yield* IngressConfig.config,
        yield* ServingConfig.http,
        yield* ConfigFile.isBundledDemo,
      )
      console.log(lines.join("\n"))
    }),
  )

/** Runs a process's main effect until SIGINT/SIGTERM, with `provider` as its configuration. */
export const run = <E>(main: Effect.Effect<never, E>, provider: ConfigProvider.ConfigProvider) => {
  main.pipe(
    Effect.withConfigProvider(provider),
    // The user's to fix: say exactly what is wrong, no stack trace.
    Effect.catchIf(
      (
        error,
      ): error is E & {
        readonly _tag: "ConfigFileError" | "RoleRefused" | "MigrationFailed"
        readonly message: string
      } =>
        typeof error === "object" &&
        error !== null &&
        "_tag" in error &&
        (error._tag === "ConfigFileError" ||
          error._tag === "RoleRefused" ||
          error._tag === "MigrationFailed"),
      (error) =>
        Effect.sync(() => {
          console.error(`sluice: refusing to start\n${error.message}`)
          process.exitCode = 1
          // A supervised child's IPC channel would keep it alive with nothing to do.
          if (supervised) process.exit(1)
        }),
    ),
    NodeRuntime.runMain({ disablePrettyLogger: true }),
  )
  if (supervised) {
    // A terminal's Ctrl-C reaches the whole process group; the supervisor alone decides the
    // order in which its children stop (it sends each SIGTERM in turn), so children ignore it.
    process.removeAllListeners("SIGINT")
    process.on("SIGINT", () => {})
  }
}
