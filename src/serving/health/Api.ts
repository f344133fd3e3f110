/** Probes and metrics for orchestrators and Prometheus; no authentication. */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"

/** Not ready: starting, shutting down, or the store does not answer. `message` says which. */
export class NotReady extends Schema.TaggedError<NotReady>()(
  "NotReady",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 503, description: "Not ready to serve traffic" }),
) {}

/** The Prometheus text exposition format. */
export const prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

export class HealthApi extends HttpApiGroup.make("health")
  .add(
    HttpApiEndpoint.get("healthz", "/healthz")
      .addSuccess(Schema.Struct({ status: Schema.Literal("ok") }))
      .annotate(OpenApi.Description, "Liveness: the process answers."),
  )
  .add(
    HttpApiEndpoint.get("readyz", "/readyz")
      .addSuccess(Schema.Struct({ status: Schema.Literal("ready") }))
      .addError(NotReady)
      .annotate(OpenApi.Description, "Readiness: started, not shutting down, and the store answers a query."),
  )
  .add(
    HttpApiEndpoint.get("metrics", "/metrics")
      .addSuccess(HttpApiSchema.Text({ contentType: prometheusContentType }))
      .annotate(OpenApi.Description, "Prometheus metrics."),
  )
  .annotate(OpenApi.Title, "Health")
  .annotate(OpenApi.Description, "Liveness, readiness and metrics") {}
