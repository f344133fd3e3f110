/**
 * The broker following the device registry: a device disabled, removed, or whose credential was
 * rotated out loses its live MQTT connection at once and cannot connect again; another device's
 * connection is untouched. A real SQLite registry, the Tenancy that follows it, mqtt.js clients.
 */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import mqtt, { type IClientOptions, type MqttClient } from "mqtt"
import * as MqttBroker from "../../src/ingress/MqttBroker.js"
import * as Metrics from "../../src/observability/Metrics.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import * as Apply from "../../src/tenancy/Apply.js"
import { Mutation, type RegDevice, Registry } from "../../src/tenancy/Registry.js"
import { hashSecret } from "../../src/tenancy/Secrets.js"
import * as SqliteRegistry from "../../src/tenancy/SqliteRegistry.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"
import { ingressConfig, platform } from "./harness.js"

const connect = (port: number, username: string, password: string, options: IClientOptions = {}) =>
  mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
    username,
    password,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    ...options,
  })

const closed = (client: MqttClient) =>
  new Promise<number>((resolve) => {
    const started = Date.now()
    client.once("close", () => resolve(Date.now() - started))
  })

const refusedCode = (port: number, username: string, password: string) =>
  connect(port, username, password).then(
    (client) => {
      client.end(true)
      return 0
    },
    (error: { code?: number }) => error.code ?? -1,
  )

const layers = () => {
  const dir = mkdtempSync(join(tmpdir(), "sluice-revoke-"))
  const registry = SqliteRegistry.layerWith({ dataDir: dir, fsync: false })
  const tenancy = Layer.scoped(Tenancy.Tenancy, Tenancy.live({ pollMs: 50 })).pipe(Layer.provide(registry))
  return Layer.mergeAll(
    tenancy,
    registry,
    SqliteStreamLog.layerWith({ ...SqliteStreamLog.defaults(dir), fsync: false }),
    Metrics.layer,
  )
}

const updateDevice = (deviceId: string, change: (d: RegDevice) => RegDevice | null) =>
  Effect.gen(function* () {
    const registry = yield* Registry
    const state = yield* registry.load
    const next = change(state.devices.get(deviceId)!)
    yield* registry.commit(
      [
        next === null
          ? Mutation.Remove({ kind: "device", id: deviceId })
          : Mutation.Put({ row: { kind: "device", value: next } }),
      ],
      state.revision,
    )
  })

describe("MQTT connections follow the registry", () => {
  it.scopedLive(
    "disabling, rotating out and removing a device close its connections at once; others stay",
    () =>
      Effect.gen(function* () {
        const applied = yield* Apply.apply(platform)
        const tenancy = yield* Tenancy.Tenancy
        while (tenancy.revision() < applied.revision) yield* Effect.sleep("20 millis")
        const { port } = yield* MqttBroker.make(ingressConfig)
        const one = yield* Effect.promise(() => connect(port, "thermo-1", "thermo-1-secret"))
        const two = yield* Effect.promise(() => connect(port, "thermo-2", "thermo-2-secret"))
        const oneClosed = closed(one)

        // Disabled: closed within the poll, refused after.
        yield* updateDevice("thermo-1", (d) => ({ ...d, enabled: false }))
        const after = yield* Effect.promise(() =>
          Promise.race([oneClosed, new Promise<number>((r) => setTimeout(() => r(-1), 5_000))]),
        )
        expect(after).toBeGreaterThanOrEqual(0)
        expect(after).toBeLessThan(2_000)
        expect(yield* Effect.promise(() => refusedCode(port, "thermo-1", "thermo-1-secret"))).toBe(4)
        expect(two.connected).toBe(true)

        // Enabled again with a rotated credential: the new one connects; the old one works until its
        // grace ends, and the connection made with it is closed then, not the one with the new one.
        const graceEnds = Date.now() + 600
        yield* updateDevice("thermo-1", (d) => ({
          ...d,
          enabled: true,
          credentials: [
            { hash: hashSecret("thermo-1-rotated"), expiresAt: null },
            { hash: hashSecret("thermo-1-secret"), expiresAt: graceEnds },
          ],
        }))
        yield* Effect.sleep("200 millis")
        const withOld = yield* Effect.promise(() =>
          connect(port, "thermo-1", "thermo-1-secret", { clientId: "old" }),
        )
        const withNew = yield* Effect.promise(() =>
          connect(port, "thermo-1", "thermo-1-rotated", { clientId: "new" }),
        )
        yield* Effect.promise(() => closed(withOld))
        expect(Date.now()).toBeGreaterThanOrEqual(graceEnds)
        expect(withNew.connected).toBe(true)
        expect(yield* Effect.promise(() => refusedCode(port, "thermo-1", "thermo-1-secret"))).toBe(4)

        // Removed: closed.
        const newClosed = closed(withNew)
        yield* updateDevice("thermo-1", () => null)
        expect(yield* Effect.promise(() => newClosed)).toBeLessThan(2_000)
        expect(two.connected).toBe(true)
        two.end(true)
      }).pipe(Effect.provide(layers())),
  )
})
