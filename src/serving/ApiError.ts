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
