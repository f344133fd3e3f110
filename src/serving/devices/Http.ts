/** Handlers of the devices group. */
import { HttpApiBuilder } from "@effect/platform"
import { Effect } from "effect"
import { TelemetryStore } from "../../storage/TelemetryStore.js"
import { Tenancy } from "../../tenancy/Tenancy.js"
import { Api } from "../Api.js"
import { CurrentTenant } from "../Authentication.js"

export const HttpDevicesLive = HttpApiBuilder.group(Api, "devices", (handlers) =>
  Effect.gen(function* () {
    const store = yield* TelemetryStore
    const tenancy = yield* Tenancy
    return handlers.handle(
      "list",
      Effect.fn("Devices.list")(function* () {
        const { tenantId } = yield* CurrentTenant
        // The registry says which devices exist; the store only knows those that sent data.
        const activity = yield* store.activity(tenantId)
        const lastSeen = new Map(activity.map((a) => [a.deviceId, a.lastSeen]))
        return {
          devices: tenancy.devices(tenantId).map((d) => ({
            deviceId: d.deviceId,
            deviceClass: d.deviceClass,
            lastSeen: lastSeen.get(d.deviceId) ?? null,
          })),
        }
      }),
    )
  }),
)
