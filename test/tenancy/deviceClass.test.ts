/** Decoding readings with a compiled device class: every transform, and the reasons of failures. */
import { describe, expect, it } from "@effect/vitest"
import { Either, Option } from "effect"
import { compile, DeviceClasses } from "../../src/tenancy/DeviceClass.js"
import type { DeviceClassConfig, FieldConfig } from "../../src/tenancy/PlatformConfig.js"

const fallback = { receivedAt: Date.UTC(2024, 4, 1, 12), msgId: "shard-0/42" }

const thermostat: DeviceClassConfig = {
  name: "thermostat",
  time_field: "ts",
  time_format: "epoch_ms",
  message_id_field: "id",
  fields: {
    temperature: { type: "number", from: "temp_f", convert: "fahrenheit_to_celsius", min: -40, max: 85 },
    humidity: { type: "number", min: 0, max: 100 },
    battery: { type: "integer", min: 0, max: 100, default: 100 },
  },
}

const decode = (config: DeviceClassConfig, reading: unknown) => compile(config).decode(reading, fallback)
const values = (config: DeviceClassConfig, reading: unknown) => {
  const result = decode(config, reading)
  if (Either.isLeft(result)) throw new Error(`expected a row, got: ${result.left}`)
  return result.right.values
}
const reason = (config: DeviceClassConfig, reading: unknown) => {
  const result = decode(config, reading)
  if (Either.isRight(result)) throw new Error(`expected a dead letter, got ${JSON.stringify(result.right)}`)
  return result.left
}
/** A class with one field `x` read from the payload key `x`. */
const one = (field: FieldConfig): DeviceClassConfig => ({ name: "one", fields: { x: field } })

