/**
 * Query parameters of the read API, parsed by hand rather than by schema so that each failure
 * names the parameter, what was expected and what arrived: `BadRequest` is the whole answer a
 * caller gets, and "from: expected ..., got 'yesterday'" is what makes it useful.
 */
import { Either } from "effect"
import type { AggregateFn, TimeRange } from "../storage/TelemetryStore.js"
import type { DeviceClassConfig } from "../tenancy/PlatformConfig.js"
import { BadRequest } from "./ApiError.js"

const invalid = (message: string) => Either.left(new BadRequest({ message }))

/** The earliest and latest instants a query may name: what the store can hold (`isStorableTime`). */
export const startOfTime = -2_208_988_800_000 // 1900-01-01
export const endOfTime = 10_413_792_000_000 // 2300-01-01

const epochMs = /^-?\d{1,16}$/
// Date.parse takes many informal shapes, and a time without an offset would be read in the
// server's zone: accept only ISO-8601 dates, or date-times that carry Z or an offset.
const iso8601 = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2}))?$/i

/** A time parameter: epoch ms or ISO-8601; `fallback` when absent. */
export const time = (
  name: string,
  raw: string | undefined,
  fallback: number,
): Either.Either<number, BadRequest> => {
  if (raw === undefined) return Either.right(fallback)
  const ms = epochMs.test(raw) ? Number(raw) : iso8601.test(raw) ? Date.parse(raw) : Number.NaN
  if (Number.isNaN(ms)) {
    return invalid(
      `${name}: expected ISO-8601 with a time zone (e.g. 2024-05-01T12:00:00Z) or epoch milliseconds, got '${raw}'`,
    )
  }
  if (ms < startOfTime || ms > endOfTime) {
    return invalid(`${name}: must be between 1900-01-01 and 2300-01-01, got '${raw}'`)
  }
  return Either.right(ms)
}

/** `from` and `to` with defaults; `to` is computed first so `from` may default relative to it. */
export const timeRange = (
  params: { readonly from?: string | undefined; readonly to?: string | undefined },
  defaults: { readonly to: number; readonly from: (to: number) => number },
): Either.Either<TimeRange, BadRequest> =>
  Either.gen(function* () {
    const to = yield* time("to", params.to, defaults.to)
    const from = yield* time("from", params.from, Math.max(startOfTime, defaults.from(to)))
    if (from >= to) {
      return yield* invalid(
        `from must be before to, got from=${new Date(from).toISOString()} to=${new Date(to).toISOString()}`,
      )
    }
    return { from, to }
  })

/** A page size: 1..max, `fallback` when absent. */
export const limit = (
  raw: string | undefined,
  options: { readonly fallback: number; readonly max: number },
): Either.Either<number, BadRequest> => {
  if (raw === undefined) return Either.right(options.fallback)
  const n = /^\d{1,7}$/.test(raw) ? Number(raw) : Number.NaN
  return n >= 1 && n <= options.max
    ? Either.right(n)
    : invalid(`limit: expected an integer between 1 and ${options.max}, got '${raw}'`)
}

const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** A bucket width: `10s`, `1m`, `1h`, `1d`, `250ms`, or plain milliseconds. */
export const interval = (raw: string | undefined, fallback: number): Either.Either<number, BadRequest> => {
  if (raw === undefined) return Either.right(fallback)
  const match = /^(\d{1,12})(ms|s|m|h|d)?$/.exec(raw)
  const ms = match === null ? Number.NaN : Number(match[1]) * units[match[2] ?? "ms"]!
  return ms >= 1
    ? Either.right(ms)
    : invalid(
        `interval: expected a positive duration like 10s, 1m, 1h, 1d, 500ms or milliseconds, got '${raw}'`,
      )
}

/** The most buckets one aggregate query may ask for. */
export const maxBuckets = 10_000

/** Refuses a range and interval that would produce more than `maxBuckets` buckets. */
export const bucketCount = (range: TimeRange, intervalMs: number): Either.Either<number, BadRequest> => {
  const count = Math.ceil((range.to - range.from) / intervalMs)
  return count <= maxBuckets
    ? Either.right(count)
    : invalid(
        `interval: ${intervalMs} ms over this range gives ${count} buckets, more than ${maxBuckets}; ` +
          "widen the interval or narrow the range",
      )
}

const aggregateFns: ReadonlyArray<AggregateFn> = ["avg", "min", "max", "sum", "count"]

const list = (raw: string) => [
  ...new Set(
    raw
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== ""),
  ),
]

/** Aggregate functions, comma-separated; `avg` when absent. */
export const fns = (raw: string | undefined): Either.Either<ReadonlyArray<AggregateFn>, BadRequest> => {
  if (raw === undefined) return Either.right(["avg"])
  const names = list(raw)
  const unknown = names.filter((n) => !aggregateFns.includes(n as AggregateFn))
  if (names.length === 0 || unknown.length > 0) {
    return invalid(`fn: expected a comma-separated list of ${aggregateFns.join(", ")}, got '${raw}'`)
  }
  return Either.right(names as ReadonlyArray<AggregateFn>)
}

const hasField = (c: DeviceClassConfig, field: string) => Object.hasOwn(c.fields, field)

// Booleans aggregate as 0/1 (avg = the fraction that was true); strings do not aggregate.
const isAggregatable = (c: DeviceClassConfig, field: string) =>
  hasField(c, field) && c.fields[field]!.type !== "string"

/** Fields to aggregate: number, integer or boolean fields of the device class; all of them when absent. */
export const fields = (
  raw: string | undefined,
  deviceClass: DeviceClassConfig,
): Either.Either<ReadonlyArray<string>, BadRequest> => {
  const aggregatable = Object.keys(deviceClass.fields).filter((f) => isAggregatable(deviceClass, f))
  if (raw === undefined) {
    return aggregatable.length > 0
      ? Either.right(aggregatable)
      : invalid(
          `fields: device class '${deviceClass.name}' has no number, integer or boolean fields to aggregate`,
        )
  }
  const names = list(raw)
  if (names.length === 0) return invalid("fields: expected a comma-separated list of field names, got ''")
  for (const name of names) {
    if (!hasField(deviceClass, name)) {
      return invalid(
        `fields: '${name}' is not a field of device class '${deviceClass.name}' (fields: ${Object.keys(deviceClass.fields).join(", ")})`,
      )
    }
    if (!isAggregatable(deviceClass, name)) {
      return invalid(
        `fields: '${name}' is a ${deviceClass.fields[name]!.type} field; only number, integer and boolean fields aggregate`,
      )
    }
  }
  return Either.right(names)
}
