/** The platform at a glance for the web console: counters and gauges from its own metrics, and the tenant's devices. */
import { HttpApiEndpoint, HttpApiGroup, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { StorageUnavailable } from "../../storage/TelemetryStore.js"
import { storageUnavailableStatus } from "../ApiError.js"
import { AdminAuthentication } from "../Authentication.js"

const total = (what: string) =>
  Schema.NullOr(Schema.Number).annotations({
    description: `${what}, a counter since its processes started (rates are its change over time); null when no process in scope counts it`,
  })

export const Overview = Schema.Struct({
  at: Schema.Number.annotations({ description: "When the numbers were read, epoch ms" }),
  source: Schema.Literal("machine", "process").annotations({
    description:
      "`machine`: every process of this machine, gathered by the supervisor (`npm start`); `process`: this " +
      "serving process only (without a supervisor, or when it did not answer)",
  }),
  ingestedTotal: total("Messages appended to the stream by ingress, every tenant"),
  storedTotal: total("Readings stored, every tenant"),
  deadLettersTotal: total("Readings sent to the dead-letter table, every tenant"),
  streamLagMs: Schema.NullOr(Schema.Number).annotations({
    description:
      "How far the slowest shard's reader is behind the newest record, ms; null with no reader in scope",
  }),
  liveSubscribers: Schema.NullOr(Schema.Number).annotations({ description: "Live WebSocket subscribers" }),
  tenant: Schema.NullOr(
    Schema.Struct({
      devices: Schema.Number.annotations({ description: "The tenant's registered devices" }),
      online: Schema.Number.annotations({
        description: "Of them, those heard from within `onlineWindowMs` (the console's connected devices)",
      }),
      onlineWindowMs: Schema.Number,
    }),
  ).annotations({ description: "The key's tenant; null for an operator key" }),
}).annotations({ identifier: "Overview" })

export class OverviewApi extends HttpApiGroup.make("overview")
  .add(
    HttpApiEndpoint.get("get", "/v1/overview")
      .addSuccess(Overview)
      .annotate(
        OpenApi.Description,
        "Platform-wide counters (every tenant) and the key's tenant's devices. Any valid key; an operator key gets no tenant part.",
      ),
  )
  .addError(StorageUnavailable, storageUnavailableStatus)
  .middleware(AdminAuthentication)
  .annotate(OpenApi.Title, "Overview")
  .annotate(OpenApi.Description, "The platform at a glance, from its own metrics") {}
