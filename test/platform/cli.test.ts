/** The `sluice` flags: what a process runs, and flags as Config keys above the environment. */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as IngressConfig from "../../src/ingress/IngressConfig.js"
import * as Cli from "../../src/platform/Cli.js"
import * as ServingConfig from "../../src/serving/ServingConfig.js"

describe("sluice flags", () => {
  it("runs the supervisor without --role, the roles asked for with it, all of them with --single-process", () => {
    expect(Cli.parse([]).mode).toEqual({ _tag: "Supervisor" })
    expect(Cli.parse(["--role", "serving,processor"]).mode).toEqual({
      _tag: "Roles",
      roles: ["processor", "serving"],
    })
    expect(Cli.parse(["--single-process"]).mode).toEqual({
      _tag: "Roles",
      roles: ["ingress", "processor", "serving"],
    })
  })

  it("refuses an unknown role, and --role with --single-process, naming the problem", () => {
    expect(() => Cli.parse(["--role", "ingress,bogus"])).toThrow(/unknown role "bogus"/)
    expect(() => Cli.parse(["--role", "ingress", "--single-process"])).toThrow(/exclude each other/)
    expect(() => Cli.parse(["--nope"])).toThrow(/nope/)
  })

  it("runs the store copy alone: --copy-store-to with a role is refused", () => {
    expect(Cli.parse(["--copy-store-to", "http://ch:8123"]).mode).toEqual({
      _tag: "CopyStore",
      url: "http://ch:8123",
    })
    expect(() => Cli.parse(["--copy-store-to", "http://ch:8123", "--role", "processor"])).toThrow(
      /platform must be stopped/,
    )
  })

  it("parses migrate [--dry-run | --rebuild-rollups] as a command that runs alone", () => {
    expect(Cli.parse(["migrate"]).mode).toEqual({ _tag: "Migrate", dryRun: false, rebuildRollups: false })
    expect(Cli.parse(["migrate", "--dry-run", "--data-dir", "/tmp/x"]).mode).toEqual({
      _tag: "Migrate",
      dryRun: true,
      rebuildRollups: false,
    })
    expect(Cli.parse(["migrate", "--rebuild-rollups"]).mode).toEqual({
      _tag: "Migrate",
      dryRun: false,
      rebuildRollups: true,
    })
    expect(() => Cli.parse(["--rebuild-rollups"])).toThrow(/--rebuild-rollups goes with migrate/)
    expect(() => Cli.parse(["migrate", "--rebuild-rollups", "--dry-run"])).toThrow(/exclude each other/)
    expect(() => Cli.parse(["migrate", "now"])).toThrow(/migrate: takes no argument/)
    expect(() => Cli.parse(["migrate", "--role", "processor"])).toThrow(/migrate runs alone/)
    expect(() => Cli.parse(["migrate", "--copy-store-to", "http://ch:8123"])).toThrow(/exclude each other/)
    expect(() => Cli.parse(["--dry-run"])).toThrow(/--dry-run goes with apply FILE or migrate/)
    expect(() => Cli.parse(["upgrade"])).toThrow(/the commands are `apply FILE` and `migrate`/)
  })

  it.effect("maps flags onto the tiers' Config keys", () =>
    Effect.gen(function* () {
      const cli = Cli.parse([
        "--host",
        "127.0.0.1",
        "--mqtt-port",
        "1999",
        "--ingress-http-port",
        "1998",
        "--http-port",
        "1997",
        "--ingress-workers",
        "3",
      ])
      const ingress = yield* IngressConfig.config.pipe(Effect.withConfigProvider(cli.provider))
      const http = yield* ServingConfig.http.pipe(Effect.withConfigProvider(cli.provider))
      expect([
        ingress.mqttHost,
        ingress.mqttPort,
        ingress.httpHost,
        ingress.httpPort,
        ingress.workers,
      ]).toEqual(["127.0.0.1", 1999, "127.0.0.1", 1998, 3])
      expect([http.host, http.port]).toEqual(["127.0.0.1", 1997])
    }),
  )
})
