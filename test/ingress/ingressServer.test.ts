/**
 * The ingress role's own HTTP listener over real HTTP: device ingest, this process's health and
 * metrics, the ingest API's own reference, and nothing of the serving API.
 */
import { HttpServer } from "@effect/platform"
import { expect, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as IngressHttpServer from "../../src/ingress/IngressHttpServer.js"
import * as Health from "../../src/observability/Health.js"
import { dependencies, ingressConfig } from "./harness.js"

const TestIngress = IngressHttpServer.layerWith({
  ...ingressConfig,
  httpHost: "127.0.0.1",
  httpPort: 0,
}).pipe(Layer.provideMerge(Layer.merge(dependencies(), Health.layerReady(["ingress"]))))

const request = (path: string, init?: RequestInit) =>
  Effect.flatMap(HttpServer.HttpServer, ({ address }) =>
    Effect.promise(async () => {
      const port = address._tag === "TcpAddress" ? address.port : 0
      const response = await fetch(`http://127.0.0.1:${port}${path}`, init)
      const text = await response.text()
      return { status: response.status, text }
    }),
  )

layer(TestIngress, { timeout: 60_000 })("the ingress listener", (it) => {
  it.effect("takes device readings, answers its own probes and metrics, and serves no tenant API", () =>
    Effect.gen(function* () {
      const accepted = yield* request("/v1/telemetry", {
        method: "POST",
        headers: { authorization: "Bearer thermo-1-secret" },
        body: JSON.stringify({ temperature: 21 }),
      })
      expect(accepted.status, accepted.text).toBe(202)
      const health = yield* request("/healthz")
      expect(JSON.parse(health.text)).toEqual({ status: "ok", pid: process.pid, roles: ["ingress"] })
      const ready = yield* request("/readyz")
      expect(JSON.parse(ready.text)).toEqual({ status: "ready", roles: { ingress: { ready: true } } })
      const metrics = yield* request("/metrics")
      expect(metrics.text).toContain('sluice_ingested_messages_total{transport="http"} 1')
      const spec = JSON.parse((yield* request("/openapi.json")).text) as { paths: Record<string, unknown> }
      expect(Object.keys(spec.paths).sort()).toEqual([
        "/healthz",
        "/metrics",
        "/readyz",
        "/v1/provision",
        "/v1/telemetry",
      ])
      expect((yield* request("/v1/devices", { headers: { authorization: "Bearer x" } })).status).toBe(404)
    }),
  )
})
