/** Probes, metrics, the OpenAPI document and the docs page, over real HTTP. */
import { expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { Metrics } from "../../src/observability/Metrics.js"
import { Readiness } from "../../src/serving/Readiness.js"
import { get, TestServing } from "./harness.js"

layer(TestServing, { timeout: 120_000 })("serving health, metrics and docs", (it) => {
  it.effect("answers /healthz, and /readyz 200 only while ready and the store answers", () =>
    Effect.gen(function* () {
      const health = yield* get("/healthz")
      expect(health.status).toBe(200)
      expect(health.json).toEqual({ status: "ok" })
      expect((yield* get("/readyz")).json).toEqual({ status: "ready" })
      const readiness = yield* Readiness
      yield* readiness.set(false)
      const draining = yield* get("/readyz")
      expect(draining.status).toBe(503)
      expect(draining.json).toEqual({ _tag: "NotReady", message: "starting or shutting down" })
      expect((yield* get("/healthz")).status).toBe(200)
      yield* readiness.set(true)
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
      expect(Object.keys(spec.paths).sort()).toEqual(
        expect.arrayContaining([
          "/v1/telemetry",
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
