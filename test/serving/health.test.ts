/** Probes, metrics, the OpenAPI document and the docs page, over real HTTP. */
import { expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { Health } from "../../src/observability/Health.js"
import { Metrics } from "../../src/observability/Metrics.js"
import { get, TestServing } from "./harness.js"

layer(TestServing, { timeout: 120_000 })("serving health, metrics and docs", (it) => {
  it.effect(
    "answers /healthz with its roles, and /readyz 200 only while every role is ready and probed",
    () =>
      Effect.gen(function* () {
        const liveness = yield* get("/healthz")
        expect(liveness.status).toBe(200)
        expect(liveness.json).toEqual({ status: "ok", pid: process.pid, roles: ["serving"] })
        expect((yield* get("/readyz")).json).toEqual({ status: "ready", roles: { serving: { ready: true } } })
        const health = yield* Health
        yield* health.set("serving", { ready: false, reason: "shutting down" })
        const draining = yield* get("/readyz")
        expect(draining.status).toBe(503)
        expect(draining.json).toEqual({
          _tag: "NotReady",
          message: "serving: shutting down",
          roles: { serving: { ready: false, reason: "shutting down" } },
        })
        expect((yield* get("/healthz")).status).toBe(200)
        // A failing probe makes the role not ready, with the probe's reason.
        yield* health.set("serving", { ready: true }, Effect.fail("store: connection refused"))
        const probed = yield* get("/readyz")
        expect(probed.status).toBe(503)
        expect(probed.json).toMatchObject({ message: "serving: store: connection refused" })
        health.setSupervisor([
          {
            name: "ingress",
            roles: ["ingress"],
            pid: 7,
            state: "restarting",
            restarts: 1,
            lastExit: "killed by SIGKILL",
          },
        ])
        expect((yield* get("/healthz")).json).toMatchObject({
          supervisor: { children: [{ name: "ingress", state: "restarting", restarts: 1 }] },
        })
        yield* health.set("serving", { ready: true })
        expect((yield* get("/readyz")).status).toBe(200)
      }),
  )

  it.effect("serves Prometheus text at /metrics", () =>
    Effect.gen(function* () {
      const metrics = yield* Metrics
      metrics.ingested.inc({ transport: "http" }, 3)
      const res = yield* get("/metrics")
      expect(res.status).toBe(200)
      expect(res.contentType).toBe("text/plain; version=0.0.4; charset=utf-8")
      expect(res.text).toContain("# TYPE sluice_live_subscribers gauge")
      expect(res.text).toContain('sluice_ingested_messages_total{transport="http"} 3')
    }),
  )

  it.effect("publishes the OpenAPI document of every endpoint, with errors and security", () =>
    Effect.gen(function* () {
      const res = yield* get("/openapi.json")
      expect(res.status).toBe(200)
      const spec = res.json as {
        info: { title: string; version: string }
        paths: Record<string, Record<string, { responses: Record<string, unknown>; security?: unknown }>>
        components: { securitySchemes: Record<string, unknown> }
      }
      expect(spec.info.title).toBe("Sluice")
      expect(spec.paths["/v1/telemetry"]).toBeUndefined() // device ingest is the ingress listener's
      expect(Object.keys(spec.paths).sort()).toEqual(
        expect.arrayContaining([
          "/v1/devices",
          "/v1/devices/{deviceId}/telemetry",
          "/v1/devices/{deviceId}/aggregates",
          "/v1/devices/{deviceId}/latest",
          "/v1/dead-letters",
          "/v1/live",
          "/healthz",
          "/readyz",
          "/metrics",
        ]),
      )
      const history = spec.paths["/v1/devices/{deviceId}/telemetry"]!.get!
      expect(Object.keys(history.responses).sort()).toEqual(["200", "400", "401", "404", "503"])
      expect(history.security).toBeDefined()
      expect(spec.paths["/healthz"]!.get!.security ?? []).toEqual([])
      expect(Object.keys(spec.components.securitySchemes).length).toBeGreaterThanOrEqual(2)
    }),
  )

  it.effect("serves the API reference at /docs", () =>
    Effect.gen(function* () {
      const res = yield* get("/docs")
      expect(res.status).toBe(200)
      expect(res.contentType).toContain("text/html")
      expect(res.text).toContain("Sluice")
    }),
  )
})
