/**
 * Command-line flags of `sluice` (node:util parseArgs). Flags are a thin layer over the Effect
 * Config keys: each one sets the key it names, above the environment, so every setting has one
 * name and one default (in the tier's config module).
 */
import { parseArgs } from "node:util"
import { ConfigProvider } from "effect"

export const usage = `usage: sluice [--config FILE] [--data-dir DIR] [--mqtt-port N] [--http-port N] [--host ADDR]

  --config FILE     platform configuration (YAML or JSON; default: config/demo.yaml), env SLUICE_CONFIG_FILE
  --data-dir DIR    where the embedded log and chDB keep their files (default ./data), env SLUICE_DATA_DIR
  --mqtt-port N     embedded MQTT broker port (default 1883), env SLUICE_INGRESS_MQTT_PORT
  --http-port N     HTTP API / WebSocket port (default 8080), env SLUICE_HTTP_PORT
  --host ADDR       interface for both listeners (default 0.0.0.0)

Every other setting is an environment variable; see docs/operations.md.`

export interface Cli {
  readonly help: boolean
  readonly configFile: string | undefined
  /** Config provider: the flags first, then the environment (SLUICE_*). */
  readonly provider: ConfigProvider.ConfigProvider
}

/** Parses argv; throws a TypeError naming the bad flag, which main prints with the usage. */
export const parse = (argv: ReadonlyArray<string>): Cli => {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      help: { type: "boolean", short: "h", default: false },
      config: { type: "string" },
      "data-dir": { type: "string" },
      "mqtt-port": { type: "string" },
      "http-port": { type: "string" },
      host: { type: "string" },
    },
    strict: true,
    allowPositionals: false,
  })
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
  set("http", "port", values["http-port"])
  set("http", "host", values.host)
  const env = ConfigProvider.fromEnv().pipe(ConfigProvider.constantCase)
  return {
    help: values.help === true,
    configFile: values.config,
    provider: ConfigProvider.fromJson({ sluice: flags }).pipe(ConfigProvider.orElse(() => env)),
  }
}
