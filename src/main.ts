/**
 * `sluice`: picks what this process is and launches it. Wiring only.
 *
 * - no `--role` (`npm start`): the supervisor, which runs the roles as child processes;
 * - `--role a,b` or `--single-process`: those roles (all of them) in this process, each role's
 *   composition in `src/roles`, imported only when the role runs. They stack so that shutdown
 *   (SIGINT/SIGTERM) unwinds them in order: ingress stops accepting, the processor drains and
 *   checkpoints, serving closes, then the stream and the store.
 */
import cluster from "node:cluster"
import { readFileSync } from "node:fs"
import { Layer } from "effect"
import type { Role } from "./observability/Health.js"
import * as Cli from "./platform/Cli.js"

const cli = (() => {
  try {
    return Cli.parse(process.argv.slice(2))
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${Cli.usage}`)
    process.exit(2)
  }
})()
if (cli.help) {
  console.log(Cli.usage)
  process.exit(0)
}
if (cli.version) {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    version: string
  }
  console.log(`sluice ${pkg.version}`)
  process.exit(0)
}

/** Each role's composition, loaded only if this process runs it. */
const roleLayer = async (
  role: Role,
  roles: ReadonlyArray<Role>,
): Promise<Layer.Layer<never, unknown, never>> => {
  switch (role) {
    case "ingress":
      return (await import("./roles/Ingress.js")).layer({
        servingInProcess: roles.includes("serving"),
      }) as Layer.Layer<never, unknown, never>
    case "processor":
      return (await import("./roles/Processor.js")).layer({
        healthListener: !roles.includes("serving") && !roles.includes("ingress"),
      }) as Layer.Layer<never, unknown, never>
    case "serving":
      return (await import("./roles/Serving.js")).layer({
        withProcessor: roles.includes("processor"),
      }) as Layer.Layer<never, unknown, never>
  }
}

/** Serving first, ingress last: released in reverse, ingress stops first and serving last. */
const startOrder: ReadonlyArray<Role> = ["serving", "processor", "ingress"]

const launchRoles = async (roles: ReadonlyArray<Role>) => {
  const Infrastructure = await import("./roles/Infrastructure.js")
  const Process = await import("./platform/Process.js")
  let stack: Layer.Layer<never, unknown, never> = Layer.empty
  for (const role of startOrder.filter((r) => roles.includes(r))) {
    stack = (await roleLayer(role, roles)).pipe(Layer.provide(stack))
  }
  const main = Process.announce(roles).pipe(
    Layer.provide(stack),
    Layer.provide(Infrastructure.layer(roles)),
  ) as Layer.Layer<never, unknown, never>
  Process.run(Layer.launch(main), cli.provider)
}

if (cli.mode._tag === "Supervisor" && cluster.isPrimary) {
  const Supervisor = await import("./platform/Supervisor.js")
  Supervisor.run(cli.provider)
} else if (cli.mode._tag === "Roles") {
  await launchRoles(cli.mode.roles)
} else if (cli.mode._tag === "Apply") {
  const { Effect } = await import("effect")
  const ApplyCommand = await import("./tenancy/ApplyCommand.js")
  const code = await Effect.runPromise(
    ApplyCommand.run(cli.mode.file, cli.mode.dryRun).pipe(Effect.withConfigProvider(cli.provider)),
  )
  process.exit(code)
} else if (cli.mode._tag === "Migrate") {
  const { Effect } = await import("effect")
  const MigrateCommand = await import("./storage/MigrateCommand.js")
  const code = await Effect.runPromise(
    MigrateCommand.run(cli.mode).pipe(Effect.withConfigProvider(cli.provider)),
  )
  process.exit(code)
} else if (cli.mode._tag === "CopyStore") {
  const { Effect } = await import("effect")
  const CopyStore = await import("./storage/CopyStore.js")
  const exit = await Effect.runPromiseExit(
    CopyStore.command(cli.mode.url).pipe(Effect.withConfigProvider(cli.provider)),
  )
  if (exit._tag === "Failure") {
    const { Cause } = await import("effect")
    console.error(`sluice: the copy failed: ${Cause.pretty(exit.cause)}`)
    process.exit(1)
  }
  process.exit(0)
} else {
  console.error("sluice: a supervised child needs --role")
  process.exit(2)
}
