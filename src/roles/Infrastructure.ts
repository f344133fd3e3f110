/**
 * What every process has, whatever its roles: the stream (embedded log or Kinesis), the tenancy
 * registry loaded from the configuration file, the metrics registry labelled with the roles, and
 * the process's health.
 */
import { Config, Effect, Layer } from "effect"
import * as Health from "../observability/Health.js"
import * as Metrics from "../observability/Metrics.js"
import * as DataDir from "../platform/DataDir.js"
import * as KinesisStreamLog from "../stream/KinesisStreamLog.js"
import * as SqliteStreamLog from "../stream/SqliteStreamLog.js"
import * as StreamConfig from "../stream/StreamConfig.js"
import * as ConfigFile from "../tenancy/ConfigFile.js"
import * as SharedQuota from "../tenancy/SharedQuota.js"
import * as Tenancy from "../tenancy/Tenancy.js"

/** The platform configuration file (SLUICE_CONFIG_FILE, `--config`). */
export const configFile = Config.string("config_file").pipe(
  Config.withDefault("config/demo.yaml"),
  Config.nested("sluice"),
)

/** The configuration file, loaded and validated (a `ConfigFileError` names file, path and reason). */
export const loadConfig = Effect.flatMap(configFile, ConfigFile.load)

const StreamLive = Layer.unwrapEffect(
  Effect.map(StreamConfig.backend, (backend) =>
    backend === "kinesis" ? KinesisStreamLog.layer : SqliteStreamLog.layer,
  ),
)

/**
 * The registry. Only ingress reserves quota; its processes on this machine share one bucket per
 * tenant through the data directory (`quotas.sqlite`), so a quota holds for all of them together.
 */
const TenancyLive = (roles: ReadonlyArray<Health.Role>) =>
  Layer.unwrapScoped(
    Effect.gen(function* () {
      const config = yield* loadConfig
      if (!roles.includes("ingress")) return Tenancy.layer(config)
      const quotas = yield* SharedQuota.make(yield* DataDir.dataDir, Tenancy.quotaRates(config))
      return Tenancy.layer(config, quotas)
    }),
  )

/** The infrastructure of a process running `roles`. */
export const layer = (roles: ReadonlyArray<Health.Role>) =>
  Layer.mergeAll(StreamLive, TenancyLive(roles), Metrics.layerForRoles(roles), Health.layer(roles))
