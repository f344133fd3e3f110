/** Messages that failed their device class, with the reason, for the tenant to inspect and replay. */
import { HttpApiEndpoint, HttpApiGroup, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { StorageUnavailable } from "../../storage/TelemetryStore.js"
import { BadRequest, storageUnavailableStatus } from "../ApiError.js"
import { Authentication } from "../Authentication.js"

/** A message kept aside with the reason it failed. */
export const DeadLetter = Schema.Struct({
  deviceId: Schema.String,
  receivedAt: Schema.Number.annotations({ description: "Ingress time, epoch ms" }),
  shardId: Schema.String.annotations({ description: "Stream shard of the record (for replay)" }),
  sequenceNumber: Schema.String.annotations({ description: "Stream sequence number of the record" }),
  reason: Schema.String,
  raw: Schema.String.annotations({ description: "The payload as received" }),
})

/** A page of the tenant's dead letters. */
export const DeadLetterPage = Schema.Struct({
  deadLetters: Schema.Array(DeadLetter).annotations({
    description: "Newest first: by receivedAt, then shardId, then sequenceNumber, all descending",
  }),
  nextCursor: Schema.optional(Schema.String).annotations({
    description: "Pass back as `cursor` (with the same filters) for the next page; absent on the last page",
  }),
})

export class DeadLettersApi extends HttpApiGroup.make("deadLetters")
  .add(
    HttpApiEndpoint.get("list", "/v1/dead-letters")
      .setUrlParams(
        Schema.Struct({
          limit: Schema.optional(Schema.String).annotations({ description: "1-1000, default 100" }),
          cursor: Schema.optional(Schema.String).annotations({
            description: "The nextCursor of the previous page, unchanged",
          }),
          deviceId: Schema.optional(Schema.String).annotations({
            description: "Only this device's dead letters (exact id)",
          }),
          reason: Schema.optional(Schema.String).annotations({
            description: "Only dead letters whose reason contains this, ignoring case (1-200 characters)",
          }),
        }),
      )
      .addSuccess(DeadLetterPage)
      .addError(BadRequest)
      .annotate(
        OpenApi.Description,
        "The tenant's dead letters, newest first, a page at a time: follow nextCursor until it is absent.",
      ),
  )
  .addError(StorageUnavailable, storageUnavailableStatus)
  .middleware(Authentication)
  .annotate(OpenApi.Title, "Dead letters")
  .annotate(OpenApi.Description, "Messages that failed their device class") {}
