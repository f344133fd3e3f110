/**
 * A device class compiled for the hot path. Each field becomes an effect/Schema (type check →
 * unit conversion → scale/offset → range) whose decoder is built once per class; `decode` then
 * walks a precompiled field table per reading (no schema building, no closures per message), and
 * a failure names the field and what was wrong with it: that is the dead-letter reason.
 */
import { Either, Option, ParseResult, Schema } from "effect"
import type { FieldValue } from "../storage/TelemetryStore.js"
import type {
  DeviceClassConfig,
  FieldConfig,
  PlatformConfig,
  TimeFormat,
  UnitConversion,
} from "./PlatformConfig.js"

/** What one reading decodes to: the row's device time, message id and values. */
export interface DecodedReading {
  /** Device time, epoch ms (whole milliseconds). */
  readonly ts: number
  readonly msgId: string
  readonly values: Record<string, FieldValue>
}

/** Where `ts` and `msgId` come from when the class does not name them or a reading lacks them. */
export interface Fallback {
  readonly receivedAt: number
  readonly msgId: string
}

/** A device class ready for the hot path. */
export interface CompiledDeviceClass {
  readonly name: string
  /** The registry version it was compiled from (0: not from the registry). */
  readonly version: number
  readonly config: DeviceClassConfig
  /** The stored field names, in configuration order. */
  readonly fieldNames: ReadonlyArray<string>
  /** One reading (one JSON object of the payload) → its row parts, or the reason it is a dead letter. */
  readonly decode: (reading: unknown, fallback: Fallback) => Either.Either<DecodedReading, string>
}

/** Device times outside [2000-01-01, 2100-01-01) are refused: mostly seconds sent as ms, or an unset clock. */
export const MIN_DEVICE_TIME = Date.UTC(2000, 0, 1)
export const MAX_DEVICE_TIME = Date.UTC(2100, 0, 1)

/** Stored field names: safe as a JSON key, a query parameter and a ClickHouse identifier. */
export const FIELD_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/

/** Each conversion and its inverse (the inverse lets a simulator produce device-unit values). */
export const conversions: Record<UnitConversion, readonly [(x: number) => number, (y: number) => number]> = {
  fahrenheit_to_celsius: [(f) => ((f - 32) * 5) / 9, (c) => (c * 9) / 5 + 32],
  celsius_to_fahrenheit: [(c) => (c * 9) / 5 + 32, (f) => ((f - 32) * 5) / 9],
  kelvin_to_celsius: [(k) => k - 273.15, (c) => c + 273.15],
  mbar_to_hpa: [(x) => x, (x) => x],
  pa_to_hpa: [(pa) => pa / 100, (hpa) => hpa * 100],
  mph_to_kmh: [(mph) => mph * 1.609344, (kmh) => kmh / 1.609344],
  ms_to_kmh: [(ms) => ms * 3.6, (kmh) => kmh / 3.6],
}

/** A value as a reason shows it: strings quoted and cut, containers by kind. */
export const describe = (u: unknown): string => {
  if (typeof u === "string") return JSON.stringify(u.length > 40 ? `${u.slice(0, 40)}…` : u)
  if (u === null) return "null"
  if (Array.isArray(u)) return "an array"
  if (typeof u === "object") return "an object"
  return String(u)
}

const expected = (what: string) => (issue: ParseResult.ParseIssue) =>
  `expected ${what}, got ${describe(issue.actual)}`

const NumberValue = Schema.Number.annotations({ message: expected("a number") })
const IntegerValue = Schema.Number.annotations({ message: expected("an integer") })
const whole = (n: number) => Number.isInteger(n) || `expected an integer, got ${n}`
const BooleanValue = Schema.Boolean.annotations({ message: expected("true or false") })
const StringValue = Schema.String.annotations({ message: expected("a string") })

const hasTransform = (field: FieldConfig) =>
  field.convert !== undefined || field.scale !== undefined || field.offset !== undefined

const isNumeric = (field: FieldConfig) => field.type === "number" || field.type === "integer"

