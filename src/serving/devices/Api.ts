/** The tenant's device registry, a page at a time, with when each device was last heard from. */
import { HttpApiEndpoint, HttpApiGroup, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { StorageUnavailable } from "../../storage/TelemetryStore.js"
import { BadRequest, storageUnavailableStatus } from "../ApiError.js"
import { Authentication } from "../Authentication.js"

/** A device of the tenant. */
export const DeviceSummary = Schema.Struct({
  deviceId: Schema.String,
  deviceClass: Schema.String,
  enabled: Schema.Boolean.annotations({
    description: "False: the device is disabled (refused at connect) until enabled again",
  }),
  lastSeen: Schema.NullOr(Schema.Number).annotations({
    description: "Newest ingress time stored for the device, epoch ms; null if it never sent data",
  }),
  online: Schema.Boolean.annotations({
    description: "lastSeen is within onlineWindowMs of now",
  }),
})

/** A page of the tenant's devices. */
export const DevicePage = Schema.Struct({
  devices: Schema.Array(DeviceSummary).annotations({ description: "Sorted by deviceId ascending" }),
  nextCursor: Schema.optional(Schema.String).annotations({
    description:
      "Pass back as `cursor` (with the same filters) for the next page; absent on the last page. " +
      "With `status`, a page may hold fewer than `limit` devices and still have a nextCursor: " +
      "each request looks at a bounded number of devices",
  }),
  total: Schema.Number.annotations({
    description: "Devices matching `prefix` and `class`, whatever their status",
  }),
  onlineWindowMs: Schema.Number.annotations({
    description: "How recently a device must have been heard from to be online (SLUICE_ONLINE_WINDOW_MS)",
  }),
})

export class DevicesApi extends HttpApiGroup.make("devices")
  .add(
    HttpApiEndpoint.get("list", "/v1/devices")
      .setUrlParams(
        Schema.Struct({
          limit: Schema.optional(Schema.String).annotations({ description: "1-1000, default 100" }),
          cursor: Schema.optional(Schema.String).annotations({
            description: "The nextCursor of the previous page, unchanged",
          }),
          prefix: Schema.optional(Schema.String).annotations({
            description: "Only devices whose id starts with this (at most 100 characters)",
          }),
          class: Schema.optional(Schema.String).annotations({
            description: "Only devices of this device class",
          }),
          status: Schema.optional(Schema.String).annotations({
            description: "`online` (heard from within onlineWindowMs) or `offline` (not, or never)",
          }),
        }),
      )
      .addSuccess(DevicePage)
      .addError(BadRequest)
      .annotate(
        OpenApi.Description,
        "The tenant's devices, sorted by id, a page at a time: follow nextCursor until it is absent.",
      ),
  )
  .addError(StorageUnavailable, storageUnavailableStatus)
  .middleware(Authentication)
  .annotate(OpenApi.Title, "Devices")
  .annotate(OpenApi.Description, "The tenant's devices") {}
