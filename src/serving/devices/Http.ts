/** Handlers of the devices group. */
import { HttpApiBuilder } from "@effect/platform"
import { Effect, Either } from "effect"
import { TelemetryStore } from "../../storage/TelemetryStore.js"
import { Tenancy } from "../../tenancy/Tenancy.js"
import { Api } from "../Api.js"
import { BadRequest } from "../ApiError.js"
import { CurrentTenant } from "../Authentication.js"
import * as Query from "../Query.js"
import * as DeviceCursor from "./DeviceCursor.js"
import * as DeviceList from "./DeviceList.js"
import * as DevicesConfig from "./DevicesConfig.js"

const invalid = (message: string) => Either.left(new BadRequest({ message }))

const status = (raw: string | undefined): Either.Either<DeviceList.Status | undefined, BadRequest> =>
  raw === undefined || raw === "online" || raw === "offline"
    ? Either.right(raw)
    : invalid(`status: expected 'online' or 'offline', got '${raw.slice(0, 100)}'`)

// Device ids are at most 100 characters: a longer prefix could only ever match nothing.
const prefix = (raw: string | undefined): Either.Either<string, BadRequest> =>
  raw === undefined || raw.length <= 100
    ? Either.right(raw ?? "")
    : invalid(`prefix: at most 100 characters (device ids are 1-100), got ${raw.length}`)

const deviceClass = (raw: string | undefined): Either.Either<string | undefined, BadRequest> =>
  raw === undefined || raw !== "" ? Either.right(raw) : invalid("class: expected a device class name, got ''")

export const HttpDevicesLive = HttpApiBuilder.group(Api, "devices", (handlers) =>
  Effect.gen(function* () {
    const store = yield* TelemetryStore
    const tenancy = yield* Tenancy
    const onlineWindowMs = yield* DevicesConfig.onlineWindowMs
    return handlers.handle(
      "list",
      Effect.fn("Devices.list")(function* ({ urlParams }) {
        const { tenantId } = yield* CurrentTenant
        const query = {
          limit: yield* Query.limit(urlParams.limit, { fallback: 100, max: 1000 }),
          after: urlParams.cursor === undefined ? undefined : yield* DeviceCursor.decode(urlParams.cursor),
          prefix: yield* prefix(urlParams.prefix),
          deviceClass: yield* deviceClass(urlParams.class),
          status: yield* status(urlParams.status),
          // Wall time, not the Effect Clock: lastSeen is the ingress's wall time of arrival.
          onlineSince: Date.now() - onlineWindowMs,
        }
        yield* Effect.annotateCurrentSpan({ tenant: tenantId, status: query.status ?? "any" })
        // The registry says which devices exist; the store only knows those that sent data.
        const page = yield* DeviceList.page(store, tenantId, tenancy.deviceIndex(tenantId), query)
        return {
          devices: page.devices,
          ...(page.after === undefined ? {} : { nextCursor: DeviceCursor.encode(page.after) }),
          total: page.total,
          onlineWindowMs,
        }
      }),
    )
  }),
)
