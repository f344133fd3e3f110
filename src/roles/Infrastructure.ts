/**
 * What every process has, whatever its roles: the stream (embedded log or Kinesis), the tenancy
 * registry loaded from the configuration file, the metrics registry labelled with the roles, and
 * the process's health.
 */
import { Effect, Layer } from "effect"
import * as Health from "../observability/Health.js"
import * as Metrics from "../observability/Metrics.js"
import * as DataDir from "../platform/DataDir.js"
import * as StreamConfig from "../stream/StreamConfig.js"
import * as ConfigFile from "../tenancy/ConfigFile.js"
import * as SharedQuota from "../tenancy/SharedQuota.js"
import * as Tenancy from "../tenancy/Tenancy.js"

/** The configured backend, its module loaded only if it is the one in use (no AWS SDK on a laptop). */
const StreamLive = Layer.unwrapEffect(
  Effect.flatMap(StreamConfig.backend, (backend) =>
    backend === "kinesis"
      ? Effect.promise(() => import("../stream/KinesisStreamLog.js")).pipe(Effect.map((m) => m.layer))
      : Effect.promise(() => import("../stream/SqliteStreamLog.js")).pipe(Effect.map((m) => m.layer)),
  ),
)

/**
 * The registry. Only ingress reserves quota; its processes on this machine share one bucket per
 * tenant through the data directory (`quotas.sqlite`), so a quota holds for all of them together.
 */
const TenancyLive = (roles: ReadonlyArray<Health.Role>) =>
  Layer.unwrapScoped(
    Effect.gen(function* () {
      const config = yield* ConfigFile.fromSettings
      if (!roles.includes("ingress")) return Tenancy.layer(config)
      const quotas = yield* SharedQuota.make(yield* DataDir.dataDir, Tenancy.quotaRates(config))
      return Tenancy.layer(config, quotas)
    }),
  )

/** The infrastructure of a process running `roles`. */
export const layer = (roles: ReadonlyArray<Health.Role>) =>
  Layer.mergeAll(StreamLive, TenancyLive(roles), Metrics.layerForRoles(roles), Health.layer(roles))
