/**
 * Command-line flags of `sluice` (node:util parseArgs). Flags are a thin layer over the Effect
 * Config keys: each one sets the key it names, above the environment, so every setting has one
 * name and one default (in the tier's config module). `--role`, `--single-process` and the
 * informational flags decide what this process is.
 */
import { parseArgs } from "node:util"
import { ConfigProvider } from "effect"
import { ROLES, type Role } from "../observability/Health.js"

export const usage = `usage: sluice [--role ROLES | --single-process] [--config FILE] [--data-dir DIR]
              [--mqtt-port N] [--ingress-http-port N] [--http-port N] [--host ADDR] [--ingress-workers N]
              [--supervisor-port N]
       sluice --copy-store-to URL [--data-dir DIR]
       sluice apply FILE [--dry-run] [--data-dir DIR]
       sluice migrate [--dry-run | --rebuild-rollups] [--data-dir DIR]

  (no --role)            run every role, each tier in its own child process under a supervisor
                         that restarts a child that dies and shuts down in order (the default)
  --role ROLES           run these roles in this process: any of ingress, processor, serving,
                         comma-separated (e.g. --role processor,serving)
  --single-process       run every role in this one process (debugging, tests)
  --ingress-workers N    ingress processes sharing the MQTT and HTTP ingest ports (default 1),
                         env SLUICE_INGRESS_WORKERS
  --config FILE          platform configuration (YAML or JSON; default: config/demo.yaml), env SLUICE_CONFIG_FILE
  --data-dir DIR         where the embedded log and chDB keep their files (default ./data), env SLUICE_DATA_DIR
  --mqtt-port N          ingress: embedded MQTT broker port (default 1883), env SLUICE_INGRESS_MQTT_PORT
  --ingress-http-port N  ingress: HTTP ingest port, POST /v1/telemetry (default 8081), env SLUICE_INGRESS_HTTP_PORT
  --http-port N          serving: HTTP API / WebSocket port (default 8080), env SLUICE_HTTP_PORT
  --host ADDR            interface for every listener (default 0.0.0.0)
  --copy-store-to URL    copy the embedded store (chDB in the data directory) into the ClickHouse
                         server at URL (SLUICE_CLICKHOUSE_USER/_PASSWORD/_DATABASE), then exit;
                         run it with the platform stopped (docs/deploy.md)
  apply FILE             apply a configuration file to the device registry in the data directory
                         (tenants, keys, device classes, devices; idempotent) and print what it
                         created, changed and removed; running processes pick it up within a
                         second. --dry-run: print it, write nothing
  migrate                apply the store's pending schema migrations (chDB in the data directory, or
                         SLUICE_CLICKHOUSE_URL) and print each, then exit; every start does the same.
                         --dry-run: list them, change nothing. --rebuild-rollups: then recount the
                         1-minute and 1-hour rollups from the stored readings (after a replay, or
                         readings stored without them), ingest stopped. On chDB, run it with the
                         platform stopped
  --version              print the version
  -h, --help             print this

Every other setting is an environment variable; see docs/operations.md.`

/** What this process runs. */
export type Mode =
  /** `npm start`: a supervisor of child processes, one per tier. */
  | { readonly _tag: "Supervisor" }
  /** These roles, in this process. */
  | { readonly _tag: "Roles"; readonly roles: ReadonlyArray<Role> }
  /** `apply FILE`: apply a configuration file to the registry, then exit. */
  | { readonly _tag: "Apply"; readonly file: string; readonly dryRun: boolean }
  /** `migrate`: apply (or list) the store's pending schema migrations, then exit. */
  | { readonly _tag: "Migrate"; readonly dryRun: boolean; readonly rebuildRollups: boolean }
  /** `--copy-store-to URL`: copy the embedded store into a ClickHouse server, then exit. */
  | { readonly _tag: "CopyStore"; readonly url: string }

export interface Cli {
  readonly help: boolean
  readonly version: boolean
  readonly mode: Mode
  /** Config provider: the flags first, then the environment (SLUICE_*). */
  readonly provider: ConfigProvider.ConfigProvider
}

/** Parses `--role a,b`, in the fixed order serving, processor, ingress are started in. */
const parseRoles = (text: string): ReadonlyArray<Role> => {
  const asked = text.split(",").map((r) => r.trim())
  for (const role of asked) {
    if (!(ROLES as ReadonlyArray<string>).includes(role)) {
      throw new TypeError(`--role: unknown role ${JSON.stringify(role)}; expected any of ${ROLES.join(", ")}`)
    }
  }
  return ROLES.filter((role) => asked.includes(role))
}