/** The field's schema: decodes what the device sent to the stored value. */
export const fieldSchema = (
  field: FieldConfig,
): Schema.Schema<number> | Schema.Schema<boolean> | Schema.Schema<string> => {
  if (field.type === "boolean") return BooleanValue
  if (field.type === "string") return StringValue
  const min = field.min ?? Number.NEGATIVE_INFINITY
  const max = field.max ?? Number.POSITIVE_INFINITY
  const inRange = (n: number) =>
    !Number.isFinite(n)
      ? `${n} is not a finite number`
      : n < min
        ? `${n} is below the minimum ${min}`
        : n > max
          ? `${n} is above the maximum ${max}`
          : true
  // One filter where one will do: each refinement layer costs a parser step per message.
  if (!hasTransform(field))
    return field.type === "integer"
      ? IntegerValue.pipe(Schema.filter((n) => (Number.isInteger(n) ? inRange(n) : whole(n))))
      : NumberValue.pipe(Schema.filter(inRange))
  const input = field.type === "integer" ? IntegerValue.pipe(Schema.filter(whole)) : NumberValue
  const [convert, unconvert] =
    field.convert === undefined ? [undefined, undefined] : conversions[field.convert]
  const scale = field.scale ?? 1
  const offset = field.offset ?? 0
  return Schema.transform(input, Schema.Number.pipe(Schema.filter(inRange)), {
    strict: true,
    // 12 significant digits drop floating-point noise: 71.6 °F is 22 °C, not 21.999999999999996.
    decode: (x) => Number(((convert === undefined ? x : convert(x)) * scale + offset).toPrecision(12)),
    encode: (y) => {
      const x = (y - offset) / scale
      return unconvert === undefined ? x : unconvert(x)
    },
  })
}

/** Epoch ms of a device time in `format`, or undefined when it is not one. */
const toMillis = (format: TimeFormat, raw: unknown): number | undefined => {
  let ms: number
  if (format === "iso8601") {
    const parts = typeof raw === "string" ? ISO_8601.exec(raw) : null
    if (parts === null) return undefined
    // Date.parse rolls 2024-02-30 over to March 1st; a day the month lacks is not a time.
    const [year, month, day] = [Number(parts[1]), Number(parts[2]), Number(parts[3])]
    if (new Date(Date.UTC(year, month - 1, day)).getUTCDate() !== day) return undefined
    ms = Date.parse(parts[0])
  } else {
    if (typeof raw !== "number") return undefined
    ms = Math.round(format === "epoch_s" ? raw * 1000 : raw)
  }
  return ms >= MIN_DEVICE_TIME && ms < MAX_DEVICE_TIME ? ms : undefined
}
// A date, a time and a zone are all required: a zoneless time would be read in the server's zone.
const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:\d{2})$/

/** The device-time schema of a format: decodes to epoch ms. */
export const timeSchema = (format: TimeFormat): Schema.Schema<number, unknown> =>
  Schema.transformOrFail(Schema.Unknown, Schema.Number, {
    strict: true,
    decode: (raw, _, ast) => {
      const ms = toMillis(format, raw)
      return ms === undefined
        ? ParseResult.fail(new ParseResult.Type(ast, raw, `not a valid ${format} time, got ${describe(raw)}`))
        : ParseResult.succeed(ms)
    },
    encode: (ms) =>
      ParseResult.succeed(
        format === "iso8601" ? new Date(ms).toISOString() : format === "epoch_s" ? ms / 1000 : ms,
      ),
  })

/** The message-id schema: a non-empty string of at most 256 characters, or a safe integer. */
export const MessageId: Schema.Schema<string, unknown> = Schema.transformOrFail(
  Schema.Unknown,
  Schema.String,
  {
    strict: true,
    decode: (raw, _, ast) =>
      typeof raw === "string" && raw.length > 0 && raw.length <= 256
        ? ParseResult.succeed(raw)
        : typeof raw === "number" && Number.isSafeInteger(raw)
          ? ParseResult.succeed(String(raw))
          : ParseResult.fail(
              new ParseResult.Type(
                ast,
                raw,
                `expected a message id (a string or an integer), got ${describe(raw)}`,
              ),
            ),
    encode: ParseResult.succeed,
  },
)

type Decoder<A> = (u: unknown) => Either.Either<A, ParseResult.ParseError>

