/**
 * The Registry contract on DynamoDB (dynalite, a fresh table per store), and what only this
 * backend has to prove: a commit of 10,000 rows is invisible until its one commit point, a losing
 * writer's versions are never visible (nor those of a writer that died before its commit point),
 * writers racing one revision have exactly one winner, compaction deletes only what no reader
 * needs, and the layer picks this backend only when SLUICE_REGISTRY_TABLE is set.
 */
import { DynamoDBClient, ScanCommand } from "@aws-sdk/client-dynamodb"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Clock, ConfigProvider, Context, Deferred, Effect, Either, Layer, Redacted } from "effect"
import * as DynamoRegistry from "../../src/tenancy/DynamoRegistry.js"
import { Mutation, type RegDevice, Registry, RegistryConflict } from "../../src/tenancy/Registry.js"
import * as RegistryBackend from "../../src/tenancy/RegistryBackend.js"
import type { DynamoRegistryConfig } from "../../src/tenancy/RegistryConfig.js"
import { type DynamoEmulator, startDynalite } from "../support/emulators.js"
import { registryContract } from "./registry.contract.js"

let dynalite: DynamoEmulator

beforeAll(async () => {
  dynalite = await startDynalite()
})

afterAll(async () => {
  await dynalite?.stop()
})

let tables = 0
const freshTable = () => `registry-${process.pid}-${++tables}`

const configFor = (table: string, extra: Partial<DynamoRegistryConfig> = {}): DynamoRegistryConfig => ({
  table,
  endpoint: dynalite.endpoint,
  region: "us-east-1",
  accessKeyId: "AKIAEMULATOR00000000",
  secretAccessKey: Redacted.make("emulator-secret"),
  ...extra,
})

registryContract("distributed (DynamoDB)", {
  fresh: () => ({ id: freshTable() }),
  // Small Scan pages, so every read pages. The suite runs under @effect/vitest's TestClock, which
  // never advances on its own: the real clock lets start-up poll a new table until it is ACTIVE.
  open: (store) =>
    DynamoRegistry.layerWith(configFor(store.id, { scanPageItems: 500 })).pipe(
      Layer.provide(Layer.setClock(Clock.make())),
    ),
})

const connect = (
  table: string,
  extra: Partial<DynamoRegistryConfig> = {},
  options: DynamoRegistry.DynamoRegistryOptions = {},
) => DynamoRegistry.make(configFor(table, extra), options)

const device = (id: string, enabled = true): RegDevice => ({
  id,
  tenantId: "acme",
  className: "thermo",
  enabled,
  credentials: [{ hash: `sha256:${id}`, expiresAt: null }],
  source: "api",
})
const putDevice = (value: RegDevice) => Mutation.Put({ row: { kind: "device", value } })

/** Every item of the table, raw: what the API does not show (uncommitted versions). */
const rawItems = (table: string) =>
  Effect.promise(async () => {
    const client = new DynamoDBClient({
      endpoint: dynalite.endpoint,
      region: "us-east-1",
      credentials: { accessKeyId: "AKIAEMULATOR00000000", secretAccessKey: "emulator-secret" },
    })
    try {
      const items = []
      let start: Record<string, never> | undefined
      do {
        const page = await client.send(
          new ScanCommand({ TableName: table, ConsistentRead: true, ExclusiveStartKey: start }),
        )
        items.push(...(page.Items ?? []))
        start = page.LastEvaluatedKey as Record<string, never> | undefined
      } while (start !== undefined)
      return items
    } finally {
      client.destroy()
    }
  })

const versionsOf = (table: string, pkPrefix: string) =>
  Effect.map(rawItems(table), (items) => items.filter((i) => i.pk?.S?.startsWith(pkPrefix)))

