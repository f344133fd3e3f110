/**
 * Guarantee 4 at ingress: a tenant over its quota is throttled (HTTP 429 with Retry-After, MQTT
 * PUBACKs held back) while another tenant's messages go straight through. Real server, real
 * clients, real embedded log.
 */
import { createServer } from "node:http"
import { HttpApi, HttpApiBuilder, HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import mqtt from "mqtt"
import * as HttpIngress from "../../src/ingress/HttpIngress.js"
import { IngestApi } from "../../src/ingress/IngestApi.js"
import * as MqttBroker from "../../src/ingress/MqttBroker.js"
import type { PlatformConfig } from "../../src/tenancy/PlatformConfig.js"
import { allRecords, dependencies, device1, device3, envelopeOf, ingressConfig, platform } from "./harness.js"

/** acme may send 5 messages/s (HTTP test) or 20/s (MQTT test); globex has no quota. */
const limited = (perSecond: number): PlatformConfig => ({
  ...platform,
  tenants: platform.tenants.map((t) => (t.id === "acme" ? { ...t, max_messages_per_second: perSecond } : t)),
})

class TestApi extends HttpApi.make("quota-test").add(IngestApi) {}

describe("per-tenant ingest quotas", () => {
  it.scopedLive(
    "HTTP: the tenant over its quota gets 429 with Retry-After, the other tenant is untouched",
    () =>
      Effect.gen(function* () {
        const { address } = yield* HttpServer.HttpServer
        const port = address._tag === "TcpAddress" ? address.port : 0
        const post = (credential: string) =>
          Effect.promise(() =>
            fetch(`http://127.0.0.1:${port}/v1/telemetry`, {
              method: "POST",
              headers: { authorization: `Bearer ${credential}`, "content-type": "application/json" },
              body: JSON.stringify({ temperature: 21 }),
            }),
          )
        const acme = []
        const globex = []
        for (let i = 0; i < 10; i++) {
          acme.push(yield* post(device1.credential))
          globex.push(yield* post(device3.credential))
        }
        const accepted = acme.filter((r) => r.status === 202).length
        expect(accepted).toBeGreaterThanOrEqual(5)
        expect(accepted).toBeLessThan(10)
        const throttled = acme.find((r) => r.status === 429)!
        expect(Number(throttled.headers.get("retry-after"))).toBeGreaterThanOrEqual(1)
        expect(yield* Effect.promise(() => throttled.json())).toMatchObject({ _tag: "IngestThrottled" })
        expect(globex.map((r) => r.status)).toEqual(Array(10).fill(202))
      }).pipe(
        Effect.provide(
          HttpApiBuilder.serve().pipe(
            Layer.provide(HttpApiBuilder.api(TestApi)),
            Layer.provide(HttpIngress.layerWith(TestApi, ingressConfig)),
            Layer.provideMerge(NodeHttpServer.layer(createServer, { host: "127.0.0.1", port: 0 })),
            Layer.provideMerge(dependencies({ platform: limited(5) })),
          ),
        ),
      ),
  )

  it.scopedLive(
    "MQTT: PUBACKs of the tenant over its quota are held back, nothing is lost, the other tenant is not slowed",
    () =>
      Effect.gen(function* () {
        const { port } = yield* MqttBroker.make(ingressConfig)
        const connect = (device: { id: string; credential: string }) =>
          Effect.acquireRelease(
            Effect.promise(() =>
              mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
                username: device.id,
                password: device.credential,
                reconnectPeriod: 0,
              }),
            ),
            (client) => Effect.promise(() => client.endAsync(true)),
          )
        const acme = yield* connect(device1)
        const globex = yield* connect(device3)
        const burst = (client: mqtt.MqttClient, deviceId: string) =>
          Effect.promise(async () => {
            const start = performance.now()
            await Promise.all(
              Array.from({ length: 60 }, (_, i) =>
                client.publishAsync(`devices/${deviceId}/telemetry`, JSON.stringify({ temperature: i }), {
                  qos: 1,
                }),
              ),
            )
            return performance.now() - start
          })
        const [acmeMs, globexMs] = yield* Effect.all([burst(acme, device1.id), burst(globex, device3.id)], {
          concurrency: "unbounded",
        })
        // 60 messages at 20/s with a 20-message burst: the last PUBACK cannot come before ~2 s.
        expect(acmeMs).toBeGreaterThan(1500)
        expect(globexMs).toBeLessThan(acmeMs / 2)
        const records = (yield* allRecords).map(envelopeOf)
        expect(records.filter((e) => e.tenantId === "acme")).toHaveLength(60)
        expect(records.filter((e) => e.tenantId === "globex")).toHaveLength(60)
      }).pipe(Effect.provide(dependencies({ platform: limited(20) }))),
  )
})
