/**
 * The processor role: shard workers, device and tenant actors, inserting into ClickHouse and
 * checkpointing the stream, and the retention loop that drops tenants' expired partitions. Its readings go to the process's LiveFeed, which a serving role in
 * the same process serves. A processor without serving or ingress in its process opens a
 * listener for /healthz, /readyz and /metrics on the serving port setting.
 */
import { Effect, Layer } from "effect"
import * as LiveFeed from "../actors/LiveFeed.js"
import * as Processor from "../actors/Processor.js"
import * as ProcessorConfig from "../actors/ProcessorConfig.js"
import * as HealthServer from "../observability/HealthServer.js"
import * as ServingConfig from "../serving/ServingConfig.js"
import * as ClickHouseTelemetryStore from "../storage/ClickHouseTelemetryStore.js"
import * as Retention from "../storage/Retention.js"
import * as StreamConfig from "../stream/StreamConfig.js"
import { readyWithStore } from "./StoreProbe.js"

/**
 * The shard leases of this processor's consumer application, beside the stream: in the embedded
 * log's database on one machine, in a DynamoDB table with Kinesis. Loaded only if in use.
 */
const LeasesLive = Layer.unwrapEffect(
  Effect.gen(function* () {
    if ((yield* StreamConfig.backend) === "kinesis") {
      return (yield* Effect.promise(() => import("../stream/DynamoShardLeases.js"))).layer
    }
    const { consumer } = yield* ProcessorConfig.processor
    return (yield* Effect.promise(() => import("../stream/SqliteShardLeases.js"))).layer(consumer)
  }),
)

/**
 * Requires StreamLog, Tenancy, Metrics, Health. The store and the LiveFeed are the same layers
 * the serving role provides, so in one process both roles share one instance of each (layers are
 * memoised by reference): one chDB, one feed.
 */
export const layer = (options: { readonly healthListener: boolean }) =>
  readyWithStore("processor").pipe(
    Layer.provide(
      Layer.merge(
        options.healthListener
          ? Layer.merge(
              Processor.layer,
              Layer.unwrapEffect(Effect.map(ServingConfig.http, HealthServer.layerWith)),
            )
          : Processor.layer,
        // Every processor expires: dropping a partition twice is a no-op.
        Retention.layer,
      ),
    ),
    Layer.provide(LiveFeed.layer),
    Layer.provide(ClickHouseTelemetryStore.layer),
    Layer.provide(LeasesLive),
  )
