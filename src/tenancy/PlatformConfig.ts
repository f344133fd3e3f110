/**
 * The platform configuration file's shape (YAML or JSON, `--config FILE`), as an effect/Schema.
 * Keys are snake_case like every config key; see docs/configuration.md for the format.
 *
 * This schema checks each value on its own; `ConfigFile.load` also checks what spans values
 * (references between devices, tenants and classes, uniqueness, ranges against defaults).
 */
import { type ParseResult, Schema } from "effect"

/** A string; YAML reads an unquoted `12345678` as a number, so the reason says how to fix it. */
const Text = Schema.String.annotations({
  message: (issue) => `expected a string, got ${JSON.stringify(issue.actual)} (in YAML, quote it)`,
})

/** A string whose value errors never show: API keys and credentials. */
const Secret = Schema.String.annotations({
  message: (issue) => `expected a string, got a ${typeof issue.actual} (in YAML, quote it)`,
})

const Id = Text.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$/, {
    message: () =>
      "must be 1-100 characters of letters, digits, '_', '.', ':' or '-', starting with a letter or digit",
  }),
)

/** A payload key: any non-empty string. */
const Key = Text.pipe(Schema.minLength(1, { message: () => "must not be empty" }))

/** A finite number (YAML's `.inf` and `.nan` are refused). */
const Finite = Schema.Number.pipe(
  Schema.filter((n) => Number.isFinite(n) || `expected a finite number, got ${n}`),
)

/** One reason for any of a set of literals, instead of one "Expected ..." per literal. */
const oneOf = (literals: ReadonlyArray<string>) => ({
  message: (issue: ParseResult.ParseIssue) => ({
    message: `expected one of ${literals.join(", ")}; got ${JSON.stringify(issue.actual)}`,
    override: true,
  }),
})

/** The most days a retention may be: 100 years (unset means forever). */
export const maxRetentionDays = 36_500

/** A retention in whole days, 1 to `maxRetentionDays`. */
export const RetentionDays = Schema.Number.pipe(
  Schema.filter(
    (n) =>
      (Number.isInteger(n) && n >= 1 && n <= maxRetentionDays) ||
      `must be a whole number of days from 1 to ${maxRetentionDays}, got ${n} (leave it unset to keep forever)`,
  ),
)

const ApiKey = Secret.pipe(Schema.minLength(16, { message: () => "API keys need 16+ characters" }))

/** A tenant and the API keys that read its data. */
export const TenantConfig = Schema.Struct({
  id: Id,
  /** Keys that read the tenant's data and manage its devices, classes and keys (role `admin`). */
  api_keys: Schema.Array(ApiKey),
  /** Keys that only read the tenant's data (role `read`). */
  read_keys: Schema.optional(Schema.Array(ApiKey)),
  /**
   * Ingest quota: messages per second over MQTT and HTTP together, with a burst of one second's
   * worth. Over it, MQTT PUBACKs are delayed (the devices slow down) and HTTP gets 429. Unset = no quota.
   */
  max_messages_per_second: Schema.optional(
    Schema.Number.pipe(Schema.positive({ message: () => "must be a positive number" })),
  ),
  /**
   * Days raw readings and dead letters are kept, counted from device time; unset = forever. Whole
   * months are dropped, so data goes up to a month after it expires (`src/storage/Retention.ts`).
   */
  raw_retention_days: Schema.optional(RetentionDays),
  /** Days the rollups are kept; unset = forever. At least `raw_retention_days`. */
  rollup_retention_days: Schema.optional(RetentionDays),
}).annotations({ identifier: "TenantConfig" })
export type TenantConfig = typeof TenantConfig.Type

/**
 * What is wrong with a tenant's pair of retentions (each already a valid `RetentionDays`), or
 * undefined. Rollups summarise the raw readings, so they may not go before them.
 */
export const retentionProblem = (
  rawDays: number | undefined,
  rollupDays: number | undefined,
): string | undefined =>
  rollupDays === undefined
    ? undefined
    : rawDays === undefined
      ? `rollup_retention_days (${rollupDays}) would drop rollups before the raw readings, which are kept forever ` +
        "without raw_retention_days: set raw_retention_days to at most it, or leave rollup_retention_days unset"
      : rollupDays < rawDays
        ? `rollup_retention_days (${rollupDays}) must be at least raw_retention_days (${rawDays})`
        : undefined

