/**
 * The start-up banner: where to connect and, for the bundled demo configuration only (whose
 * secrets are public), a device credential and API key so a newcomer can publish and read right
 * away. Any other configuration's secrets are never printed. It names only the listeners of the
 * roles given.
 */
import type { IngressConfig } from "../ingress/IngressConfig.js"
import type { Role } from "../observability/Health.js"
import type { HttpServingConfig } from "../serving/ServingConfig.js"
import type { PlatformConfig } from "../tenancy/PlatformConfig.js"

const local = (host: string) => (host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host)

/** The banner's lines for a platform running `roles`. */
export const banner = (
  config: PlatformConfig,
  roles: ReadonlyArray<Role>,
  ingress: IngressConfig,
  http: HttpServingConfig,
  demo: boolean,
): ReadonlyArray<string> => {
  const device = config.devices[0]
  const tenant = config.tenants.find((t) => t.id === device?.tenant) ?? config.tenants[0]
  const apiKey = tenant?.api_keys[0]
  const mqttHost = local(ingress.mqttHost)
  const ingest = `http://${local(ingress.httpHost)}:${ingress.httpPort}`
  const api = `http://${local(http.host)}:${http.port}`
  const lines = [`Sluice is running (${roles.join(", ")}).`]
  if (roles.includes("ingress")) {
    lines.push(
      `  MQTT         mqtt://${mqttHost}:${ingress.mqttPort}   (username = device id, password = device credential)`,
      `  HTTP ingest  ${ingest}/v1/telemetry   (bearer = device credential)   docs ${ingest}/docs`,
    )
  }
  if (roles.includes("serving"))
    lines.push(`  HTTP API     ${api}   docs ${api}/docs   metrics ${api}/metrics`)
  if (!demo) {
    lines.push(
      "  credentials  in your configuration file, or shown once by the admin API when a device or key is made",
    )
    return lines
  }
  if (roles.includes("ingress") && device !== undefined) {
    lines.push(
      `  demo device  ${device.id} / ${device.credential}`,
      `    mqtt publish:  npx mqtt pub -h ${mqttHost} -p ${ingress.mqttPort} -u ${device.id} -P ${device.credential} -q 1 -t devices/${device.id}/telemetry -m '{"id":"m1","ts":${Date.now()},"temp_f":70.1,"humidity":40}'`,
      `    http post:     curl -X POST ${ingest}/v1/telemetry -H 'Authorization: Bearer ${device.credential}' -d '{"id":"m2","temp_f":70.3,"humidity":41}'`,
    )
  }
  if (roles.includes("serving") && apiKey !== undefined) {
    lines.push(`  demo API key ${apiKey}`, `    curl -H 'Authorization: Bearer ${apiKey}' ${api}/v1/devices`)
  }
  return lines
}
