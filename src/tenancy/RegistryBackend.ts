/**
 * The registry backend this process uses: with SLUICE_REGISTRY_TABLE, `DynamoRegistry.ts` (one
 * DynamoDB table shared by every node), its module — and the AWS SDK — loaded only then, so a
 * laptop run never loads it; without, `SqliteRegistry.ts` (`registry.sqlite` in the data
 * directory, shared by the processes of one machine). Every process of a fleet must name the same
 * table: a node left on its own file would neither see nor make the others' changes.
 */
import { type ConfigError, Effect, Layer, Option } from "effect"
import type { Registry, RegistryUnavailable } from "./Registry.js"
import * as RegistryConfig from "./RegistryConfig.js"
import * as SqliteRegistry from "./SqliteRegistry.js"

export const layer: Layer.Layer<Registry, RegistryUnavailable | ConfigError.ConfigError> = Layer.unwrapEffect(
  Effect.map(RegistryConfig.dynamo, (table) =>
    Option.isSome(table)
      ? Layer.unwrapEffect(
          Effect.map(
            Effect.promise(() => import("./DynamoRegistry.js")),
            (m) => m.layerWith(table.value),
          ),
        )
      : SqliteRegistry.layer,
  ),
)