describe("DeviceClass.decode", () => {
  it("decodes a good reading: rename, conversion, device time and message id", () => {
    const result = decode(thermostat, {
      id: "m-17",
      ts: 1714564800123,
      temp_f: 71.6,
      humidity: 41.5,
      battery: 87,
    })
    expect(result).toEqual(
      Either.right({
        ts: 1714564800123,
        msgId: "m-17",
        values: { temperature: 22, humidity: 41.5, battery: 87 },
      }),
    )
  })

  it("ignores keys the class does not name", () => {
    expect(values(thermostat, { temp_f: 32, humidity: 1, firmware: "1.2.3", extra: { a: 1 } })).toEqual({
      temperature: 0,
      humidity: 1,
      battery: 100,
    })
  })

  it("reads a renamed field only from its payload key", () => {
    expect(reason(thermostat, { temperature: 20, humidity: 1 })).toBe(
      'temperature (payload key "temp_f"): missing',
    )
  })

  it.each([
    ["fahrenheit_to_celsius", 212, 100],
    ["celsius_to_fahrenheit", -40, -40],
    ["celsius_to_fahrenheit", 100, 212],
    ["kelvin_to_celsius", 293.15, 20],
    ["mbar_to_hpa", 1013.25, 1013.25],
    ["pa_to_hpa", 101325, 1013.25],
    ["mph_to_kmh", 10, 16.09344],
    ["ms_to_kmh", 10, 36],
  ] as const)("converts %s: %d -> %d", (convert, input, output) => {
    expect(values(one({ type: "number", convert }), { x: input })).toEqual({ x: output })
  })

  it("applies convert, then scale, then offset, without floating-point noise", () => {
    expect(values(one({ type: "integer", scale: 0.001 }), { x: 349301 })).toEqual({ x: 349.301 })
    expect(values(one({ type: "number", scale: 0.1, offset: -40 }), { x: 650 })).toEqual({ x: 25 })
    // (212 °F -> 100 °C) * 2 + 1
    expect(
      values(one({ type: "number", convert: "fahrenheit_to_celsius", scale: 2, offset: 1 }), { x: 212 }),
    ).toEqual({ x: 201 })
  })

  it("checks the range after the transform, bounds included", () => {
    const cls = one({ type: "number", convert: "fahrenheit_to_celsius", min: 0, max: 100 })
    expect(values(cls, { x: 32 })).toEqual({ x: 0 })
    expect(values(cls, { x: 212 })).toEqual({ x: 100 })
    expect(reason(cls, { x: 213.8 })).toBe("x: 101 is above the maximum 100")
    expect(reason(cls, { x: 30.2 })).toBe("x: -1 is below the minimum 0")
  })

  it("refuses values out of range with the bound", () => {
    expect(reason(thermostat, { temp_f: 70, humidity: 140 })).toBe("humidity: 140 is above the maximum 100")
    expect(reason(thermostat, { temp_f: 70, humidity: -1 })).toBe("humidity: -1 is below the minimum 0")
  })

  it("stores the default when the key is missing or null, and the value when present", () => {
    expect(values(thermostat, { temp_f: 32, humidity: 1 }).battery).toBe(100)
    expect(values(thermostat, { temp_f: 32, humidity: 1, battery: null }).battery).toBe(100)
    expect(values(thermostat, { temp_f: 32, humidity: 1, battery: 0 }).battery).toBe(0)
    expect(reason(thermostat, { temp_f: 32, humidity: 1, battery: 101 })).toBe(
      "battery: 101 is above the maximum 100",
    )
  })

  it("leaves a missing or null optional field out of the row", () => {
    const cls: DeviceClassConfig = {
      name: "c",
      fields: { a: { type: "number" }, note: { type: "string", optional: true } },
    }
    expect(values(cls, { a: 1 })).toEqual({ a: 1 })
    expect(values(cls, { a: 1, note: null })).toEqual({ a: 1 })
    expect(values(cls, { a: 1, note: "hi" })).toEqual({ a: 1, note: "hi" })
  })

  it("refuses a missing required field, and a null one with what it got", () => {
    expect(reason(thermostat, { temp_f: 70 })).toBe("humidity: missing")
    expect(reason(thermostat, { temp_f: 70, humidity: null })).toBe("humidity: expected a number, got null")
  })

  it("names the field, what it expected and what it got", () => {
    expect(reason(one({ type: "number" }), { x: "hot" })).toBe('x: expected a number, got "hot"')
    expect(reason(thermostat, { temp_f: "hot", humidity: 1 })).toBe(
      'temperature (payload key "temp_f"): expected a number, got "hot"',
    )
    expect(reason(one({ type: "integer" }), { x: 1.5 })).toBe("x: expected an integer, got 1.5")
    expect(reason(one({ type: "integer" }), { x: "1" })).toBe('x: expected an integer, got "1"')
    expect(reason(one({ type: "boolean" }), { x: 1 })).toBe("x: expected true or false, got 1")
    expect(reason(one({ type: "string" }), { x: [1] })).toBe("x: expected a string, got an array")
    expect(reason(one({ type: "number" }), { x: { v: 1 } })).toBe("x: expected a number, got an object")
    expect(reason(one({ type: "number" }), { x: Number.POSITIVE_INFINITY })).toBe(
      "x: Infinity is not a finite number",
    )
  })

  it("reports every problem of a reading, not only the first", () => {
    expect(reason(thermostat, { temp_f: "hot", humidity: 140, ts: "now" })).toBe(
      'temperature (payload key "temp_f"): expected a number, got "hot"; humidity: 140 is above the maximum 100; ' +
        'ts: not a valid epoch_ms time, got "now"',
    )
  })

  it.each([null, [{ temp_f: 1 }], "temp_f=1", 42, true])(
    "refuses a payload that is not an object: %j",
    (reading) => {
      expect(decode(thermostat, reading)).toEqual(Either.left("payload is not a JSON object"))
    },
  )

  it("reads own keys only, never the prototype's", () => {
    const cls = one({ type: "number" })
    const field: FieldConfig = { type: "number" }
    const proto: DeviceClassConfig = { name: "p", fields: { constructor: field } }
    expect(reason(proto, {})).toBe("constructor: missing")
    expect(reason(cls, Object.create({ x: 1 }))).toBe("x: missing")
  })

  it("keeps string and boolean values as sent", () => {
    const cls: DeviceClassConfig = {
      name: "c",
      fields: { on: { type: "boolean" }, mode: { type: "string", from: "m" } },
    }
    expect(values(cls, { on: false, m: "eco" })).toEqual({ on: false, mode: "eco" })
  })
})