/** Parses argv; throws a TypeError naming the bad flag, which main prints with the usage. */
export const parse = (argv: ReadonlyArray<string>): Cli => {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: {
      help: { type: "boolean", short: "h", default: false },
      version: { type: "boolean", default: false },
      role: { type: "string" },
      "single-process": { type: "boolean", default: false },
      "ingress-workers": { type: "string" },
      "supervisor-port": { type: "string" },
      config: { type: "string" },
      "data-dir": { type: "string" },
      "mqtt-port": { type: "string" },
      "ingress-http-port": { type: "string" },
      "http-port": { type: "string" },
      host: { type: "string" },
      "copy-store-to": { type: "string" },
      "dry-run": { type: "boolean", default: false },
      "rebuild-rollups": { type: "boolean", default: false },
    },
    strict: true,
    allowPositionals: true,
  })
  const command = positionals[0]
  if (command !== undefined && command !== "apply" && command !== "migrate") {
    throw new TypeError(
      `unexpected argument ${JSON.stringify(command)}; the commands are \`apply FILE\` and \`migrate\``,
    )
  }
  if (command === "apply" && positionals.length !== 2) {
    throw new TypeError("apply: expected exactly one FILE")
  }
  if (command === "migrate" && positionals.length !== 1) {
    throw new TypeError("migrate: takes no argument")
  }
  if (command !== undefined && (values.role !== undefined || values["single-process"] === true)) {
    throw new TypeError(`${command} runs alone: it takes no --role`)
  }
  if (command !== undefined && values["copy-store-to"] !== undefined) {
    throw new TypeError(`${command} and --copy-store-to exclude each other`)
  }
  if (values["dry-run"] === true && command === undefined) {
    throw new TypeError("--dry-run goes with apply FILE or migrate")
  }
  if (values["rebuild-rollups"] === true && command !== "migrate") {
    throw new TypeError("--rebuild-rollups goes with migrate")
  }
  if (values["rebuild-rollups"] === true && values["dry-run"] === true) {
    throw new TypeError("--rebuild-rollups and --dry-run exclude each other")
  }
  if (values.role !== undefined && values["single-process"] === true) {
    throw new TypeError("--role and --single-process exclude each other")
  }
  const flags: Record<string, unknown> = {}
  const set = (group: string | undefined, key: string, value: string | undefined) => {
    if (value === undefined) return
    if (group === undefined) {
      flags[key] = value
      return
    }
    flags[group] = { ...(flags[group] as Record<string, unknown> | undefined), [key]: value }
  }
  set(undefined, "data_dir", values["data-dir"])
  set(undefined, "config_file", values.config)
  set("ingress", "mqtt_port", values["mqtt-port"])
  set("ingress", "mqtt_host", values.host)
  set("ingress", "http_port", values["ingress-http-port"])
  set("ingress", "http_host", values.host)
  set("ingress", "workers", values["ingress-workers"])
  set("supervisor", "port", values["supervisor-port"])
  set("http", "port", values["http-port"])
  set("http", "host", values.host)
  const env = ConfigProvider.fromEnv().pipe(ConfigProvider.constantCase)
  if (
    values["copy-store-to"] !== undefined &&
    (values.role !== undefined || values["single-process"] === true)
  ) {
    throw new TypeError(
      "--copy-store-to runs alone: the platform must be stopped (chDB's directory is one process's)",
    )
  }
  const mode: Mode =
    command === "apply"
      ? { _tag: "Apply", file: positionals[1]!, dryRun: values["dry-run"] === true }
      : command === "migrate"
        ? {
            _tag: "Migrate",
            dryRun: values["dry-run"] === true,
            rebuildRollups: values["rebuild-rollups"] === true,
          }
        : values["copy-store-to"] !== undefined
          ? { _tag: "CopyStore", url: values["copy-store-to"] }
          : values.role !== undefined
            ? { _tag: "Roles", roles: parseRoles(values.role) }
            : values["single-process"] === true
              ? { _tag: "Roles", roles: ROLES }
              : { _tag: "Supervisor" }
  return {
    help: values.help === true,
    version: values.version === true,
    mode,
    provider: ConfigProvider.fromJson({ sluice: flags }).pipe(ConfigProvider.orElse(() => env)),
  }
}
