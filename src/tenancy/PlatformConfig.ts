/**
 * The platform configuration file's shape (YAML or JSON, `--config FILE`), as an effect/Schema.
 * Keys are snake_case like every config key; see docs/configuration.md for the format.
 */
import { Schema } from "effect"

const Id = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/, {
    message: () =>
      "must be 1-128 characters of letters, digits, '_', '.', ':' or '-', starting with a letter or digit",
  }),
)

/** A tenant and the API keys that read its data. */
export const TenantConfig = Schema.Struct({
  id: Id,
  api_keys: Schema.Array(
    Schema.String.pipe(Schema.minLength(16, { message: () => "API keys need 16+ characters" })),
  ),
})
export type TenantConfig = typeof TenantConfig.Type

/** Unit conversions a field may apply (from the device's unit to the stored unit). */
export const UnitConversion = Schema.Literal(
  "fahrenheit_to_celsius",
  "celsius_to_fahrenheit",
  "kelvin_to_celsius",
  "mbar_to_hpa",
  "pa_to_hpa",
  "mph_to_kmh",
  "ms_to_kmh",
)
export type UnitConversion = typeof UnitConversion.Type

/** One field of a device class: where it comes from, its type, its transform and its bounds. */
export const FieldConfig = Schema.Struct({
  type: Schema.Literal("number", "integer", "boolean", "string"),
  /** The payload key to read; defaults to the field's own name (this is the rename). */
  from: Schema.optional(Schema.String),
  unit: Schema.optional(Schema.String),
  /** Applied in order: convert, then value * scale + offset. Numbers only. */
  convert: Schema.optional(UnitConversion),
  scale: Schema.optional(Schema.Number),
  offset: Schema.optional(Schema.Number),
  /** Valid range after the transform; a value outside is a dead letter. */
  min: Schema.optional(Schema.Number),
  max: Schema.optional(Schema.Number),
  optional: Schema.optional(Schema.Boolean),
  default: Schema.optional(Schema.Union(Schema.Number, Schema.Boolean, Schema.String)),
})
export type FieldConfig = typeof FieldConfig.Type

/** A device class: its fields, and where the device time and message id come from. */
export const DeviceClassConfig = Schema.Struct({
  name: Id,
  fields: Schema.Record({ key: Schema.String, value: FieldConfig }),
  /** Payload key of the device time; absent = the time ingress received the message. */
  time_field: Schema.optional(Schema.String),
  /** `epoch_ms` (default), `epoch_s` or `iso8601`. */
  time_format: Schema.optional(Schema.Literal("epoch_ms", "epoch_s", "iso8601")),
  /** Payload key of the message id used for dedup; absent = derived from the stream position. */
  message_id_field: Schema.optional(Schema.String),
})
export type DeviceClassConfig = typeof DeviceClassConfig.Type

/** A device: its tenant, class and credential (the MQTT password / HTTP bearer token). */
export const DeviceConfig = Schema.Struct({
  id: Id,
  tenant: Id,
  class: Id,
  credential: Schema.String.pipe(Schema.minLength(8, { message: () => "credentials need 8+ characters" })),
})
export type DeviceConfig = typeof DeviceConfig.Type

/** The whole file. */
export const PlatformConfig = Schema.Struct({
  tenants: Schema.Array(TenantConfig),
  device_classes: Schema.Array(DeviceClassConfig),
  devices: Schema.Array(DeviceConfig),
})
export type PlatformConfig = typeof PlatformConfig.Type
