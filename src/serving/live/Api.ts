/** Live readings over a WebSocket, as they are stored. */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { DeviceNotFound } from "../ApiError.js"
import { LiveAuthentication } from "../Authentication.js"

/** A plain GET reached the WebSocket endpoint. */
export class UpgradeRequired extends Schema.TaggedError<UpgradeRequired>()(
  "UpgradeRequired",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 426, description: "Connect with a WebSocket client" }),
) {}

export class LiveApi extends HttpApiGroup.make("live")
  .add(
    HttpApiEndpoint.get("subscribe", "/v1/live")
      .setUrlParams(
        Schema.Struct({
          device: Schema.optional(Schema.String).annotations({
            description: "One device of the tenant; absent = every device of the tenant",
          }),
        }),
      )
      .addSuccess(HttpApiSchema.Empty(101).annotations({ description: "Switching Protocols" }))
      .addError(DeviceNotFound)
      .addError(UpgradeRequired)
      .annotate(
        OpenApi.Description,
        "WebSocket upgrade. Each stored reading arrives as one JSON text frame shaped like a " +
          "`Reading`. The key may also be passed as `?api_key=`, since browsers cannot set " +
          "headers on a WebSocket. A client too slow to keep up loses its oldest readings " +
          "(fill the gap from history).",
      ),
  )
  .middleware(LiveAuthentication)
  .annotate(OpenApi.Title, "Live")
  .annotate(OpenApi.Description, "Live readings over a WebSocket") {}
