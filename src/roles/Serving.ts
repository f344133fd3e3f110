/**
 * The serving role: the REST API, WebSocket live feed, health and metrics on the serving port.
 * Live readings come from the processor's LiveFeed when the processor runs in the same process;
 * otherwise this process tails the stream itself (`StreamTail`), never through another transport.
 * chDB lives in one process only, so serving without the processor needs a ClickHouse server.
 */
import { Data, Effect, Layer } from "effect"
import * as LiveFeed from "../actors/LiveFeed.js"
import * as HttpServer from "../serving/HttpServer.js"
import * as ClickHouseTelemetryStore from "../storage/ClickHouseTelemetryStore.js"
import * as StorageConfig from "../storage/StorageConfig.js"
import { readyWithStore } from "./StoreProbe.js"

/** A role set this process cannot run; `message` says why and what to do. */
export class RoleRefused extends Data.TaggedError("RoleRefused")<{ readonly message: string }> {}

/**
 * Requires StreamLog, Tenancy, Metrics, Health. `withProcessor`: the processor runs in this
 * process and feeds the LiveFeed; otherwise the stream tail does.
 */
export const layer = (options: { readonly withProcessor: boolean }) =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const storage = yield* StorageConfig.clickhouse
      if (!options.withProcessor && storage.target._tag === "Embedded") {
        return yield* new RoleRefused({
          message:
            "--role serving without the processor needs a ClickHouse server: the embedded store (chDB) " +
            "lives inside one process, the processor's. Set SLUICE_CLICKHOUSE_URL to a ClickHouse server, " +
            "or run serving together with the processor (--role processor,serving), or run `sluice` " +
            "without --role to get every role on this machine.",
        })
      }
      return readyWithStore("serving").pipe(
        Layer.provide(HttpServer.layer),
        // The tail (and the device-class decoding it loads) only where the processor is not.
        Layer.provide(
          options.withProcessor
            ? Layer.empty
            : Layer.unwrapEffect(
                Effect.promise(() => import("../serving/live/StreamTail.js")).pipe(
                  Effect.map((m) => m.layer),
                ),
              ),
        ),
        Layer.provide(LiveFeed.layer),
        Layer.provide(ClickHouseTelemetryStore.layer),
      )
    }),
  )
