/**
 * The configuration file applied to the device registry (`sluice apply`), and the Tenancy every
 * process keeps in step with the registry: real SQLite registries in temp directories, the real
 * `sluice` command line for `apply`.
 */
import { execFile } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option } from "effect"
import * as Apply from "../../src/tenancy/Apply.js"
import * as ConfigFile from "../../src/tenancy/ConfigFile.js"
import type { PlatformConfig } from "../../src/tenancy/PlatformConfig.js"
import { Mutation, type RegDevice, Registry } from "../../src/tenancy/Registry.js"
import { hashSecret } from "../../src/tenancy/Secrets.js"
import * as SqliteRegistry from "../../src/tenancy/SqliteRegistry.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"

const root = fileURLToPath(new URL("../..", import.meta.url))
const demo = await Effect.runPromise(ConfigFile.load(join(root, "config/demo.yaml")))
const fresh = () =>
  SqliteRegistry.layerWith({ dataDir: mkdtempSync(join(tmpdir(), "sluice-apply-")), fsync: false })

/** The demo without its 20,000-device fleet, and smaller variants of it. */
const small: PlatformConfig = { ...demo, fleets: [] }

describe("sluice apply", () => {
  it.scoped(
    "creates, then changes nothing the second time; a changed class is a new version; a dropped device goes",
    () =>
      Effect.gen(function* () {
        const first = yield* Apply.apply(small)
        expect(first.created.filter((c) => c.kind === "device").length).toBe(small.devices.length)
        expect(first.changed).toEqual([])
        const again = yield* Apply.apply(small)
        expect([again.created, again.changed, again.removed]).toEqual([[], [], []])
        expect(again.revision).toBe(first.revision)

        const thermostat = small.device_classes.find((c) => c.name === "thermostat")!
        const changed: PlatformConfig = {
          ...small,
          device_classes: small.device_classes.map((c) =>
            c.name === "thermostat"
              ? { ...c, fields: { ...c.fields, note: { type: "string", optional: true } } }
              : c,
          ),
          devices: small.devices.filter((d) => d.id !== "thermo-2"),
        }
        const third = yield* Apply.apply(changed)
        expect(third.changed).toEqual([{ kind: "class", id: "thermostat" }])
        expect(third.removed).toEqual([{ kind: "device", id: "thermo-2" }])
        const state = yield* Effect.flatMap(Registry, (r) => r.load)
        const versions = state.classes.get("thermostat")!.versions
        expect(versions.map((v) => v.version)).toEqual([1, 2])
        expect(versions[0]!.definition).toEqual(thermostat)
        // Secrets are hashes only.
        expect(state.devices.get("thermo-1")!.credentials).toEqual([
          { hash: hashSecret("thermo-1-secret"), expiresAt: null },
        ])
      }).pipe(Effect.provide(fresh())),
  )

  it.scoped(
    "carries each tenant's retentions to the registry and Tenancy; a change is a changed tenant",
    () =>
      Effect.gen(function* () {
        const withRetention = (raw: number | undefined, rollup: number | undefined): PlatformConfig => ({
          ...small,
          tenants: small.tenants.map((t, i) =>
            i === 0
              ? {
                  ...t,
                  ...(raw === undefined ? {} : { raw_retention_days: raw }),
                  ...(rollup === undefined ? {} : { rollup_retention_days: rollup }),
                }
              : t,
          ),
        })
        const first = small.tenants[0]!.id
        yield* Apply.apply(withRetention(30, 400))
        const registry = yield* Registry
        const row = (yield* registry.load).tenants.get(first)!
        expect([row.rawRetentionDays, row.rollupRetentionDays]).toEqual([30, 400])
        const tenancy = Tenancy.fromConfig(withRetention(30, 400))
        expect(tenancy.tenants.find((t) => t.tenantId === first)).toEqual({
          tenantId: first,
          rawRetentionDays: 30,
          rollupRetentionDays: 400,
        })

        const changed = yield* Apply.apply(withRetention(7, undefined))
        expect(changed.changed).toEqual([{ kind: "tenant", id: first }])
        const after = (yield* registry.load).tenants.get(first)!
        expect([after.rawRetentionDays, after.rollupRetentionDays]).toEqual([7, undefined])

        // The registry's rules refuse what the file's schema would (for any writer).
        const refused = yield* Effect.either(Apply.apply(withRetention(30, 10)))
        expect(Either.isLeft(refused) && refused.left.message).toContain(
          `tenant ${first}: rollup_retention_days (10) must be at least raw_retention_days (30)`,
        )
      }).pipe(Effect.provide(fresh())),
  )

  it.scoped("never touches rows the admin API owns, and refuses a file that names one, with the reason", () =>
    Effect.gen(function* () {
      yield* Apply.apply(small)
      const registry = yield* Registry
      const state = yield* registry.load
      yield* registry.commit(
        [
          Mutation.Put({
            row: {
              kind: "device",
              value: {
                id: "api-made",
                tenantId: "demo",
                className: "thermostat",
                enabled: true,
                credentials: [{ hash: hashSecret("x".repeat(32)), expiresAt: null }],
                source: "api",
              },
            },
          }),
        ],
        state.revision,
      )
      const again = yield* Apply.apply(small)
      expect(again.removed).toEqual([])
      expect((yield* registry.load).devices.has("api-made")).toBe(true)

      const naming: PlatformConfig = {
        ...small,
        devices: [
          ...small.devices,
          { id: "api-made", tenant: "demo", class: "thermostat", credential: "y".repeat(16) },
        ],
      }
      const refused = yield* Effect.either(Apply.apply(naming))
      expect(Either.isLeft(refused) && refused.left.message).toMatch(
        /device api-made: is managed by the admin API/,
      )
    }).pipe(Effect.provide(fresh())),
  )

  it.scoped("--dry-run says what it would do and writes nothing", () =>
    Effect.gen(function* () {
      const dry = yield* Apply.apply(small, { dryRun: true })
      expect(dry.created.length).toBeGreaterThan(0)
      expect((yield* Effect.flatMap(Registry, (r) => r.load)).revision).toBe(0)
      expect(Apply.describeReport(dry, true)).toMatch(
        /^dry run: \d+ created, 0 changed, 0 removed \(nothing written\)/,
      )
    }).pipe(Effect.provide(fresh())),
  )

  it("the sluice command: prints what changed, exits 1 with the reason on a bad file", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "sluice-apply-cli-"))
    const file = join(dataDir, "platform.yaml")
    writeFileSync(file, readFileSync(join(root, "config/demo.yaml"), "utf8"))
    const run = (...args: Array<string>) =>
      promisify(execFile)(
        process.execPath,
        ["--import", "tsx", "src/main.ts", ...args, "--data-dir", dataDir],
        {
          cwd: root,
        },
      ).then(
        ({ stdout }) => ({ code: 0, out: stdout }),
        (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout + e.stderr }),
      )
    const first = await run("apply", file)
    expect(first.code).toBe(0)
    expect(first.out).toMatch(/^\d+ created, 0 changed, 0 removed \(registry revision 1\)/)
    expect((await run("apply", file)).out).toMatch(/^0 created, 0 changed, 0 removed/)
    writeFileSync(file, "tenants: [{ id: 7 }]\n")
    const bad = await run("apply", file)
    expect(bad.code).toBe(1)
    expect(bad.out).toMatch(/tenants\[0\]/)
  }, 60_000)
})

