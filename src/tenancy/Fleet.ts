/**
 * Fleets: many devices declared in one entry. Device n of a fleet is `{prefix}{n}`; its credential
 * is an HMAC of its id under the fleet secret, so whoever provisions the devices (or the
 * simulator) derives each credential from the secret, and the file holds one secret, not a
 * credential per device.
 */
import { createHmac } from "node:crypto"
import type { DeviceConfig, FleetConfig, PlatformConfig } from "./PlatformConfig.js"

/** The credential of `deviceId` in a fleet with `secret`. */
export const credential = (secret: string, deviceId: string) =>
  createHmac("sha256", secret).update(deviceId).digest("base64url").slice(0, 32)

/** The devices of one fleet, in order. */
export const devicesOf = (fleet: FleetConfig): ReadonlyArray<DeviceConfig> =>
  Array.from({ length: fleet.count }, (_, i) => {
    const id = `${fleet.prefix}${i + 1}`
    return { id, tenant: fleet.tenant, class: fleet.class, credential: credential(fleet.secret, id) }
  })

/** Every device of the configuration: the listed ones, then each fleet's. */
export const allDevices = (config: PlatformConfig): ReadonlyArray<DeviceConfig> => [
  ...config.devices,
  ...(config.fleets ?? []).flatMap(devicesOf),
]