const decoderOf = (field: FieldConfig): Decoder<FieldValue> => {
  const schema = fieldSchema(field)
  // Each branch keeps its own type for decodeUnknownEither; the union would not pick an overload.
  switch (field.type) {
    case "boolean":
      return Schema.decodeUnknownEither(schema as Schema.Schema<boolean>)
    case "string":
      return Schema.decodeUnknownEither(schema as Schema.Schema<string>)
    default:
      return Schema.decodeUnknownEither(schema as Schema.Schema<number>)
  }
}

const reasonOf = (error: ParseResult.ParseError) =>
  ParseResult.ArrayFormatter.formatErrorSync(error)
    .map((issue) => issue.message)
    .join("; ")

/** One row of the precompiled field table. */
interface FieldPlan {
  readonly name: string
  readonly from: string
  /** How the field is named in reasons: the stored name, and the payload key when it differs. */
  readonly label: string
  readonly decode: Decoder<FieldValue>
  readonly optional: boolean
  readonly default: FieldValue | undefined
}

// Own keys only: a payload must not reach `constructor` or `__proto__` through its prototype.
const ownValue = (payload: Record<string, unknown>, key: string): unknown =>
  Object.hasOwn(payload, key) ? payload[key] : undefined

class Compiled implements CompiledDeviceClass {
  readonly name: string
  readonly fieldNames: ReadonlyArray<string>
  private readonly plan: ReadonlyArray<FieldPlan>
  private readonly timeField: string | undefined
  private readonly decodeTime: Decoder<number>
  private readonly idField: string | undefined

  constructor(
    readonly config: DeviceClassConfig,
    readonly version = 0,
  ) {
    this.name = config.name
    this.plan = Object.entries(config.fields).map(([name, field]) => {
      const from = field.from ?? name
      return {
        name,
        from,
        label: from === name ? name : `${name} (payload key ${JSON.stringify(from)})`,
        decode: decoderOf(field),
        optional: field.optional === true || field.default !== undefined,
        default: field.default,
      }
    })
    this.fieldNames = this.plan.map((f) => f.name)
    this.timeField = config.time_field
    this.decodeTime = Schema.decodeUnknownEither(timeSchema(config.time_format ?? "epoch_ms"))
    this.idField = config.message_id_field
  }

  // One closure per class (not per message), bound so callers may pass `decode` around.
  readonly decode = (reading: unknown, fallback: Fallback): Either.Either<DecodedReading, string> => {
    if (typeof reading !== "object" || reading === null || Array.isArray(reading))
      return Either.left("payload is not a JSON object")
    const payload = reading as Record<string, unknown>
    const values: Record<string, FieldValue> = {}
    const reasons: Array<string> = []
    for (const field of this.plan) {
      const raw = ownValue(payload, field.from)
      if (raw === undefined || (raw === null && field.optional)) {
        if (field.default !== undefined) values[field.name] = field.default
        else if (!field.optional) reasons.push(`${field.label}: missing`)
        continue
      }
      const decoded = field.decode(raw)
      if (Either.isRight(decoded)) values[field.name] = decoded.right
      else reasons.push(`${field.label}: ${reasonOf(decoded.left)}`)
    }
    let ts = fallback.receivedAt
    const rawTs = this.timeField === undefined ? undefined : ownValue(payload, this.timeField)
    if (rawTs !== undefined && rawTs !== null) {
      const decoded = this.decodeTime(rawTs)
      if (Either.isRight(decoded)) ts = decoded.right
      else reasons.push(`${this.timeField}: ${reasonOf(decoded.left)}`)
    }
    let msgId = fallback.msgId
    const rawId = this.idField === undefined ? undefined : ownValue(payload, this.idField)
    if (rawId !== undefined && rawId !== null) {
      const decoded = decodeMessageId(rawId)
      if (Either.isRight(decoded)) msgId = decoded.right
      else reasons.push(`${this.idField}: ${reasonOf(decoded.left)}`)
    }
    return reasons.length === 0 ? Either.right({ ts, msgId, values }) : Either.left(reasons.join("; "))
  }
}

const decodeMessageId = Schema.decodeUnknownEither(MessageId)

