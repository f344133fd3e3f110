import { spawn } from "node:child_process"
import { existsSync, mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { ConfigProvider, Context, Effect, Either, Layer } from "effect"
import { Mutation, Registry, RegistryUnavailable } from "../../src/tenancy/Registry.js"
import * as SqliteRegistry from "../../src/tenancy/SqliteRegistry.js"
import { registryContract } from "./registry.contract.js"

const tempDir = () => mkdtempSync(join(tmpdir(), "sluice-registry-"))

registryContract("embedded (SQLite)", {
  fresh: () => ({ id: tempDir() }),
  open: (store) => SqliteRegistry.layerWith({ dataDir: store.id }),
})

const connect = (config: SqliteRegistry.SqliteRegistryConfig) =>
  Effect.map(Layer.build(SqliteRegistry.layerWith(config)), Context.get(Registry))

/** Another process's connection to the file, for what the API cannot do. */
const raw = (dataDir: string) => new Database(join(dataDir, SqliteRegistry.FILE_NAME))

const device = (id: string) =>
  Mutation.Put({
    row: {
      kind: "device",
      value: { id, tenantId: "acme", className: "thermo", enabled: true, credentials: [], source: "api" },
    },
  })

const expectUnavailable = <A, E>(effect: Effect.Effect<A, E>, operation: string, reason: RegExp) =>
  Effect.gen(function* () {
    const result = yield* Effect.either(effect)
    expect(Either.isLeft(result)).toBe(true)
    const error = Either.isLeft(result) ? result.left : undefined
    expect(error).toBeInstanceOf(RegistryUnavailable)
    expect((error as RegistryUnavailable).operation).toBe(operation)
    expect((error as RegistryUnavailable).reason).toMatch(reason)
  })

/**
 * A writer process: on "go" (its stdin), opens the registry in `dataDir` and commits `count`
 * devices one by one, each at the revision it reads, reading again on a conflict. Its result is
 * how many conflicts it met.
 */
const startWriter = (dataDir: string, name: string, count: number) => {
  const module = new URL("../../src/tenancy/SqliteRegistry.ts", import.meta.url).href
  const registryModule = new URL("../../src/tenancy/Registry.ts", import.meta.url).href
  const script = `
    import { Effect } from "effect"
    import * as SqliteRegistry from ${JSON.stringify(module)}
    import { Mutation } from ${JSON.stringify(registryModule)}
    const program = Effect.gen(function* () {
      console.log("ready")
      yield* Effect.promise(() => new Promise((go) => process.stdin.once("data", go)))
      const registry = yield* SqliteRegistry.make({ dataDir: ${JSON.stringify(dataDir)} })
      let conflicts = 0
      for (let i = 0; i < ${count}; i++) {
        const value = { id: "${name}-" + i, tenantId: "acme", className: "thermo", enabled: true, credentials: [], source: "api" }
        for (;;) {
          const revision = yield* registry.revision
          const result = yield* Effect.either(registry.commit([Mutation.Put({ row: { kind: "device", value } })], revision))
          if (result._tag === "Right") break
          if (result.left._tag !== "RegistryConflict") return yield* result.left
          conflicts++
        }
      }
      return conflicts
    })
    Effect.runPromise(Effect.scoped(program)).then((n) => {
      console.log("conflicts " + n)
      process.exit(0)
    })
  `
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    stdio: ["pipe", "pipe", "inherit"],
  })
  let out = ""
  let onReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => {
    onReady = resolve
  })
  child.stdout!.on("data", (chunk: Buffer) => {
    out += chunk.toString("utf8")
    if (out.includes("ready")) onReady()
  })
  const result = new Promise<number>((resolve, reject) => {
    child.on("error", reject)
    child.on("exit", (code) => {
      const match = /conflicts (\d+)/.exec(out)
      if (code === 0 && match) resolve(Number(match[1]))
      else reject(new Error(`writer ${name} exited with ${code}: ${out}`))
    })
  })
  return { ready, result, go: () => child.stdin!.write("go\n") }
}

