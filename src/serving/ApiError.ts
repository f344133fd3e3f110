/**
 * Errors that cross HTTP, shared by the API groups. Each is a tagged JSON body
 * `{ "_tag": ..., "message": ... }` with its status annotated, so the OpenAPI document lists it.
 */
import { HttpApiSchema } from "@effect/platform"
import { Schema } from "effect"

/** No API key, or one that belongs to no tenant (the two look alike). */
export class Unauthorized extends Schema.TaggedError<Unauthorized>()(
  "Unauthorized",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 401, description: "Missing or invalid API key" }),
) {}

/**
 * The device does not exist, or belongs to another tenant. The body carries nothing from the
 * request, so a foreign device's answer is byte-for-byte a missing device's answer.
 */
export class DeviceNotFound extends Schema.TaggedError<DeviceNotFound>()(
  "DeviceNotFound",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 404, description: "No such device for this tenant" }),
) {
  static readonly instance = new DeviceNotFound({ message: "device not found" })
}

/** A query parameter is malformed or out of range; `message` names it and says why. */
export class BadRequest extends Schema.TaggedError<BadRequest>()(
  "BadRequest",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 400, description: "A query parameter is malformed or out of range" }),
) {}

/** The storage status: a store failure means "retry later", never "your request was wrong". */
export const storageUnavailableStatus = { status: 503 } as const

/**
 * The key may not do this: a read key writing, a tenant key managing tenants, an operator key
 * reading a tenant's data, or a shared device class changed through the API. `message` says which.
 */
export class Forbidden extends Schema.TaggedError<Forbidden>()(
  "Forbidden",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 403, description: "The key may not do this; the message says why" }),
) {}

/** A problem in a request body: the field (a path like `definition.fields.temp.min`) and why. */
export const BodyProblem = Schema.Struct({
  field: Schema.String.annotations({
    description: "Path of the field in the body; empty for the whole body",
  }),
  reason: Schema.String,
})

/** The request body is not JSON, or not of the endpoint's schema, or breaks a rule; every problem is listed. */
export class InvalidBody extends Schema.TaggedError<InvalidBody>()(
  "InvalidBody",
  { message: Schema.String, problems: Schema.Array(BodyProblem) },
  HttpApiSchema.annotations({
    status: 400,
    description: "The request body is malformed or breaks a rule; `problems` names each field and why",
  }),
) {}

/** One refused row of a bulk request. */
export const BulkRowError = Schema.Struct({
  row: Schema.Number.annotations({
    description: "1-based position of the device in the request (CSV: data rows, the header not counted)",
  }),
  id: Schema.NullOr(Schema.String).annotations({ description: "The row's id, if it has one" }),
  reason: Schema.String,
})

/** A bulk request with bad rows: nothing was created. At most 100 rows are listed; `error_count` counts all. */
export class BulkRefused extends Schema.TaggedError<BulkRefused>()(
  "BulkRefused",
  {
    message: Schema.String,
    error_count: Schema.Number,
    errors: Schema.Array(BulkRowError),
  },
  HttpApiSchema.annotations({
    status: 400,
    description: "Some rows are bad: nothing was created. Lists each bad row (the first 100) and why",
  }),
) {}

/** The request conflicts with what exists: an id taken, a row managed by the configuration file. */
export class Conflict extends Schema.TaggedError<Conflict>()(
  "Conflict",
  { message: Schema.String },
  HttpApiSchema.annotations({
    status: 409,
    description: "Conflicts with what exists; the message says what",
  }),
) {}

/** No such tenant, or (for a tenant admin key) another tenant: the two look alike. */
export class TenantNotFound extends Schema.TaggedError<TenantNotFound>()(
  "TenantNotFound",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 404, description: "No such tenant" }),
) {
  static readonly instance = new TenantNotFound({ message: "tenant not found" })
}

/** No key with this id in the tenant. */
export class ApiKeyNotFound extends Schema.TaggedError<ApiKeyNotFound>()(
  "ApiKeyNotFound",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 404, description: "No such API key in this tenant" }),
) {
  static readonly instance = new ApiKeyNotFound({ message: "API key not found" })
}

/** No such device class, or another tenant's own class: the two look alike. */
export class DeviceClassNotFound extends Schema.TaggedError<DeviceClassNotFound>()(
  "DeviceClassNotFound",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 404, description: "No such device class for this tenant" }),
) {
  static readonly instance = new DeviceClassNotFound({ message: "device class not found" })
}

/** The request body is over the endpoint's limit. */
export class BodyTooLarge extends Schema.TaggedError<BodyTooLarge>()(
  "BodyTooLarge",
  { message: Schema.String, max_bytes: Schema.Number },
  HttpApiSchema.annotations({ status: 413, description: "The request body is over the endpoint's limit" }),
) {}

/** The device registry did not answer (or stayed busy with other writers): retry later. Nothing was changed. */
export class RegistryUnavailable extends Schema.TaggedError<RegistryUnavailable>()(
  "RegistryUnavailable",
  { message: Schema.String },
  HttpApiSchema.annotations({
    status: 503,
    description: "The device registry did not answer; nothing was changed, retry later",
  }),
) {}