describe("Tenancy following the registry", () => {
  it.scopedLive(
    "sees a disabled device and a rotated credential within its poll, and tells its watchers",
    () =>
      Effect.gen(function* () {
        yield* Apply.apply(small)
        const registry = yield* Registry
        const tenancy = yield* Tenancy.live({ pollMs: 50 })
        const heard: Array<ReadonlyArray<string>> = []
        tenancy.watch((ids) => heard.push([...ids]))
        expect(Option.isSome(tenancy.authenticateDevice("thermo-1", "thermo-1-secret"))).toBe(true)
        expect(Option.isSome(tenancy.principal("demo-api-key-0123456789"))).toBe(true)

        const update = (f: (d: RegDevice) => Partial<RegDevice>) =>
          Effect.gen(function* () {
            const state = yield* registry.load
            const d = state.devices.get("thermo-1")!
            yield* registry.commit(
              [Mutation.Put({ row: { kind: "device", value: { ...d, ...f(d) } } })],
              state.revision,
            )
          })
        const waitFor = (check: () => boolean) =>
          Effect.gen(function* () {
            for (let i = 0; i < 100 && !check(); i++) yield* Effect.sleep("20 millis")
            return check()
          })

        yield* update(() => ({ enabled: false }))
        expect(
          yield* waitFor(() => Option.isNone(tenancy.authenticateDevice("thermo-1", "thermo-1-secret"))),
        ).toBe(true)
        expect(heard).toEqual([["thermo-1"]])
        expect(tenancy.stillOpens("thermo-1", hashSecret("thermo-1-secret"))).toBe(false)

        // Rotation: the old credential for 300 ms more, the new one from now on.
        const expiresAt = Date.now() + 300
        yield* update(() => ({
          enabled: true,
          credentials: [
            { hash: hashSecret("thermo-1-new-secret"), expiresAt: null },
            { hash: hashSecret("thermo-1-secret"), expiresAt },
          ],
        }))
        expect(
          yield* waitFor(() => Option.isSome(tenancy.authenticateDevice("thermo-1", "thermo-1-new-secret"))),
        ).toBe(true)
        expect(Option.isSome(tenancy.deviceByCredential("thermo-1-secret"))).toBe(true)
        yield* Effect.sleep("400 millis")
        expect(Option.isNone(tenancy.authenticateDevice("thermo-1", "thermo-1-secret"))).toBe(true)
        expect(Option.isNone(tenancy.deviceByCredential("thermo-1-secret"))).toBe(true)
        expect(Option.isSome(tenancy.authenticateDevice("thermo-1", "thermo-1-new-secret"))).toBe(true)
        // Its connections were told at the expiry too.
        expect(heard.filter((ids) => ids.includes("thermo-1")).length).toBeGreaterThanOrEqual(3)
      }).pipe(Effect.provide(fresh())),
  )
})
