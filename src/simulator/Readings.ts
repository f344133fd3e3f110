/**
 * Realistic readings for any device class, in the device's own units: each numeric field random-
 * walks inside its valid range (in stored units), then the class transform is inverted, so
 * what the platform stores lands back in range. Malformed messages, when asked for, are either
 * broken JSON or a value of the wrong type.
 */
import { conversions } from "../tenancy/DeviceClass.js"
import type { DeviceClassConfig, FieldConfig } from "../tenancy/PlatformConfig.js"

interface FieldState {
  readonly name: string
  readonly key: string
  readonly config: FieldConfig
  value: number
}

const span = (f: FieldConfig) => {
  const min = f.min ?? (f.max !== undefined ? f.max - 100 : 0)
  const max = f.max ?? min + 100
  return { min, max }
}

/** Stored value → the value the device sends (inverse of convert, scale, offset). */
const toDeviceUnits = (f: FieldConfig, stored: number) => {
  let x = (stored - (f.offset ?? 0)) / (f.scale ?? 1)
  if (f.convert !== undefined) x = conversions[f.convert][1](x)
  return f.type === "integer" ? Math.round(x) : Math.round(x * 1000) / 1000
}

/** A generator of one device's readings. */
export const generator = (deviceClass: DeviceClassConfig, deviceId: string) => {
  const fields: Array<FieldState> = Object.entries(deviceClass.fields).map(([name, config]) => {
    const { min, max } = span(config)
    return { name, key: config.from ?? name, config, value: min + (max - min) * (0.3 + 0.4 * Math.random()) }
  })
  let seq = 0
  const run = Date.now().toString(36)
  return (malformed: boolean): string => {
    const reading: Record<string, unknown> = {}
    const now = Date.now()
    if (deviceClass.message_id_field !== undefined)
      reading[deviceClass.message_id_field] = `${deviceId}-${run}-${seq++}`
    if (deviceClass.time_field !== undefined) {
      const format = deviceClass.time_format ?? "epoch_ms"
      reading[deviceClass.time_field] =
        format === "iso8601"
          ? new Date(now).toISOString()
          : format === "epoch_s"
            ? Math.floor(now / 1000)
            : now
    }
    for (const f of fields) {
      if (f.config.type === "boolean") reading[f.key] = Math.random() < 0.5
      else if (f.config.type === "string") reading[f.key] = "ok"
      else {
        const { min, max } = span(f.config)
        // A bounded random walk: readings drift like a sensor, never leaving the valid range.
        f.value = Math.min(max, Math.max(min, f.value + (max - min) * (Math.random() - 0.5) * 0.02))
        reading[f.key] = toDeviceUnits(f.config, f.value)
      }
    }
    if (malformed) {
      if (seq % 2 === 0) return JSON.stringify(reading).slice(0, -3)
      const first = fields.find((f) => f.config.type === "number" || f.config.type === "integer")
      if (first !== undefined) reading[first.key] = "not-a-number"
    }
    return JSON.stringify(reading)
  }
}
