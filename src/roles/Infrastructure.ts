/**
 * What every process has, whatever its roles: the stream (embedded log or Kinesis), the tenancy
 * registry loaded from the configuration file, the metrics registry labelled with the roles, and
 * the process's health.
 */
import { Effect, Layer, Option } from "effect"
import * as Health from "../observability/Health.js"
import * as Metrics from "../observability/Metrics.js"
import * as DataDir from "../platform/DataDir.js"
import * as StreamConfig from "../stream/StreamConfig.js"
import * as ConfigFile from "../tenancy/ConfigFile.js"
import * as QuotaConfig from "../tenancy/QuotaConfig.js"
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
 * The registry. Only ingress reserves quota. Its processes share one bucket per tenant: on this
 * machine through the data directory (`quotas.sqlite`), or, with SLUICE_QUOTA_TABLE, on every node
 * through a DynamoDB table (its module, and the AWS SDK, loaded only then), so a quota holds for
 * all of them together.
 */
const TenancyLive = (roles: ReadonlyArray<Health.Role>) =>
  Layer.unwrapScoped(
    Effect.gen(function* () {
      const config = yield* ConfigFile.fromSettings
      if (!roles.includes("ingress")) return Tenancy.layer(config)
      const rates = Tenancy.quotaRates(config)
      const table = yield* QuotaConfig.dynamo
      const quotas = Option.isSome(table)
        ? yield* Effect.flatMap(
            Effect.promise(() => import("../tenancy/DynamoQuota.js")),
            (m) => m.make(table.value, rates),
          )
        : yield* SharedQuota.make(yield* DataDir.dataDir, rates)
      return Tenancy.layer(config, quotas)
    }),
  )

/** The infrastructure of a process running `roles`. */
export const layer = (roles: ReadonlyArray<Health.Role>) =>
  Layer.mergeAll(StreamLive, TenancyLive(roles), Metrics.layerForRoles(roles), Health.layer(roles))
