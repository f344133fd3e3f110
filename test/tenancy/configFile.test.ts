/** Loading the configuration file: the demo file loads; every kind of bad file is refused with its place. */
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { stringify } from "yaml"
import * as ConfigFile from "../../src/tenancy/ConfigFile.js"
import { DeviceClasses } from "../../src/tenancy/DeviceClass.js"
import { fromConfig } from "../../src/tenancy/Tenancy.js"

const dir = mkdtempSync(join(tmpdir(), "sluice-config-"))
const write = (name: string, text: string) => {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

type Loose = Record<string, unknown>
/** The file's data, loosely typed so a test can break any piece of it. */
interface Good {
  tenants: Array<{ id: string; api_keys: Array<string> } & Loose>
  device_classes: Array<Loose & { fields: Record<string, Loose> }>
  devices: Array<Loose>
}

/** A small valid configuration as plain data, to break one piece at a time. */
const good = (): Good => ({
  tenants: [
    { id: "demo", api_keys: ["demo-api-key-0123456789"] },
    { id: "other", api_keys: ["other-api-key-0123456789"] },
  ],
  device_classes: [
    {
      name: "thermostat",
      time_field: "ts",
      fields: {
        temperature: { type: "number", from: "temp_f", convert: "fahrenheit_to_celsius", min: -40, max: 85 },
        humidity: { type: "number", min: 0, max: 100 },
        battery: { type: "integer", min: 0, max: 100, default: 100 },
      },
    },
  ],
  devices: [
    { id: "thermo-1", tenant: "demo", class: "thermostat", credential: "thermo-1-secret" },
    { id: "thermo-2", tenant: "demo", class: "thermostat", credential: "thermo-2-secret" },
    { id: "other-1", tenant: "other", class: "thermostat", credential: "other-1-secret" },
  ],
})

/** The message ConfigFile.load fails with for this file, or a test failure if it loads. */
const refusal = (path: string) =>
  ConfigFile.load(path).pipe(
    Effect.flip,
    Effect.map((error) => {
      expect(error._tag).toBe("ConfigFileError")
      expect(error.file).toBe(path)
      return error.message
    }),
  )
const refusalOf = (name: string, edit: (config: Good) => void) => {
  const config = good()
  edit(config)
  return refusal(write(name, stringify(config)))
}

describe("ConfigFile.load", () => {
  it.effect("loads the bundled demo configuration", () =>
    Effect.gen(function* () {
      const config = yield* ConfigFile.load("config/demo.yaml")
      expect(config.tenants.map((t) => t.id)).toEqual(["demo", "other"])
      expect(config.device_classes.map((c) => c.name)).toEqual(["thermostat", "power_meter"])
      for (const cls of config.device_classes)
        expect(
          Object.values(cls.fields).filter((f) => f.type === "number" || f.type === "integer"),
        ).toHaveLength(3)
      const tenancy = fromConfig(config)
      expect(Option.getOrThrow(tenancy.authenticateDevice("thermo-1", "thermo-1-secret")).tenantId).toBe(
        "demo",
      )
      expect(tenancy.devices("other").map((d) => d.deviceId)).toEqual(["other-thermo-1"])
      expect(tenancy.devices("demo").length).toBeGreaterThanOrEqual(4)
      // The demo payloads of the file's comments decode.
      const classes = DeviceClasses.fromConfig(config)
      const fallback = { receivedAt: 0, msgId: "x" }
      const thermostat = Option.getOrThrow(classes.get("thermostat"))
      expect(
        thermostat.decode(
          { id: "m-17", ts: 1714564800000, temp_f: 71.6, humidity: 41.5, battery: 87 },
          fallback,
        ),
      ).toMatchObject({ right: { msgId: "m-17", values: { temperature: 22, humidity: 41.5, battery: 87 } } })
      const meter = Option.getOrThrow(classes.get("power_meter"))
      expect(
        meter.decode(
          { msg_id: "a1", time: "2024-05-01T12:00:00.250Z", voltage: 229.8, current: 1.52, power_mw: 349300 },
          fallback,
        ),
      ).toMatchObject({ right: { ts: Date.UTC(2024, 4, 1, 12, 0, 0, 250), values: { power: 349.3 } } })
    }),
  )

  it.effect("loads the same configuration from JSON", () =>
    Effect.gen(function* () {
      const config = yield* ConfigFile.load(write("good.json", JSON.stringify(good(), null, 2)))
      expect(config.devices).toHaveLength(3)
      expect(yield* ConfigFile.load(write("good.yml", stringify(good())))).toEqual(config)
    }),
  )

  it.effect("refuses a device of an unknown class with the file, the path and the line", () =>
    Effect.gen(function* () {
      const message = yield* refusalOf("unknown-class.yaml", (c) => {
        c.devices[2]!.class = "thermo2"
      })
      expect(message).toMatch(
        /unknown-class\.yaml: devices\[2\]\.class: unknown device class "thermo2" \(line \d+, column \d+\)$/,
      )
    }),
  )

  it.effect("points at the line and column of the problem", () =>
    Effect.gen(function* () {
      const text = [
        "tenants:",
        "  - id: demo",
        "    api_keys: [demo-api-key-0123456789]",
        "device_classes:",
        "  - name: thermostat",
        "    fields:",
        "      humidity: { type: number }",
        "devices:",
        "  - id: thermo-1",
        "    tenant: nobody",
        "    class: thermostat",
        "    credential: thermo-1-secret",
        "",
      ].join("\n")
      const path = write("lines.yaml", text)
      expect(yield* refusal(path)).toBe(
        `${path}: devices[0].tenant: unknown tenant "nobody" (line 10, column 5)`,
      )
    }),
  )

  const refused: ReadonlyArray<readonly [string, (c: Good) => void, string]> = [
    [
      "fractional retention",
      (c) => {
        c.tenants[0]!.raw_retention_days = 1.5
      },
      "tenants[0].raw_retention_days: must be a whole number of days from 1 to 36500, got 1.5 (leave it unset to keep forever)",
    ],
    [
      "rollup retention shorter than raw",
      (c) => {
        c.tenants[0]!.raw_retention_days = 30
        c.tenants[0]!.rollup_retention_days = 10
      },
      "tenants[0].rollup_retention_days: rollup_retention_days (10) must be at least raw_retention_days (30)",
    ],
    [
      "rollup retention with raw readings kept forever",
      (c) => {
        c.tenants[0]!.rollup_retention_days = 400
      },
      "tenants[0].rollup_retention_days: rollup_retention_days (400) would drop rollups before the raw readings",
    ],
    [
      "unknown tenant",
      (c) => {
        c.devices[0]!.tenant = "nobody"
      },
      'devices[0].tenant: unknown tenant "nobody"',
    ],
    [
      "duplicate tenant id",
      (c) => {
        c.tenants[1]!.id = "demo"
      },
      'tenants[1].id: tenant id "demo" is already used at tenants[0].id',
    ],
    [
      "duplicate device id",
      (c) => {
        c.devices[1]!.id = "thermo-1"
      },
      'devices[1].id: device id "thermo-1" is already used at devices[0].id',
    ],
    [
      "duplicate class name",
      (c) => {
        c.device_classes.push({ ...c.device_classes[0]! })
      },
      'device_classes[1].name: device class name "thermostat" is already used at device_classes[0].name',
    ],
    [
      "duplicate API key",
      (c) => {
        c.tenants[1]!.api_keys.push("demo-api-key-0123456789")
      },
      "tenants[1].api_keys[1]: this secret is already used at tenants[0].api_keys[0]",
    ],
    [
      "duplicate credential",
      (c) => {
        c.devices[1]!.credential = "thermo-1-secret"
      },
      "devices[1].credential: this secret is already used at devices[0].credential",
    ],
    [
      "credential that is an API key",
      (c) => {
        c.devices[0]!.credential = "other-api-key-0123456789"
      },
      "devices[0].credential: this secret is already used at tenants[1].api_keys[0]",
    ],
    [
      "invalid field name",
      (c) => {
        c.device_classes[0]!.fields["rel-humidity"] = { type: "number" }
      },
      `device_classes[0].fields["rel-humidity"]: invalid field name "rel-humidity"`,
    ],
    [
      "min above max",
      (c) => {
        Object.assign(c.device_classes[0]!.fields.humidity!, { min: 100, max: 0 })
      },
      "device_classes[0].fields.humidity.min: min 100 is greater than max 0",
    ],
    [
      "default of the wrong type",
      (c) => {
        c.device_classes[0]!.fields.battery!.default = "full"
      },
      'device_classes[0].fields.battery.default: default must be a number, got "full"',
    ],
    [
      "default out of range",
      (c) => {
        c.device_classes[0]!.fields.battery!.default = 150
      },
      "device_classes[0].fields.battery.default: default 150 is above the maximum 100",
    ],
    [
      "fractional default of an integer field",
      (c) => {
        c.device_classes[0]!.fields.battery!.default = 99.5
      },
      "device_classes[0].fields.battery.default: default must be an integer, got 99.5",
    ],
    [
      "conversion of a string field",
      (c) => {
        c.device_classes[0]!.fields.mode = { type: "string", convert: "mph_to_kmh" }
      },
      "device_classes[0].fields.mode.convert: convert applies to number and integer fields only, not to string",
    ],
    [
      "scale of a boolean field",
      (c) => {
        c.device_classes[0]!.fields.on = { type: "boolean", scale: 2 }
      },
      "device_classes[0].fields.on.scale: scale applies to number and integer fields only, not to boolean",
    ],
    [
      "time_format without time_field",
      (c) => {
        delete c.device_classes[0]!.time_field
        c.device_classes[0]!.time_format = "epoch_s"
      },
      "device_classes[0].time_format: time_format needs time_field",
    ],
    [
      "class without fields",
      (c) => {
        c.device_classes[0]!.fields = {}
      },
      "device_classes[0].fields: a device class needs at least one field",
    ],
    [
      "misspelt key",
      (c) => {
        c.device_classes[0]!.fields.humidity!.sacle = 2
      },
      'device_classes[0].fields.humidity.sacle: is unexpected, expected: "type" | "from"',
    ],
    [
      "unknown field type",
      (c) => {
        c.device_classes[0]!.fields.humidity!.type = "float"
      },
      'device_classes[0].fields.humidity.type: expected one of number, integer, boolean, string; got "float"',
    ],
    [
      "unknown unit conversion",
      (c) => {
        c.device_classes[0]!.fields.humidity!.convert = "f_to_c"
      },
      "device_classes[0].fields.humidity.convert: expected one of fahrenheit_to_celsius, celsius_to_fahrenheit",
    ],
    [
      "short credential",
      (c) => {
        c.devices[0]!.credential = "short"
      },
      "devices[0].credential: credentials need 8+ characters",
    ],
    [
      "missing key",
      (c) => {
        delete c.devices[0]!.class
      },
      "devices[0].class: is missing",
    ],
    [
      "bad id",
      (c) => {
        c.devices[0]!.id = "thermo 1"
      },
      "devices[0].id: must be 1-100 characters",
    ],
  ]

  for (const [kind, edit, expected] of refused)
    it.effect(`refuses a ${kind}`, () =>
      Effect.gen(function* () {
        const name = `${kind.replaceAll(" ", "-")}.yaml`
        const message = yield* refusalOf(name, edit)
        expect(message).toContain(`${join(dir, name)}: ${expected}`)
        // A secret is never echoed in an error.
        expect(message).not.toMatch(/api-key-0123456789|-secret/)
      }),
    )

  it.effect("reports every problem of the file, one per line", () =>
    Effect.gen(function* () {
      const message = yield* refusalOf("many.yaml", (c) => {
        c.devices[0]!.tenant = "nobody"
        c.devices[1]!.class = "thermo2"
      })
      const lines = message.split("\n")
      expect(lines).toHaveLength(2)
      expect(lines[0]).toContain('devices[0].tenant: unknown tenant "nobody"')
      expect(lines[1]).toContain('devices[1].class: unknown device class "thermo2"')
    }),
  )

  it.effect("refuses YAML syntax errors with the line and column", () =>
    Effect.gen(function* () {
      const path = write(
        "syntax.yaml",
        "tenants:\n  - id: demo\n    api_keys: [demo-api-key-0123456789\ndevices: []\n",
      )
      expect(yield* refusal(path)).toMatch(
        new RegExp(`^${escapeRegExp(path)}: syntax error: .+ \\(line 4, column 1\\)`),
      )
      const dup = write("duplicate-key.yaml", "tenants: []\ndevices: []\ntenants: []\n")
      expect(yield* refusal(dup)).toBe(`${dup}: syntax error: Map keys must be unique (line 3, column 1)`)
    }),
  )

  it.effect("refuses JSON syntax errors with the line and column", () =>
    Effect.gen(function* () {
      const path = write("syntax.json", '{\n  "tenants": [\n    {"id": "demo" "api_keys": []}\n  ]\n}\n')
      expect(yield* refusal(path)).toMatch(
        new RegExp(`^${escapeRegExp(path)}: syntax error: .+ \\(line 3, column \\d+\\)`),
      )
    }),
  )

  it.effect("refuses an empty file, a file that is not a mapping, and an unknown extension", () =>
    Effect.gen(function* () {
      const empty = write("empty.yaml", "# nothing\n")
      expect(yield* refusal(empty)).toBe(`${empty}: the file is empty`)
      const list = write("list.yaml", "- a\n- b\n")
      expect(yield* refusal(list)).toBe(
        `${list}: expected a mapping with the keys tenants, device_classes and devices`,
      )
      const toml = write("config.toml", "[tenants]\n")
      expect(yield* refusal(toml)).toBe(`${toml}: unsupported file type ".toml": use .yaml, .yml or .json`)
    }),
  )

  it.effect("refuses a file that cannot be read", () =>
    Effect.gen(function* () {
      const path = join(dir, "absent.yaml")
      expect(yield* refusal(path)).toMatch(new RegExp(`^${escapeRegExp(path)}: cannot read the file: ENOENT`))
    }),
  )
})

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
