/** The ingress settings read from the environment, with their defaults and bounds. */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either } from "effect"
import * as IngressConfig from "../../src/ingress/IngressConfig.js"

const fromEnv = (env: Record<string, string>) =>
  ConfigProvider.fromMap(new Map(Object.entries(env)), { pathDelim: "_" }).pipe(ConfigProvider.constantCase)

describe("IngressConfig", () => {
  it.effect("defaults every field", () =>
    Effect.gen(function* () {
      const config = yield* Effect.withConfigProvider(IngressConfig.config, fromEnv({}))
      expect(config).toEqual(IngressConfig.defaults)
      expect(config.mqttPort).toBe(1883)
      expect(config.maxPayloadBytes).toBe(256 * 1024)
    }),
  )

  it.effect("reads SLUICE_INGRESS_* variables", () =>
    Effect.gen(function* () {
      const config = yield* Effect.withConfigProvider(
        IngressConfig.config,
        fromEnv({
          SLUICE_INGRESS_MQTT_PORT: "0",
          SLUICE_INGRESS_MQTT_HOST: "127.0.0.1",
          SLUICE_INGRESS_MAX_PAYLOAD_BYTES: "1024",
        }),
      )
      expect([config.mqttPort, config.mqttHost, config.maxPayloadBytes]).toEqual([0, "127.0.0.1", 1024])
    }),
  )

  it.effect("refuses a payload limit the stream cannot carry", () =>
    Effect.gen(function* () {
      const result = yield* Effect.either(
        Effect.withConfigProvider(
          IngressConfig.config,
          fromEnv({ SLUICE_INGRESS_MAX_PAYLOAD_BYTES: "2000000" }),
        ),
      )
      expect(Either.isLeft(result)).toBe(true)
    }),
  )
})
