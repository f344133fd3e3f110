/** The tenant's device registry, with when each device was last heard from. */
import { HttpApiEndpoint, HttpApiGroup, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { StorageUnavailable } from "../../storage/TelemetryStore.js"
import { storageUnavailableStatus } from "../ApiError.js"
import { Authentication } from "../Authentication.js"

/** A device of the tenant. */
export const DeviceSummary = Schema.Struct({
  deviceId: Schema.String,
  deviceClass: Schema.String,
  lastSeen: Schema.NullOr(Schema.Number).annotations({
    description: "Newest ingress time stored for the device, epoch ms; null if it never sent data",
  }),
})

export class DevicesApi extends HttpApiGroup.make("devices")
  .add(
    HttpApiEndpoint.get("list", "/v1/devices").addSuccess(
      Schema.Struct({ devices: Schema.Array(DeviceSummary) }),
    ),
  )
  .addError(StorageUnavailable, storageUnavailableStatus)
  .middleware(Authentication)
  .annotate(OpenApi.Title, "Devices")
  .annotate(OpenApi.Description, "The tenant's devices") {}