/** Compiles a class validated by `check` (ConfigFile.load runs it); build once, decode per message. */
export const compile = (config: DeviceClassConfig, version = 0): CompiledDeviceClass =>
  new Compiled(config, version)

/** Every device class of a configuration, compiled once and looked up by name per message. */
export class DeviceClasses {
  private constructor(private readonly byName: ReadonlyMap<string, CompiledDeviceClass>) {}

  /** Compiles each class of the configuration. */
  static fromConfig(config: Pick<PlatformConfig, "device_classes">): DeviceClasses {
    return new DeviceClasses(new Map(config.device_classes.map((c) => [c.name, compile(c)])))
  }

  /** The compiled class of that name, or none. */
  get(name: string): Option.Option<CompiledDeviceClass> {
    return Option.fromNullable(this.byName.get(name))
  }

  get names(): ReadonlyArray<string> {
    return [...this.byName.keys()]
  }
}

/** A problem in a class definition, at a path relative to the class. */
export interface ClassProblem {
  readonly path: ReadonlyArray<string | number>
  readonly reason: string
}

const matchesType = (field: FieldConfig, value: FieldValue): string | undefined => {
  switch (field.type) {
    case "boolean":
      return typeof value === "boolean" ? undefined : `default must be true or false, got ${describe(value)}`
    case "string":
      return typeof value === "string" ? undefined : `default must be a string, got ${describe(value)}`
    default:
      if (typeof value !== "number") return `default must be a number, got ${describe(value)}`
      // The default is stored as is; an integer field's stored value is whole unless transformed.
      if (field.type === "integer" && !hasTransform(field) && !Number.isInteger(value))
        return `default must be an integer, got ${value}`
      if (field.min !== undefined && value < field.min)
        return `default ${value} is below the minimum ${field.min}`
      if (field.max !== undefined && value > field.max)
        return `default ${value} is above the maximum ${field.max}`
      return undefined
  }
}

/** What is wrong in a class beyond its schema: field names, numeric options, ranges, defaults. */
export const check = (config: DeviceClassConfig): ReadonlyArray<ClassProblem> => {
  const problems: Array<ClassProblem> = []
  const add = (path: ReadonlyArray<string | number>, reason: string) => problems.push({ path, reason })
  const entries = Object.entries(config.fields)
  if (entries.length === 0) add(["fields"], "a device class needs at least one field")
  for (const [name, field] of entries) {
    const at = ["fields", name]
    if (!FIELD_NAME.test(name) || name === "__proto__")
      add(
        at,
        `invalid field name ${JSON.stringify(name)}: use letters, digits and '_' (at most 64), not starting with a digit`,
      )
    if (!isNumeric(field))
      for (const key of ["convert", "scale", "offset", "min", "max"] as const)
        if (field[key] !== undefined)
          add([...at, key], `${key} applies to number and integer fields only, not to ${field.type}`)
    if (field.min !== undefined && field.max !== undefined && field.min > field.max)
      add([...at, "min"], `min ${field.min} is greater than max ${field.max}`)
    if (field.default !== undefined) {
      const wrong = matchesType(field, field.default)
      if (wrong !== undefined) add([...at, "default"], wrong)
      if (field.optional === false)
        add([...at, "optional"], "a field with a default is optional; remove optional: false")
    }
  }
  if (config.time_format !== undefined && config.time_field === undefined)
    add(["time_format"], "time_format needs time_field (without it the device time is the ingress time)")
  return problems
}

/**
 * Compiled classes by name, following the registry: each class's current definition (newest
 * version) is compiled once, and a new version is compiled when the lookup first returns it. A
 * class that does not exist is `undefined` (its devices' messages become dead letters).
 */
export const compiledClasses = (
  current: (
    name: string,
  ) => Option.Option<{ readonly version: number; readonly definition: DeviceClassConfig }>,
): ((name: string) => CompiledDeviceClass | undefined) => {
  const compiled = new WeakMap<DeviceClassConfig, CompiledDeviceClass>()
  return (name) => {
    const version = Option.getOrUndefined(current(name))
    if (version === undefined) return undefined
    let c = compiled.get(version.definition)
    if (c === undefined) {
      c = compile(version.definition, version.version)
      compiled.set(version.definition, c)
    }
    return c
  }
}
