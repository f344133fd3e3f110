/** The start-up banner prints a credential and an API key for the bundled demo only. */
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect } from "effect"
import * as IngressConfig from "../../src/ingress/IngressConfig.js"
import * as Welcome from "../../src/platform/Welcome.js"
import * as ConfigFile from "../../src/tenancy/ConfigFile.js"

const http = { host: "127.0.0.1", port: 8080, maxConnections: 1024 }
const root = join(import.meta.dirname, "../..")
const demo = await Effect.runPromise(ConfigFile.load(join(root, "config/demo.yaml")))
const isDemo = (path: string) =>
  Effect.runSync(
    ConfigFile.isBundledDemo.pipe(
      Effect.withConfigProvider(ConfigProvider.fromJson({ sluice: { config_file: path } })),
    ),
  )

describe("the start-up banner", () => {
  it("prints the demo's credential and key only for the bundled demo file", () => {
    expect(isDemo(join(root, "config/demo.yaml"))).toBe(true)
    expect(isDemo("/etc/sluice/platform.yaml")).toBe(false)
    const roles = ["ingress", "processor", "serving"] as const
    const shown = Welcome.banner(demo, roles, IngressConfig.defaults, http, true).join("\n")
    expect(shown).toContain("thermo-1-secret")
    expect(shown).toContain("demo-api-key-0123456789")
    const hidden = Welcome.banner(demo, roles, IngressConfig.defaults, http, false).join("\n")
    expect(hidden).not.toContain("thermo-1-secret")
    expect(hidden).not.toContain("demo-api-key")
    expect(hidden).toContain("shown once by the admin API")
  })
})
