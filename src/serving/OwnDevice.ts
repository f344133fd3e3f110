/** Resolving a device id from a request, within the caller's tenant only. */
import { Effect, Option } from "effect"
import type { Device, TenancyApi } from "../tenancy/Tenancy.js"
import { DeviceNotFound } from "./ApiError.js"
import { CurrentTenant } from "./Authentication.js"

/** The current tenant's device; another tenant's device fails exactly like a missing one. */
export const ownDevice = (
  tenancy: TenancyApi,
  deviceId: string,
): Effect.Effect<Device, DeviceNotFound, CurrentTenant> =>
  Effect.flatMap(CurrentTenant, (tenant) =>
    Option.match(tenancy.device(tenant.tenantId, deviceId), {
      onNone: () => Effect.fail(DeviceNotFound.instance),
      onSome: Effect.succeed,
    }),
  )