describe("DynamoRegistry", () => {
  it.scopedLive(
    "a commit of 10,000 devices is invisible to readers until its commit point, then whole",
    () =>
      Effect.gen(function* () {
        const table = freshTable()
        const reader = yield* connect(table)
        const seen: Array<{ written: number; revision: number; devices: number; changes: number }> = []
        const look = (written: number) =>
          Effect.gen(function* () {
            const state = yield* reader.load
            const changes = yield* reader.changesSince(1)
            seen.push({
              written,
              revision: state.revision,
              devices: state.devices.size,
              changes: changes.put.length + changes.removed.length,
            })
          }).pipe(Effect.orDie)
        const total = 10_000
        let looked = 0
        // Only during the bulk commit.
        let armed = false
        const writer = yield* connect(
          table,
          {},
          {
            // Readers look between the batch writes: after the first, halfway, after the last.
            onVersionsWritten: (written) => {
              const due = armed && (looked === 0 || (looked === 1 && written >= total / 2))
              if (!due) return Effect.void
              looked++
              return look(written)
            },
            beforeCommitPoint: Effect.suspend(() => (armed ? look(total) : Effect.void)),
          },
        )
        yield* writer.commit([putDevice(device("first"))], 0)
        const devices = Array.from({ length: total }, (_, i) => device(`bulk-${String(i).padStart(5, "0")}`))
        // Meanwhile, another reader polls: never a part of the batch.
        const polled: Array<number> = []
        const done = yield* Deferred.make<void>()
        const poller = yield* Effect.fork(
          Effect.gen(function* () {
            while (!(yield* Deferred.isDone(done))) {
              const state = yield* reader.load
              polled.push(state.devices.size)
              yield* Effect.sleep("20 millis")
            }
          }).pipe(Effect.orDie),
        )
        armed = true
        expect(yield* writer.commit(devices.map(putDevice), 1)).toBe(2)
        yield* Deferred.succeed(done, undefined)
        yield* poller.await
        // After the first batch, halfway (the order of the two may vary) and after the last.
        const written = seen.map((s) => s.written)
        expect(written).toHaveLength(3)
        expect(Math.min(...written)).toBeLessThan(total / 2)
        expect(written.filter((n) => n >= total / 2 && n < total)).toHaveLength(1)
        expect(written[2]).toBe(total)
        expect(seen.every((s) => s.revision === 1 && s.devices === 1 && s.changes === 0)).toBe(true)
        expect(polled.length).toBeGreaterThan(0)
        expect(polled.every((n) => n === 1 || n === total + 1)).toBe(true)
        const after = yield* reader.load
        expect(after.revision).toBe(2)
        expect(after.devices.size).toBe(total + 1)
        expect((yield* reader.changesSince(1)).put).toHaveLength(total)
      }),
    120_000,
  )

  it.scopedLive("a losing writer's versions are never visible, and it deletes them", () =>
    Effect.gen(function* () {
      const table = freshTable()
      const winner = yield* connect(table)
      yield* winner.commit([putDevice(device("d1"))], 0)
      // The loser writes its versions at revision 2, then waits while the winner commits 2.
      const written = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const loser = yield* connect(
        table,
        {},
        {
          beforeCommitPoint: Effect.zipRight(Deferred.succeed(written, undefined), Deferred.await(release)),
        },
      )
      const losing = yield* Effect.fork(
        Effect.either(loser.commit([putDevice(device("d1", false)), putDevice(device("loser"))], 1)),
      )
      yield* Deferred.await(written)
      // Its versions are in the table, not in the registry.
      expect(yield* versionsOf(table, "device#loser")).toHaveLength(1)
      expect([...(yield* winner.load).devices.keys()]).toEqual(["d1"])
      expect(yield* winner.commit([putDevice(device("winner"))], 1)).toBe(2)
      const state = yield* winner.load
      expect([...state.devices.keys()].sort()).toEqual(["d1", "winner"])
      expect(state.devices.get("d1")?.enabled).toBe(true)
      yield* Deferred.succeed(release, undefined)
      const result = yield* losing.await.pipe(Effect.flatten)
      expect(Either.isLeft(result)).toBe(true)
      const error = Either.isLeft(result) ? result.left : undefined
      expect(error).toBeInstanceOf(RegistryConflict)
      expect(error).toMatchObject({ expected: 1, actual: 2 })
      // Cleaned up; the registry is the winner's.
      expect(yield* versionsOf(table, "device#loser")).toEqual([])
      expect(yield* versionsOf(table, "device#d1")).toHaveLength(1)
      expect((yield* winner.load).devices.get("d1")?.enabled).toBe(true)
      expect((yield* winner.changesSince(1)).put.map((r) => (r.value as RegDevice).id)).toEqual(["winner"])
    }),
  )

  it.scopedLive(
    "a writer that dies before its commit point leaves versions no reader sees; compaction deletes them",
    () =>
      Effect.gen(function* () {
        const table = freshTable()
        const registry = yield* connect(table, { compactEvery: 0 })
        yield* registry.commit([putDevice(device("d1"))], 0)
        const dying = yield* connect(
          table,
          {},
          { beforeCommitPoint: Effect.die("the writer's machine died") },
        )
        const died = yield* Effect.exit(
          dying.commit([putDevice(device("ghost")), putDevice(device("d1", false))], 1),
        )
        expect(died._tag).toBe("Failure")
        expect(yield* versionsOf(table, "device#ghost")).toHaveLength(1)
        // Revision 1 still, and the next commit takes revision 2 under its own id.
        expect(yield* registry.revision).toBe(1)
        expect(yield* registry.commit([putDevice(device("d2"))], 1)).toBe(2)
        const state = yield* registry.load
        expect([...state.devices.keys()].sort()).toEqual(["d1", "d2"])
        expect(state.devices.get("d1")?.enabled).toBe(true)
        const changes = yield* registry.changesSince(0)
        expect(changes.put.map((r) => (r.value as RegDevice).id).sort()).toEqual(["d1", "d2"])
        expect(changes.removed).toEqual([])
        // Compaction: the dead writer's two versions go, nothing else.
        expect(yield* registry.compact).toEqual({ garbage: 2, superseded: 0 })
        expect(yield* versionsOf(table, "device#ghost")).toEqual([])
        expect(yield* versionsOf(table, "device#d1")).toHaveLength(1)
        expect(yield* registry.load).toEqual(state)
      }),
  )

  it.scopedLive("writers racing one revision from five connections: exactly one wins, whole", () =>
    Effect.gen(function* () {
      const table = freshTable()
      const writers = yield* Effect.all(Array.from({ length: 5 }, () => connect(table)))
      yield* writers[0]!.commit([putDevice(device("seed"))], 0)
      const results = yield* Effect.all(
        writers.map((w, i) =>
          Effect.either(
            w.commit(
              Array.from({ length: 60 }, (_, j) => putDevice(device(`w${i}-${j}`))),
              1,
            ),
          ),
        ),
        { concurrency: "unbounded" },
      )
      const winners = results.flatMap((r, i) => (Either.isRight(r) ? [i] : []))
      expect(winners).toHaveLength(1)
      expect(results.filter(Either.isRight).map((r) => r.right)).toEqual([2])
      for (const r of results.filter(Either.isLeft)) {
        expect(r.left).toBeInstanceOf(RegistryConflict)
        expect(r.left).toMatchObject({ expected: 1, actual: 2 })
      }
      const state = yield* writers[1]!.load
      expect(state.revision).toBe(2)
      expect([...state.devices.keys()].sort()).toEqual(
        ["seed", ...Array.from({ length: 60 }, (_, j) => `w${winners[0]}-${j}`)].sort(),
      )
      // Every loser cleaned up after itself: only the winner's versions and the seed are left.
      expect(yield* versionsOf(table, "device#")).toHaveLength(61)
    }),
  )

  it.scopedLive("compaction keeps the newest version of every row and what recent readers need", () =>
    Effect.gen(function* () {
      const table = freshTable()
      // Versions superseded 3 revisions back (and any time ago) may go; compaction only when asked.
      const registry = yield* connect(table, { compactEvery: 0, keepRevisions: 3, keepMs: 0 })
      // d1 changes at every revision 1..10; d2 is written at 1 and removed at 2.
      yield* registry.commit([putDevice(device("d1")), putDevice(device("d2"))], 0)
      yield* registry.commit(
        [putDevice(device("d1", false)), Mutation.Remove({ kind: "device", id: "d2" })],
        1,
      )
      for (let r = 2; r < 10; r++) yield* registry.commit([putDevice(device("d1", r % 2 === 0))], r)
      const before = yield* registry.load
      const changes = yield* registry.changesSince(6)
      expect(yield* versionsOf(table, "device#d1")).toHaveLength(10)
      // Head 10: d1's version 7 is the newest at least 3 behind; versions 1..6 go, and d2's put.
      expect(yield* registry.compact).toEqual({ garbage: 0, superseded: 7 })
      expect(
        (yield* versionsOf(table, "device#d1")).map((i) => Number(i.rev?.N)).sort((a, b) => a - b),
      ).toEqual([7, 8, 9, 10])
      // The tombstone stays: readers catching up still learn of the removal.
      expect(yield* versionsOf(table, "device#d2")).toHaveLength(1)
      expect(yield* registry.load).toEqual(before)
      expect(yield* registry.changesSince(6)).toEqual(changes)
      expect((yield* registry.changesSince(0)).removed).toEqual([{ kind: "device", id: "d2" }])
      // Nothing more to do.
      expect(yield* registry.compact).toEqual({ garbage: 0, superseded: 0 })
    }),
  )

  it.scopedLive("a writer compacts by itself every `compactEvery` revisions", () =>
    Effect.gen(function* () {
      const table = freshTable()
      const registry = yield* connect(table, { compactEvery: 4, keepRevisions: 1, keepMs: 0 })
      /** Waits (bounded) until d1 has at most two versions left; how many it has. */
      const compacted = Effect.gen(function* () {
        let left = Number.POSITIVE_INFINITY
        for (let i = 0; i < 100 && left > 2; i++) {
          left = (yield* versionsOf(table, "device#d1")).length
          if (left > 2) yield* Effect.sleep("50 millis")
        }
        return left
      })
      // In the background after revision 4, then after 8: the two newest versions remain.
      for (let r = 0; r < 4; r++) yield* registry.commit([putDevice(device("d1", r % 2 === 0))], r)
      expect(yield* compacted).toBe(2)
      for (let r = 4; r < 8; r++) yield* registry.commit([putDevice(device("d1", r % 2 === 0))], r)
      expect(yield* compacted).toBe(2)
      expect(
        (yield* versionsOf(table, "device#d1")).map((i) => Number(i.rev?.N)).sort((a, b) => a - b),
      ).toEqual([7, 8])
      expect((yield* registry.load).devices.get("d1")?.enabled).toBe(false)
    }),
  )

  it.scopedLive("a row too large for an item fails its commit before anything is written", () =>
    Effect.gen(function* () {
      const table = freshTable()
      const registry = yield* connect(table)
      const huge: RegDevice = {
        ...device("huge"),
        credentials: [{ hash: "x".repeat(400_000), expiresAt: null }],
      }
      const result = yield* Effect.either(registry.commit([putDevice(device("d1")), putDevice(huge)], 0))
      expect(Either.isLeft(result) && result.left._tag).toBe("RegistryUnavailable")
      expect(Either.isLeft(result) && result.left.message).toMatch(/device "huge" does not fit/)
      expect(yield* registry.revision).toBe(0)
      expect(yield* rawItems(table)).toEqual([])
    }),
  )

  it.scopedLive("refuses a table keyed otherwise (another Sluice table named by mistake)", () =>
    Effect.gen(function* () {
      const table = freshTable()
      // A lease table: keyed by shardId alone.
      const { make } = yield* Effect.promise(() => import("../../src/stream/DynamoShardLeases.js"))
      yield* make({ ...configFor(table) }).pipe(Effect.orDie)
      const result = yield* Effect.either(connect(table))
      expect(Either.isLeft(result) && result.left.message).toMatch(
        /is keyed shardId:HASH, not pk:HASH,sk:RANGE: is it another table\?/,
      )
    }),
  )

  it.scopedLive(
    "RegistryBackend.layer: DynamoDB with SLUICE_REGISTRY_TABLE, the data directory without",
    () =>
      Effect.gen(function* () {
        const table = freshTable()
        const provider = (entries: Record<string, string>) =>
          ConfigProvider.fromMap(new Map(Object.entries(entries)), { pathDelim: "_" }).pipe(
            ConfigProvider.constantCase,
          )
        const dataDir = yield* Effect.promise(async () => {
          const { mkdtempSync } = await import("node:fs")
          const { tmpdir } = await import("node:os")
          const { join } = await import("node:path")
          return mkdtempSync(join(tmpdir(), "sluice-registry-backend-"))
        })
        const viaDynamo = yield* Layer.build(RegistryBackend.layer).pipe(
          Effect.map(Context.get(Registry)),
          Effect.withConfigProvider(
            provider({
              SLUICE_DATA_DIR: dataDir,
              SLUICE_REGISTRY_TABLE: table,
              SLUICE_REGISTRY_ENDPOINT: dynalite.endpoint,
              SLUICE_KINESIS_ACCESS_KEY_ID: "AKIAEMULATOR00000000",
              SLUICE_KINESIS_SECRET_ACCESS_KEY: "emulator-secret",
            }),
          ),
        )
        expect(yield* viaDynamo.commit([putDevice(device("d1"))], 0)).toBe(1)
        const direct = yield* connect(table)
        expect([...(yield* direct.load).devices.keys()]).toEqual(["d1"])
        const viaFile = yield* Layer.build(RegistryBackend.layer).pipe(
          Effect.map(Context.get(Registry)),
          Effect.withConfigProvider(provider({ SLUICE_DATA_DIR: dataDir, SLUICE_REGISTRY_TABLE: " " })),
        )
        expect(yield* viaFile.revision).toBe(0)
      }),
  )
})
