/**
 * The HTTP ingest contract: `POST /v1/telemetry`, authenticated by the device's own credential.
 * An `HttpApiGroup` named `ingest`, so the serving API (or an ingress-only server) adds it to its
 * `HttpApi` and its OpenAPI document; the handlers are in `HttpIngress.ts`.
 */
import {
  HttpApiEndpoint,
  HttpApiGroup,
  HttpApiMiddleware,
  HttpApiSchema,
  HttpApiSecurity,
  OpenApi,
} from "@effect/platform"
import { Context, Schema } from "effect"
import type { Device } from "../tenancy/Tenancy.js"

/** The device whose credential authenticated the current ingest request. */
export class CurrentDevice extends Context.Tag("sluice/ingress/CurrentDevice")<CurrentDevice, Device>() {}

/** No `Authorization: Bearer <device credential>`, or a credential that belongs to no device. */
export class DeviceUnauthorized extends Schema.TaggedError<DeviceUnauthorized>()(
  "DeviceUnauthorized",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 401, description: "Missing or unknown device credential" }),
) {}

/** The body is not JSON; `message` says where and why, `line`/`column` are 1-based. */
export class MalformedJson extends Schema.TaggedError<MalformedJson>()(
  "MalformedJson",
  { message: Schema.String, line: Schema.Int, column: Schema.Int },
  HttpApiSchema.annotations({ status: 400, description: "The body is not valid JSON" }),
) {}

/** The body is JSON, but not a reading object or a non-empty array of them (or not UTF-8). */
export class InvalidPayload extends Schema.TaggedError<InvalidPayload>()(
  "InvalidPayload",
  { message: Schema.String },
  HttpApiSchema.annotations({
    status: 400,
    description: "The body is not a JSON object or a non-empty array of objects",
  }),
) {}

/** The body is larger than `max_payload_bytes`; the connection is closed after this answer. */
export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()(
  "PayloadTooLarge",
  { message: Schema.String, maxBytes: Schema.Int },
  HttpApiSchema.annotations({ status: 413, description: "The body is larger than the ingest limit" }),
) {}

/** The stream is at its bound (or ingress at its request limit): retry after `Retry-After` seconds. */
export class IngestThrottled extends Schema.TaggedError<IngestThrottled>()(
  "IngestThrottled",
  { message: Schema.String, retryAfterSeconds: Schema.Int },
  HttpApiSchema.annotations({
    status: 429,
    description: "Pushback: nothing was stored; retry after the Retry-After header's seconds",
  }),
) {}

/** The stream cannot take the message now: retry after `Retry-After` seconds. */
export class IngestUnavailable extends Schema.TaggedError<IngestUnavailable>()(
  "IngestUnavailable",
  { message: Schema.String, retryAfterSeconds: Schema.Int },
  HttpApiSchema.annotations({
    status: 503,
    description:
      "The stream is unavailable: nothing was stored; retry after the Retry-After header's seconds",
  }),
) {}

/** Device authentication of the ingest endpoint: the bearer token is the device's credential. */
export class DeviceAuthentication extends HttpApiMiddleware.Tag<DeviceAuthentication>()(
  "sluice/ingress/DeviceAuthentication",
  {
    provides: CurrentDevice,
    failure: DeviceUnauthorized,
    security: { deviceCredential: HttpApiSecurity.bearer },
  },
) {}

/** The 202 answer: the body is durable in the stream at this position. */
export const Accepted = Schema.Struct({
  accepted: Schema.Int.annotations({ description: "Readings in the body (1 for an object)" }),
  shardId: Schema.String,
  sequenceNumber: Schema.String,
})
export type Accepted = typeof Accepted.Type

const Reading = Schema.Record({ key: Schema.String, value: Schema.Unknown }).annotations({
  description: "One reading as the device sends it; its device class decides which fields count",
})

const retryAfterHeader = {
  description: "Seconds to wait before retrying",
  schema: { type: "integer", minimum: 0 },
}

/** HttpApi has no response headers in its OpenAPI output; 429 and 503 carry Retry-After. */
const documentRetryAfter = (operation: Record<string, unknown>): Record<string, unknown> => {
  const responses = { ...(operation.responses as Record<string, Record<string, unknown>>) }
  for (const status of ["429", "503"]) {
    const response = responses[status]
    if (response !== undefined)
      responses[status] = { ...response, headers: { "Retry-After": retryAfterHeader } }
  }
  return { ...operation, responses }
}

/** `POST /v1/telemetry`, in a group named `ingest`. */
export class IngestApi extends HttpApiGroup.make("ingest")
  .add(
    HttpApiEndpoint.post("telemetry", "/v1/telemetry")
      .setPayload(Schema.Union(Reading, Schema.NonEmptyArray(Reading)))
      .addSuccess(Accepted, { status: 202 })
      .addError(MalformedJson)
      .addError(InvalidPayload)
      .addError(PayloadTooLarge)
      .addError(IngestThrottled)
      .addError(IngestUnavailable)
      .annotate(
        OpenApi.Description,
        "Ingests one reading (a JSON object) or several (a non-empty array of objects) from the device " +
          "whose credential is the bearer token. The tenant and device come from the credential, never " +
          "from the body. 202 means the body is durable in the stream, stored exactly as sent; " +
          "readings that fail their device class later go to the dead-letter table with the reason.",
      )
      .annotate(OpenApi.Transform, documentRetryAfter),
  )
  .middleware(DeviceAuthentication)
  .annotate(OpenApi.Title, "Ingest")
  .annotate(OpenApi.Description, "Device telemetry over HTTPS, authenticated by the device credential") {}
