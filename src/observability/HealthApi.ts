/**
 * Probes and metrics for orchestrators and Prometheus; no authentication. Every HTTP listener of
 * every process serves this group, so each process can be probed and scraped on its own.
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { ROLES } from "./Health.js"

const Role = Schema.Literal(...ROLES)

const RoleState = Schema.Struct({
  ready: Schema.Boolean,
  reason: Schema.optional(Schema.String),
})

const ChildState = Schema.Struct({
  name: Schema.String,
  roles: Schema.Array(Role),
  pid: Schema.NullOr(Schema.Number),
  state: Schema.Literal("starting", "running", "restarting", "stopping", "stopped"),
  restarts: Schema.Number,
  lastExit: Schema.NullOr(Schema.String),
})

/** Not ready: a role is starting, shutting down, or its probe failed. `roles` says which and why. */
export class NotReady extends Schema.TaggedError<NotReady>()(
  "NotReady",
  { message: Schema.String, roles: Schema.Record({ key: Schema.String, value: RoleState }) },
  HttpApiSchema.annotations({ status: 503, description: "Not ready to serve traffic" }),
) {}

/** The Prometheus text exposition format. */
export const prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

export class HealthApi extends HttpApiGroup.make("health")
  .add(
    HttpApiEndpoint.get("healthz", "/healthz")
      .addSuccess(
        Schema.Struct({
          status: Schema.Literal("ok"),
          pid: Schema.Number,
          roles: Schema.Array(Role),
          supervisor: Schema.optional(Schema.Struct({ children: Schema.Array(ChildState) })),
        }),
      )
      .annotate(
        OpenApi.Description,
        "Liveness: the process answers. Says which roles it runs and, under `npm start`'s supervisor, the state of every process of the machine.",
      ),
  )
  .add(
    HttpApiEndpoint.get("readyz", "/readyz")
      .addSuccess(
        Schema.Struct({
          status: Schema.Literal("ready"),
          roles: Schema.Record({ key: Schema.String, value: RoleState }),
        }),
      )
      .addError(NotReady)
      .annotate(
        OpenApi.Description,
        "Readiness: every role of this process is started, not shutting down, and its probe answers (processor and serving: the store answers a query).",
      ),
  )
  .add(
    HttpApiEndpoint.get("metrics", "/metrics")
      .addSuccess(HttpApiSchema.Text({ contentType: prometheusContentType }))
      .annotate(OpenApi.Description, "Prometheus metrics of this process, labelled with its role."),
  )
  .annotate(OpenApi.Title, "Health")
  .annotate(OpenApi.Description, "Liveness, readiness and metrics") {}
