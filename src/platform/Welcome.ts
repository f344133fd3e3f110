/**
 * The start-up banner: where to connect, and a device credential and API key from the loaded
 * configuration so a newcomer can publish and read right away.
 */
import { Context, Effect, Layer } from "effect"
import * as IngressConfig from "../ingress/IngressConfig.js"
import * as ServingConfig from "../serving/ServingConfig.js"
import type { PlatformConfig } from "../tenancy/PlatformConfig.js"

interface WelcomeInfo {
  readonly device: { readonly id: string; readonly credential: string } | undefined
  readonly apiKey: string | undefined
}

class Info extends Context.Tag("sluice/platform/WelcomeInfo")<Info, WelcomeInfo>() {}

/** Picks the example device and key from the configuration. */
export const layer = (config: PlatformConfig) => {
  const device = config.devices[0]
  const tenant = config.tenants.find((t) => t.id === device?.tenant) ?? config.tenants[0]
  return Layer.succeed(Info, {
    device: device && { id: device.id, credential: device.credential },
    apiKey: tenant?.api_keys[0],
  })
}

const local = (host: string) => (host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host)

/** Prints the banner once every tier is up. */
export const announce = Layer.effectDiscard(
  Effect.gen(function* () {
    const info = yield* Info
    const ingress = yield* IngressConfig.config
    const http = yield* ServingConfig.http
    const mqtt = `mqtt://${local(ingress.mqttHost)}:${ingress.mqttPort}`
    const api = `http://${local(http.host)}:${http.port}`
    const lines = [
      "Sluice is running.",
      `  MQTT      ${mqtt}   (username = device id, password = device credential)`,
      `  HTTP API  ${api}   docs ${api}/docs   metrics ${api}/metrics`,
    ]
    if (info.device !== undefined) {
      const d = info.device
      lines.push(
        `  demo device  ${d.id} / ${d.credential}`,
        `    mqtt publish:  npx mqtt pub -h ${local(ingress.mqttHost)} -p ${ingress.mqttPort} -u ${d.id} -P ${d.credential} -q 1 -t devices/${d.id}/telemetry -m '{"id":"m1","ts":${Date.now()},"temp_f":70.1,"humidity":40}'`,
        `    http post:     curl -X POST ${api}/v1/telemetry -H 'Authorization: Bearer ${d.credential}' -d '{"id":"m2","temp_f":70.3,"humidity":41}'`,
      )
    }
    if (info.apiKey !== undefined) {
      lines.push(
        `  demo API key ${info.apiKey}`,
        `    curl -H 'Authorization: Bearer ${info.apiKey}' ${api}/v1/devices`,
      )
    }
    console.log(lines.join("\n"))
  }),
)