describe("SqliteRegistry", () => {
  it.scoped("a corrupt row is RegistryUnavailable naming its kind and id, not a crash", () =>
    Effect.gen(function* () {
      const dataDir = tempDir()
      const registry = yield* connect({ dataDir })
      yield* registry.commit([device("d1"), device("d2")], 0)
      const db = raw(dataDir)
      yield* Effect.addFinalizer(() => Effect.sync(() => db.close()))
      const corrupt = (body: string) =>
        db.prepare("UPDATE rows SET body = ? WHERE kind = 'device' AND id = 'd2'").run(body)

      corrupt("{not json")
      yield* expectUnavailable(registry.load, "load", /device "d2" is corrupt/)
      yield* expectUnavailable(registry.changesSince(0), "changesSince", /device "d2" is corrupt/)
      // The revision still answers; so do changes that do not include the row.
      expect(yield* registry.revision).toBe(1)
      expect(yield* registry.changesSince(1)).toEqual({ revision: 1, put: [], removed: [] })

      // JSON, but not of a device: a field of the wrong type, a missing one, another row's id.
      corrupt(JSON.stringify({ id: "d2", tenantId: "acme", className: "thermo", enabled: "yes" }))
      yield* expectUnavailable(registry.load, "load", /device "d2" is corrupt: .*enabled/)
      corrupt(
        JSON.stringify({ id: "d2", tenantId: "acme", className: "thermo", enabled: true, source: "api" }),
      )
      yield* expectUnavailable(registry.load, "load", /device "d2" is corrupt: .*credentials/)
      corrupt(
        JSON.stringify({
          id: "d1",
          tenantId: "acme",
          className: "thermo",
          enabled: true,
          credentials: [],
          source: "api",
        }),
      )
      yield* expectUnavailable(registry.load, "load", /device "d2" is corrupt: its body is of "d1"/)
      db.prepare("UPDATE rows SET kind = 'widget' WHERE id = 'd2'").run()
      yield* expectUnavailable(registry.load, "load", /widget "d2" is corrupt: unknown kind/)

      // Written again through the API, it is whole again.
      db.prepare("DELETE FROM rows WHERE id = 'd2'").run()
      yield* registry.commit([device("d2")], 1)
      expect([...(yield* registry.load).devices.keys()].sort()).toEqual(["d1", "d2"])
    }),
  )

  it.scoped("a row that would not read back fails its commit, and nothing of the batch is written", () =>
    Effect.gen(function* () {
      const registry = yield* connect({ dataDir: tempDir() })
      const nan = Mutation.Put({
        row: { kind: "tenant", value: { id: "acme", maxMessagesPerSecond: Number.NaN, source: "api" } },
      })
      yield* expectUnavailable(
        registry.commit([device("d1"), nan], 0),
        "commit",
        /tenant "acme" would not read back: .*maxMessagesPerSecond/,
      )
      expect(yield* registry.revision).toBe(0)
      expect((yield* registry.load).devices.size).toBe(0)
    }),
  )

  it.scoped(
    "a writer holding the lock past the busy timeout: commit is RegistryUnavailable, reads go on",
    () =>
      Effect.gen(function* () {
        const dataDir = tempDir()
        const registry = yield* connect({ dataDir, busyTimeoutMs: 200 })
        yield* registry.commit([device("d1")], 0)
        // Another process holds the write lock.
        const locker = raw(dataDir)
        yield* Effect.addFinalizer(() => Effect.sync(() => locker.close()))
        locker.exec("BEGIN IMMEDIATE")
        const started = performance.now()
        yield* expectUnavailable(registry.commit([device("d2")], 1), "commit", /locked|busy/i)
        expect(performance.now() - started).toBeGreaterThanOrEqual(150)
        // WAL: readers do not wait for the writer.
        expect(yield* registry.revision).toBe(1)
        expect([...(yield* registry.load).devices.keys()]).toEqual(["d1"])
        locker.exec("ROLLBACK")
        // Nothing of the failed commit was written; retried, it goes through.
        expect(yield* registry.commit([device("d2")], 1)).toBe(2)
      }),
  )

  it("processes starting together on a fresh directory all commit, each retrying its conflicts", {
    timeout: 60_000,
  }, async () => {
    const dataDir = join(tempDir(), "nested", "data")
    const perProcess = 25
    const writers = ["a", "b", "c", "d"].map((name) => startWriter(dataDir, name, perProcess))
    await Promise.all(writers.map((w) => w.ready))
    for (const w of writers) w.go()
    const results = await Promise.all(writers.map((w) => w.result))
    const registry = await Effect.runPromise(
      Effect.scoped(Effect.flatMap(connect({ dataDir }), (r) => r.load)),
    )
    expect(registry.revision).toBe(4 * perProcess)
    expect(registry.devices.size).toBe(4 * perProcess)
    console.log(`registry: 4 writer processes, conflicts retried: ${results.join(", ")}`)
  })

  it.scoped("layer: registry.sqlite in the configured data directory", () =>
    Effect.gen(function* () {
      const dataDir = tempDir()
      const provider = ConfigProvider.fromMap(new Map([["SLUICE_DATA_DIR", dataDir]]), {
        pathDelim: "_",
      }).pipe(ConfigProvider.constantCase)
      const registry = yield* Layer.build(SqliteRegistry.layer).pipe(
        Effect.map(Context.get(Registry)),
        Effect.withConfigProvider(provider),
      )
      yield* registry.commit([device("d1")], 0)
      expect(existsSync(join(dataDir, "registry.sqlite"))).toBe(true)
      const db = raw(dataDir)
      yield* Effect.addFinalizer(() => Effect.sync(() => db.close()))
      expect(db.pragma("journal_mode", { simple: true })).toBe("wal")
      expect(db.prepare("SELECT value FROM meta WHERE key = 'revision'").get()).toEqual({ value: 1 })
    }),
  )
})
