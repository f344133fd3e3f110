import { Either, Option } from "effect"
import { describe, expect, it } from "vitest"
import * as ConfigFile from "../../src/tenancy/ConfigFile.js"
import * as Fleet from "../../src/tenancy/Fleet.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"

const yaml = (fleetTenant: string) => `
tenants: [{ id: acme, api_keys: [acme-key-0123456789abcdef] }]
device_classes: [{ name: probe, fields: { t: { type: number } } }]
devices: [{ id: probe-1, tenant: acme, class: probe, credential: probe-1-secret }]
fleets: [{ prefix: sim-, count: 500, tenant: ${fleetTenant}, class: probe, secret: fleet-secret-0123456789 }]
`

describe("fleets", () => {
  it("declares many devices, each with its own derived credential", () => {
    const config = Either.getOrThrow(ConfigFile.parse("fleet.yaml", yaml("acme")))
    const tenancy = Tenancy.fromConfig(config)
    const credential = Fleet.credential("fleet-secret-0123456789", "sim-500")
    expect(Option.getOrThrow(tenancy.authenticateDevice("sim-500", credential))).toMatchObject({
      tenantId: "acme",
      deviceClass: "probe",
    })
    expect(
      Option.isNone(
        tenancy.authenticateDevice("sim-500", Fleet.credential("fleet-secret-0123456789", "sim-499")),
      ),
    ).toBe(true)
    expect(
      Option.isNone(
        tenancy.authenticateDevice("sim-501", Fleet.credential("fleet-secret-0123456789", "sim-501")),
      ),
    ).toBe(true)
    expect(tenancy.devices("acme")).toHaveLength(501)
  })

  it("refuses a fleet of an unknown tenant with the path", () => {
    const result = ConfigFile.parse("fleet.yaml", yaml("nobody"))
    expect(Either.isLeft(result) && result.left.message).toMatch(
      /fleet\.yaml: fleets\[0\]\.tenant: unknown tenant "nobody"/,
    )
  })
})