/** Unit conversions a field may apply (from the device's unit to the stored unit). */
const unitConversions = [
  "fahrenheit_to_celsius",
  "celsius_to_fahrenheit",
  "kelvin_to_celsius",
  "mbar_to_hpa",
  "pa_to_hpa",
  "mph_to_kmh",
  "ms_to_kmh",
] as const
export const UnitConversion = Schema.Literal(...unitConversions).annotations(oneOf(unitConversions))
export type UnitConversion = typeof UnitConversion.Type

/** How a device writes its time: epoch milliseconds, epoch seconds, or an ISO 8601 string with a zone. */
const timeFormats = ["epoch_ms", "epoch_s", "iso8601"] as const
export const TimeFormat = Schema.Literal(...timeFormats).annotations(oneOf(timeFormats))
export type TimeFormat = typeof TimeFormat.Type

const fieldTypes = ["number", "integer", "boolean", "string"] as const

/** One field of a device class: where it comes from, its type, its transform and its bounds. */
export const FieldConfig = Schema.Struct({
  /** The type the device sends (`integer`: a whole number; a transform may make it fractional). */
  type: Schema.Literal(...fieldTypes).annotations(oneOf(fieldTypes)),
  /** The payload key to read; defaults to the field's own name (this is the rename). */
  from: Schema.optional(Key),
  /** The stored unit, for people and the API (e.g. `°C`); informational. */
  unit: Schema.optional(Text),
  /** Applied in order: convert, then value * scale + offset. Numbers only. */
  convert: Schema.optional(UnitConversion),
  scale: Schema.optional(
    Finite.pipe(Schema.filter((n) => n !== 0 || "scale 0 would store the offset for every reading")),
  ),
  offset: Schema.optional(Finite),
  /** Valid range after the transform; a value outside is a dead letter. Numbers only. */
  min: Schema.optional(Finite),
  max: Schema.optional(Finite),
  /** A missing (or null) key is left out of the row instead of making the reading a dead letter. */
  optional: Schema.optional(Schema.Boolean),
  /** The value stored, as is, when the key is missing or null (implies optional). */
  default: Schema.optional(
    Schema.Union(Finite, Schema.Boolean, Schema.String).annotations({
      message: (issue) => ({
        message: `expected a number, true/false or a string; got ${JSON.stringify(issue.actual)}`,
        override: true,
      }),
    }),
  ),
}).annotations({ identifier: "FieldConfig" })
export type FieldConfig = typeof FieldConfig.Type

/** A device class: its fields, and where the device time and message id come from. */
export const DeviceClassConfig = Schema.Struct({
  name: Id,
  /** Field name -> field. Names are the stored names: letters, digits and `_`. */
  fields: Schema.Record({ key: Schema.String, value: FieldConfig }),
  /** Payload key of the device time; absent (or missing in a reading) = the time ingress received it. */
  time_field: Schema.optional(Key),
  /** `epoch_ms` (default), `epoch_s` or `iso8601`. */
  time_format: Schema.optional(TimeFormat),
  /** Payload key of the message id used for dedup; absent = derived from the stream position. */
  message_id_field: Schema.optional(Key),
}).annotations({ identifier: "DeviceClassConfig" })
export type DeviceClassConfig = typeof DeviceClassConfig.Type

/** A device: its tenant, class and credential (the MQTT password / HTTP bearer token). */
export const DeviceConfig = Schema.Struct({
  id: Id,
  tenant: Id,
  class: Id,
  credential: Secret.pipe(Schema.minLength(8, { message: () => "credentials need 8+ characters" })),
}).annotations({ identifier: "DeviceConfig" })
export type DeviceConfig = typeof DeviceConfig.Type

/** The whole file. */
/**
 * A fleet: `count` devices named `{prefix}{n}` (n = 1..count) of one tenant and class, each with
 * its own credential derived from the fleet secret (see `Fleet.credential`), so thousands of
 * devices need no thousands of lines.
 */
export const FleetConfig = Schema.Struct({
  prefix: Id,
  count: Schema.Int.pipe(Schema.between(1, 1_000_000)),
  tenant: Id,
  class: Id,
  secret: Schema.String.pipe(Schema.minLength(16, { message: () => "fleet secrets need 16+ characters" })),
})
export type FleetConfig = typeof FleetConfig.Type

export const PlatformConfig = Schema.Struct({
  /** Keys of the platform's operators: they manage tenants and their keys (the admin API). */
  operator_keys: Schema.optional(Schema.Array(ApiKey)),
  tenants: Schema.Array(TenantConfig),
  device_classes: Schema.Array(DeviceClassConfig),
  devices: Schema.Array(DeviceConfig),
  fleets: Schema.optional(Schema.Array(FleetConfig)),
}).annotations({ identifier: "PlatformConfig" })
export type PlatformConfig = typeof PlatformConfig.Type
