/** Handlers of the telemetry group: every one resolves the device within the caller's tenant first. */
import { HttpApiBuilder } from "@effect/platform"
import { Effect, Option } from "effect"
import { TelemetryStore } from "../../storage/TelemetryStore.js"
import { Tenancy } from "../../tenancy/Tenancy.js"
import { Api } from "../Api.js"
import { BadRequest } from "../ApiError.js"
import { ownDevice } from "../OwnDevice.js"
import * as Query from "../Query.js"
import { NoReadings } from "./Api.js"

const hour = 3_600_000

// The store validates arguments too; serving checks first to name the parameter, so only a
// cursor (opaque to serving) should ever be refused here.
const refusedQuery = (e: { readonly reason: string }) => new BadRequest({ message: e.reason })
const refusedCursor = () =>
  new BadRequest({ message: "cursor: not a cursor this API handed out; pass back nextCursor unchanged" })

export const HttpTelemetryLive = HttpApiBuilder.group(Api, "telemetry", (handlers) =>
  Effect.gen(function* () {
    const store = yield* TelemetryStore
    const tenancy = yield* Tenancy
    return handlers
      .handle(
        "history",
        Effect.fn("Telemetry.history")(function* ({ path, urlParams }) {
          const device = yield* ownDevice(tenancy, path.deviceId)
          const range = yield* Query.timeRange(urlParams, {
            to: Query.endOfTime,
            from: () => Query.startOfTime,
          })
          const limit = yield* Query.limit(urlParams.limit, { fallback: 100, max: 1000 })
          const page = yield* store
            .history(device.tenantId, device.deviceId, range, { limit, cursor: urlParams.cursor })
            .pipe(Effect.catchTags({ InvalidQuery: refusedQuery, InvalidCursor: refusedCursor }))
          return page.nextCursor === undefined
            ? { readings: page.rows }
            : { readings: page.rows, nextCursor: page.nextCursor }
        }),
      )
      .handle(
        "aggregates",
        Effect.fn("Telemetry.aggregates")(function* ({ path, urlParams }) {
          const device = yield* ownDevice(tenancy, path.deviceId)
          const range = yield* Query.timeRange(urlParams, { to: Date.now(), from: (to) => to - hour })
          const intervalMs = yield* Query.interval(urlParams.interval, 60_000)
          yield* Query.bucketCount(range, intervalMs)
          const fns = yield* Query.fns(urlParams.fn)
          const deviceClass = yield* Option.match(tenancy.deviceClass(device.deviceClass), {
            onNone: () =>
              Effect.dieMessage(
                `device ${device.deviceId} has class ${device.deviceClass}, which is not configured`,
              ),
            onSome: Effect.succeed,
          })
          const fields = yield* Query.fields(urlParams.fields, deviceClass)
          const buckets = yield* store
            .aggregate(device.tenantId, device.deviceId, range, { intervalMs, fields, fns })
            .pipe(Effect.catchTag("InvalidQuery", refusedQuery))
          return { from: range.from, to: range.to, intervalMs, buckets }
        }),
      )
      .handle(
        "latest",
        Effect.fn("Telemetry.latest")(function* ({ path }) {
          const device = yield* ownDevice(tenancy, path.deviceId)
          const latest = yield* store.latest(device.tenantId, device.deviceId)
          return yield* Option.match(latest, {
            onNone: () => Effect.fail(new NoReadings({ message: "the device has no stored reading" })),
            onSome: Effect.succeed,
          })
        }),
      )
  }),
)