describe("DeviceClass device time", () => {
  const timed = (time_format?: "epoch_ms" | "epoch_s" | "iso8601"): DeviceClassConfig => ({
    name: "t",
    time_field: "t",
    ...(time_format === undefined ? {} : { time_format }),
    fields: { x: { type: "number" } },
  })
  const tsOf = (config: DeviceClassConfig, t: unknown) => {
    const result = decode(config, { x: 1, t })
    if (Either.isLeft(result)) throw new Error(result.left)
    return result.right.ts
  }
  const at = Date.UTC(2024, 4, 1, 12, 0, 0, 250)

  it("reads epoch_ms (the default), epoch_s and iso8601 as epoch ms", () => {
    expect(tsOf(timed(), at)).toBe(at)
    expect(tsOf(timed("epoch_ms"), at + 0.4)).toBe(at)
    expect(tsOf(timed("epoch_s"), at / 1000)).toBe(at)
    expect(tsOf(timed("iso8601"), "2024-05-01T12:00:00.250Z")).toBe(at)
    expect(tsOf(timed("iso8601"), "2024-05-01T14:00:00.250+02:00")).toBe(at)
  })

  it("falls back to the ingress time when the reading has no time or the class names none", () => {
    expect(tsOf(timed(), undefined)).toBe(fallback.receivedAt)
    expect(tsOf(timed(), null)).toBe(fallback.receivedAt)
    expect(decode(one({ type: "number" }), { x: 1, ts: at })).toEqual(
      Either.right({ ts: fallback.receivedAt, msgId: fallback.msgId, values: { x: 1 } }),
    )
  })

  it.each([
    ["epoch_ms", "1714564800000", 't: not a valid epoch_ms time, got "1714564800000"'],
    // Seconds sent to an epoch_ms class land in 1970: refused rather than stored wrong.
    ["epoch_ms", 1714564800, "t: not a valid epoch_ms time, got 1714564800"],
    ["epoch_s", 1714564800000, "t: not a valid epoch_s time, got 1714564800000"],
    ["iso8601", 1714564800000, "t: not a valid iso8601 time, got 1714564800000"],
    ["iso8601", "2024-05-01T12:00:00", 't: not a valid iso8601 time, got "2024-05-01T12:00:00"'],
    ["iso8601", "2024-02-30T12:00:00Z", 't: not a valid iso8601 time, got "2024-02-30T12:00:00Z"'],
    ["iso8601", "yesterday", 't: not a valid iso8601 time, got "yesterday"'],
  ] as const)("refuses a bad %s time %j", (format, t, expected) => {
    expect(reason(timed(format), { x: 1, t })).toBe(expected)
  })
})

describe("DeviceClass message id", () => {
  const msgIdOf = (reading: unknown) => {
    const result = decode(thermostat, reading)
    if (Either.isLeft(result)) throw new Error(result.left)
    return result.right.msgId
  }

  it("reads the message id field, integers as their decimal string", () => {
    expect(msgIdOf({ temp_f: 1, humidity: 1, id: "m-1" })).toBe("m-1")
    expect(msgIdOf({ temp_f: 1, humidity: 1, id: 42 })).toBe("42")
  })

  it("falls back to the stream-derived id when the reading has none", () => {
    expect(msgIdOf({ temp_f: 1, humidity: 1 })).toBe(fallback.msgId)
    expect(decode(one({ type: "number" }), { x: 1, id: "ignored" })).toEqual(
      Either.right({ ts: fallback.receivedAt, msgId: fallback.msgId, values: { x: 1 } }),
    )
  })

  it("refuses an id that is neither a non-empty string nor an integer", () => {
    for (const id of [{}, "", 1.5, true])
      expect(reason(thermostat, { temp_f: 1, humidity: 1, id })).toMatch(
        /^id: expected a message id \(a string or an integer\), got /,
      )
  })
})

describe("DeviceClasses", () => {
  it("compiles every class once and finds them by name", () => {
    const classes = DeviceClasses.fromConfig({ device_classes: [thermostat, one({ type: "number" })] })
    expect(classes.names).toEqual(["thermostat", "one"])
    const first = Option.getOrThrow(classes.get("thermostat"))
    expect(Option.getOrThrow(classes.get("thermostat"))).toBe(first)
    expect(first.fieldNames).toEqual(["temperature", "humidity", "battery"])
    expect(Option.isNone(classes.get("thermo2"))).toBe(true)
  })

  it("gives a decode that works unbound", () => {
    const { decode: unbound } = compile(thermostat)
    expect(Either.isRight(unbound({ temp_f: 1, humidity: 1 }, fallback))).toBe(true)
  })
})
