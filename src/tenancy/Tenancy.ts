/**
 * The shared kernel every tier consults: tenants, their API keys, devices, their credentials and
 * classes. Identity always comes from a credential; a lookup by id is always tenant-scoped.
 */
import { timingSafeEqual } from "node:crypto"
import { Context, Layer, Option } from "effect"
import { allDevices } from "./Fleet.js"
import type { DeviceClassConfig, PlatformConfig } from "./PlatformConfig.js"
import type { Quotas, Reservation } from "./Quota.js"
import * as Quota from "./Quota.js"

export interface Device {
  readonly tenantId: string
  readonly deviceId: string
  readonly deviceClass: string
}

export interface Tenant {
  readonly tenantId: string
}

export interface TenancyApi {
  /** The device whose id and credential match, or none (unknown id and wrong credential look alike). */
  readonly authenticateDevice: (deviceId: string, credential: string) => Option.Option<Device>
  /** The device a bearer credential belongs to (HTTP ingress), or none. */
  readonly deviceByCredential: (credential: string) => Option.Option<Device>
  /** The tenant an API key belongs to, or none. */
  readonly authenticateApiKey: (apiKey: string) => Option.Option<Tenant>
  /** A device of this tenant; another tenant's device is none, exactly like a missing one. */
  readonly device: (tenantId: string, deviceId: string) => Option.Option<Device>
  /**
   * The device with this id in any tenant, or none. Device ids are unique across tenants, so the id
   * alone names one device: for sources whose credential check happened elsewhere (AWS IoT Core's
   * client id), never for a lookup on behalf of a tenant, which goes through `device`.
   */
  readonly deviceById: (deviceId: string) => Option.Option<Device>
  /** The tenant's devices. */
  readonly devices: (tenantId: string) => ReadonlyArray<Device>
  /** A device class definition by name. */
  readonly deviceClass: (name: string) => Option.Option<DeviceClassConfig>
  readonly tenants: ReadonlyArray<Tenant>
  /**
   * Reserves one message of the tenant's ingest quota (`max_messages_per_second`), shared by
   * every transport: granted after `waitMs`, or refused if that would exceed `maxWaitMs`.
   */
  readonly reserve: (tenantId: string, maxWaitMs: number) => Reservation
}

export class Tenancy extends Context.Tag("sluice/Tenancy")<Tenancy, TenancyApi>() {}

const sameSecret = (a: string, b: string) => {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}

/** Each tenant's `max_messages_per_second`, the rates a quota backend (`Quota`, `SharedQuota`) needs. */
export const quotaRates = (config: PlatformConfig): ((tenantId: string) => number | undefined) => {
  const rates = new Map(
    config.tenants.flatMap((t) =>
      t.max_messages_per_second === undefined ? [] : [[t.id, t.max_messages_per_second] as const],
    ),
  )
  return (tenantId) => rates.get(tenantId)
}

/**
 * A Tenancy over a validated configuration, held in memory. Quotas are this process's alone
 * unless `quotas` is shared with the other ingress workers (`SharedQuota.make`).
 */
export const fromConfig = (
  config: PlatformConfig,
  quotas: Quotas = Quota.make(quotaRates(config)),
): TenancyApi => {
  const devices = new Map(
    allDevices(config).map((d) => [
      d.id,
      { tenantId: d.tenant, deviceId: d.id, deviceClass: d.class, credential: d.credential },
    ]),
  )
  const byCredential = new Map([...devices.values()].map((d) => [d.credential, d]))
  const byApiKey = new Map(
    config.tenants.flatMap((t) => t.api_keys.map((k) => [k, { tenantId: t.id }] as const)),
  )
  const classes = new Map(config.device_classes.map((c) => [c.name, c]))
  const strip = ({ tenantId, deviceId, deviceClass }: Device): Device => ({ tenantId, deviceId, deviceClass })
  return {
    authenticateDevice: (deviceId, credential) => {
      const device = devices.get(deviceId)
      return device !== undefined && sameSecret(device.credential, credential)
        ? Option.some(strip(device))
        : Option.none()
    },
    deviceByCredential: (credential) => Option.map(Option.fromNullable(byCredential.get(credential)), strip),
    authenticateApiKey: (apiKey) => Option.fromNullable(byApiKey.get(apiKey)),
    device: (tenantId, deviceId) =>
      Option.filter(
        Option.map(Option.fromNullable(devices.get(deviceId)), strip),
        (d) => d.tenantId === tenantId,
      ),
    deviceById: (deviceId) => Option.map(Option.fromNullable(devices.get(deviceId)), strip),
    devices: (tenantId) => [...devices.values()].filter((d) => d.tenantId === tenantId).map(strip),
    deviceClass: (name) => Option.fromNullable(classes.get(name)),
    tenants: config.tenants.map((t) => ({ tenantId: t.id })),
    reserve: quotas.reserve,
  }
}

/** The Tenancy layer over a configuration already loaded and validated. */
export const layer = (config: PlatformConfig, quotas?: Quotas) =>
  Layer.succeed(Tenancy, fromConfig(config, quotas))
