/**
 * What every process has, whatever its roles: the stream (embedded log or Kinesis), the device
 * registry and the Tenancy that follows it, the metrics registry labelled with the roles, and the
 * process's health.
 */
import { Effect, Layer, Option } from "effect"
import * as Health from "../observability/Health.js"
import * as Metrics from "../observability/Metrics.js"
import * as DataDir from "../platform/DataDir.js"
import { supervised } from "../platform/Process.js"
import * as StreamConfig from "../stream/StreamConfig.js"
import * as Apply from "../tenancy/Apply.js"
import * as ConfigFile from "../tenancy/ConfigFile.js"
import * as QuotaConfig from "../tenancy/QuotaConfig.js"
import * as RegistryBackend from "../tenancy/RegistryBackend.js"
import * as RegistryConfig from "../tenancy/RegistryConfig.js"
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
 * The device registry (`registry.sqlite` in the data directory, or with SLUICE_REGISTRY_TABLE one
 * DynamoDB table for every node: `RegistryBackend.ts`) and the Tenancy that follows it.
 * A process started by hand applies its configuration file first (`--config`, as `sluice apply`
 * does); a child of the supervisor does not — the supervisor applied it once before starting its
 * children, and a restarted child must not undo a `sluice apply` made since.
 *
 * Only ingress reserves quota. Its processes share one bucket per tenant: on this machine through
 * the data directory (`quotas.sqlite`), or, with SLUICE_QUOTA_TABLE, on every node through a
 * DynamoDB table (its module, and the AWS SDK, loaded only then), so a quota holds for all of them
 * together.
 */
const TenancyLive = (roles: ReadonlyArray<Health.Role>) =>
  Layer.unwrapScoped(
    Effect.gen(function* () {
      const config = yield* ConfigFile.fromSettings
      const registry = yield* Layer.build(RegistryBackend.layer)
      const applied = Effect.flatMap(Apply.apply(config), (report) =>
        Effect.logInfo(`configuration applied: ${Apply.describeReport(report, false).split("\n")[0]}`),
      )
      if (!supervised) yield* Effect.provide(applied, registry)
      const makeQuotas = roles.includes("ingress")
        ? (rates: (tenantId: string) => number | undefined) =>
            Effect.gen(function* () {
              const table = yield* QuotaConfig.dynamo
              return Option.isSome(table)
                ? yield* Effect.flatMap(
                    Effect.promise(() => import("../tenancy/DynamoQuota.js")),
                    (m) => m.make(table.value, rates),
                  )
                : yield* SharedQuota.make(yield* DataDir.dataDir, rates)
            })
        : undefined
      const tenancy = yield* Tenancy.live({ pollMs: yield* RegistryConfig.pollMs, makeQuotas }).pipe(
        Effect.provide(registry),
      )
      return Layer.merge(Layer.succeed(Tenancy.Tenancy, tenancy), Layer.succeedContext(registry))
    }),
  )

/** The infrastructure of a process running `roles`. */
export const layer = (roles: ReadonlyArray<Health.Role>) => {
  const base = Layer.mergeAll(
    StreamLive,
    TenancyLive(roles),
    Metrics.layerForRoles(roles),
    Health.layer(roles),
  )
  // With ingress, every TLS listener of the process asks devices for a client certificate from
  // the tenants' CAs, whichever listener builds the process's TLS first (the API's, when serving
  // runs here too).
  return roles.includes("ingress") ? CertificateRootsLive.pipe(Layer.provideMerge(base)) : base
}

/** The tenants' CAs as client certificate roots (src/ingress/TenantCertificates.ts), loaded with ingress only. */
const CertificateRootsLive = Layer.unwrapEffect(
  Effect.map(
    Effect.promise(() => import("../ingress/TenantCertificates.js")),
    (m) => m.rootsLayer,
  ),
)
