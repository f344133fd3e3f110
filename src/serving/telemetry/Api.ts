/** A device's stored readings: raw history, time-bucketed aggregates, and the latest reading. */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { StorageUnavailable } from "../../storage/TelemetryStore.js"
import { BadRequest, DeviceNotFound, storageUnavailableStatus } from "../ApiError.js"
import { Authentication } from "../Authentication.js"

/** One reading after its device class transform; also the frame format of the live feed. */
export const Reading = Schema.Struct({
  deviceId: Schema.String,
  deviceClass: Schema.String,
  classVersion: Schema.optional(
    Schema.Number.annotations({ description: "The version of the device class that decoded it" }),
  ),
  msgId: Schema.String,
  ts: Schema.Number.annotations({ description: "Device time, epoch ms" }),
  receivedAt: Schema.Number.annotations({ description: "Ingress time, epoch ms" }),
  values: Schema.Record({
    key: Schema.String,
    value: Schema.Union(Schema.Number, Schema.Boolean, Schema.String),
  }),
})

/** The device has no stored reading yet. */
export class NoReadings extends Schema.TaggedError<NoReadings>()(
  "NoReadings",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 404, description: "The device has no stored reading" }),
) {}

const DevicePath = Schema.Struct({ deviceId: Schema.String })

const time = (what: string) =>
  Schema.optional(Schema.String).annotations({
    description: `${what}: ISO-8601 with a time zone (2024-05-01T12:00:00Z) or epoch milliseconds`,
  })

export class TelemetryApi extends HttpApiGroup.make("telemetry")
  .add(
    HttpApiEndpoint.get("history", "/v1/devices/:deviceId/telemetry")
      .setPath(DevicePath)
      .setUrlParams(
        Schema.Struct({
          from: time("Inclusive start, default the beginning"),
          to: time("Exclusive end, default the end of time"),
          limit: Schema.optional(Schema.String).annotations({
            description: "Readings per page, 1-1000, default 100",
          }),
          cursor: Schema.optional(Schema.String).annotations({
            description: "`nextCursor` of the previous page",
          }),
        }),
      )
      .addSuccess(
        Schema.Struct({
          readings: Schema.Array(Reading),
          nextCursor: Schema.optional(Schema.String),
        }),
      )
      .addError(BadRequest)
      .annotate(OpenApi.Description, "Raw readings by device time, oldest first, paginated."),
  )
  .add(
    HttpApiEndpoint.get("aggregates", "/v1/devices/:deviceId/aggregates")
      .setPath(DevicePath)
      .setUrlParams(
        Schema.Struct({
          from: time("Inclusive start, default one hour before `to`"),
          to: time("Exclusive end, default now"),
          interval: Schema.optional(Schema.String).annotations({
            description: "Bucket width: 500ms, 10s, 1m, 1h, 1d or milliseconds; default 1m",
          }),
          fn: Schema.optional(Schema.String).annotations({
            description: "Comma-separated functions of avg, min, max, sum, count; default avg",
          }),
          fields: Schema.optional(Schema.String).annotations({
            description:
              "Comma-separated number, integer or boolean fields of the device class (booleans as 0/1); default all of them",
          }),
        }),
      )
      .addSuccess(
        Schema.Struct({
          from: Schema.Number,
          to: Schema.Number,
          intervalMs: Schema.Number,
          buckets: Schema.Array(
            Schema.Struct({
              start: Schema.Number.annotations({ description: "Bucket start, epoch ms" }),
              values: Schema.Record({ key: Schema.String, value: Schema.NullOr(Schema.Number) }).annotations({
                description:
                  "`<fn>_<field>` -> value; null when the bucket has no value for the field (count: 0)",
              }),
            }),
          ),
        }),
      )
      .addError(BadRequest)
      .annotate(
        OpenApi.Description,
        "Buckets aligned to multiples of the interval since the epoch, oldest first; buckets without readings are omitted.",
      ),
  )
  .add(
    HttpApiEndpoint.get("latest", "/v1/devices/:deviceId/latest")
      .setPath(DevicePath)
      .addSuccess(Reading)
      .addError(NoReadings)
      .annotate(OpenApi.Description, "The newest reading by device time (not by arrival)."),
  )
  .addError(DeviceNotFound)
  .addError(StorageUnavailable, storageUnavailableStatus)
  .middleware(Authentication)
  .annotate(OpenApi.Title, "Telemetry")
  .annotate(OpenApi.Description, "A device's stored readings") {}
