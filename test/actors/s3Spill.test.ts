/**
 * The spill's contract on both backends (SQLite file, S3 through s3rver — an S3-compatible server
 * from npm, started as a child), and the reason for the S3 one: a processor that stops for good
 * while one tenant's storage fails leaves that tenant's batches in the bucket, and another
 * processor, with nothing of the first one's disk, stores them exactly once.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { CreateBucketCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3"
import { createClient } from "@clickhouse/client"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { createChdbConnection } from "chdb/connection"
import { ConfigProvider, Effect, Layer, Option, Redacted } from "effect"
import * as LiveFeed from "../../src/actors/LiveFeed.js"
import * as Processor from "../../src/actors/Processor.js"
import * as ProcessorConfig from "../../src/actors/ProcessorConfig.js"
import * as Spill from "../../src/actors/Spill.js"
import * as Metrics from "../../src/observability/Metrics.js"
import { type DeadLetter, type TelemetryRow, TelemetryStore } from "../../src/storage/TelemetryStore.js"
import { ShardLeases } from "../../src/stream/ShardLeases.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { StreamLog } from "../../src/stream/StreamLog.js"
import * as ConfigFile from "../../src/tenancy/ConfigFile.js"
import { encodeEnvelope, partitionKeyOf } from "../../src/tenancy/Envelope.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"
import { rawSql } from "../storage/fixtures.js"
import { type S3Emulator, S3RVER_CREDENTIALS, startS3rver } from "../support/emulators.js"
import { embeddedLeases, leaseCheckpoint } from "../support/leases.js"
import { polling } from "../support/polling.js"
import { switchableStore } from "../support/switchableStore.js"

const T0 = Date.UTC(2026, 0, 1)

let s3rver: S3Emulator | undefined
let s3: S3Client | undefined
beforeAll(async () => {
  s3rver = await startS3rver()
  s3 = new S3Client({
    endpoint: s3rver.endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: S3RVER_CREDENTIALS,
  })
})
afterAll(async () => {
  s3?.destroy()
  await s3rver?.stop()
})

let buckets = 0
/** A new, empty bucket on s3rver, as the spill's configuration. */
const newBucket = async (): Promise<ProcessorConfig.SpillBucketConfig> => {
  const bucket = `spill-test-${++buckets}`
  await s3!.send(new CreateBucketCommand({ Bucket: bucket }))
  return {
    bucket,
    prefix: "spill/",
    endpoint: s3rver!.endpoint,
    region: "us-east-1",
    accessKeyId: S3RVER_CREDENTIALS.accessKeyId,
    secretAccessKey: Redacted.make(S3RVER_CREDENTIALS.secretAccessKey),
  }
}

/** Keys in the bucket under `prefix`, as an operator would list them. */
const keysIn = (bucket: string, prefix: string) =>
  Effect.promise(() => s3!.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }))).pipe(
    Effect.map((out) => (out.Contents ?? []).map((o) => o.Key!)),
  )

type Place = Pick<ProcessorConfig.ProcessorConfig, "dataDir" | "spillBucket">

interface Backend {
  readonly name: string
  /** A new, empty place for a spill: a directory, or a bucket. */
  readonly place: () => Promise<Place>
}

const backends: ReadonlyArray<Backend> = [
  {
    name: "SQLite",
    place: async () => ({ dataDir: mkdtempSync(join(tmpdir(), "sluice-spill-")), spillBucket: undefined }),
  },
  {
    name: "S3 (s3rver)",
    place: async () => ({
      dataDir: mkdtempSync(join(tmpdir(), "sluice-spill-unused-")),
      spillBucket: await newBucket(),
    }),
  },
]

/** The spill at `place`, through the same selection the processor uses. */
const open = (place: Place, spillMaxBytes = 1024 ** 3) => Spill.fromConfig({ ...place, spillMaxBytes })

const row = (tenantId: string, i: number, pad = 0): TelemetryRow => ({
  tenantId,
  deviceId: "d1",
  deviceClass: "thermostat",
  msgId: `m${i}`,
  ts: T0 + i,
  receivedAt: T0 + i + 5,
  values: {
    temp: 20.5 + i,
    on: i % 2 === 0,
    label: `l${"x".repeat(pad)}`,
    notANumber: Number.NaN,
    up: Number.POSITIVE_INFINITY,
    down: Number.NEGATIVE_INFINITY,
  },
})

const deadLetter = (tenantId: string, i: number): DeadLetter => ({
  tenantId,
  deviceId: "d1",
  receivedAt: T0 + i,
  shardId: "shard-0",
  sequenceNumber: String(i),
  reason: "not JSON",
  raw: "{not json",
})

const entry = (tenantId: string, i: number, pad = 0): Omit<Spill.SpillEntry, "id"> => ({
  token: `${tenantId}-${i}`,
  rows: [row(tenantId, i, pad), row(tenantId, i + 1000, pad)],
  deadLetters: i % 2 === 0 ? [] : [deadLetter(tenantId, i)],
})

/** Drains a tenant as the tenant actor does (oldest, store, remove), returning the tokens in order. */
const drain = (spill: Spill.Spill, tenantId: string) =>
  Effect.gen(function* () {
    const tokens: Array<string> = []
    for (;;) {
      const next = yield* spill.oldest(tenantId)
      if (Option.isNone(next)) return tokens
      tokens.push(next.value.token)
      yield* spill.remove(next.value.id)
    }
  })

describe.each(backends)("the spill on $name", (backend) => {
  it.scoped("keeps each tenant's entries oldest first, whole, and lists the tenants that have some", () =>
    Effect.gen(function* () {
      const spill = yield* open(yield* Effect.promise(backend.place))
      // A tenant id with a separator, a space and a non-ASCII letter: still one tenant.
      const odd = "t/ü x"
      for (const [tenantId, i] of [
        ["a", 1],
        ["b", 1],
        ["a", 2],
        [odd, 1],
        ["a", 3],
        ["b", 2],
      ] as const) {
        yield* spill.put(tenantId, entry(tenantId, i))
      }
      expect([...(yield* spill.tenants)].sort()).toEqual(["a", "b", odd])

      const first = yield* spill.oldest("a")
      expect(Option.map(first, ({ id: _, ...rest }) => rest)).toEqual(Option.some(entry("a", 1)))
      // oldest does not take the entry: asked again, the same one.
      expect(Option.map(yield* spill.oldest("a"), (e) => e.id)).toEqual(Option.map(first, (e) => e.id))

      expect(yield* drain(spill, "a")).toEqual(["a-1", "a-2", "a-3"])
      expect(yield* spill.oldest("a")).toEqual(Option.none())
      expect([...(yield* spill.tenants)].sort()).toEqual(["b", odd])
      // Removing an entry already removed (by another drainer) succeeds.
      yield* spill.remove(Option.getOrThrow(first).id)

      expect(Option.map(yield* spill.oldest(odd), (e) => e.rows)).toEqual(Option.some(entry(odd, 1).rows))
      expect(yield* drain(spill, "b")).toEqual(["b-1", "b-2"])
    }),
  )

  it.scoped("keeps its entries across a reopen", () =>
    Effect.gen(function* () {
      const place = yield* Effect.promise(backend.place)
      yield* Effect.scoped(
        Effect.gen(function* () {
          const spill = yield* open(place)
          yield* spill.put("a", entry("a", 1))
          yield* spill.put("a", entry("a", 2))
        }),
      )
      const again = yield* open(place)
      expect(yield* again.tenants).toEqual(["a"])
      expect(Option.map(yield* again.oldest("a"), ({ id: _, ...rest }) => rest)).toEqual(
        Option.some(entry("a", 1)),
      )
      expect(yield* drain(again, "a")).toEqual(["a-1", "a-2"])
    }),
  )

  it.scoped("refuses a put past its byte budget with SpillFull, and takes one again once room is made", () =>
    Effect.gen(function* () {
      // Entries of ~2.3 kB, so the backends' small differences in what they count do not matter.
      const size = Spill.encodeBody(entry("a", 1, 1000)).length
      const spill = yield* open(yield* Effect.promise(backend.place), Math.floor(size * 3.5))
      for (const i of [1, 2, 3]) yield* spill.put("a", entry("a", i, 1000))
      const refused = yield* Effect.flip(spill.put("b", entry("b", 1, 1000)))
      expect(refused._tag).toBe("SpillFull")
      expect(yield* spill.tenants).toEqual(["a"])
      const oldest = Option.getOrThrow(yield* spill.oldest("a"))
      yield* spill.remove(oldest.id)
      yield* spill.put("b", entry("b", 1, 1000))
      expect([...(yield* spill.tenants)].sort()).toEqual(["a", "b"])
    }),
  )

  it.scopedLive(
    "drained by two drainers at once, stores every entry, oldest first, and a repeat only under its own token",
    () =>
      Effect.gen(function* () {
        const place = yield* Effect.promise(backend.place)
        // Two processors' spills on the same place, each with a drain like the tenant actor's.
        const one = yield* open(place)
        const two = yield* open(place)
        const tokens = Array.from({ length: 20 }, (_, i) => `t-${i}`)
        for (const [i, token] of tokens.entries()) yield* one.put("t", { ...entry("t", i), token })

        // ClickHouse's side, reduced to what matters: an insert under a token seen before is dropped.
        const inserts: Array<string> = []
        const stored: Array<string> = []
        const drainer = (spill: Spill.Spill) =>
          Effect.gen(function* () {
            for (;;) {
              const next = yield* spill.oldest("t")
              if (Option.isNone(next)) return
              inserts.push(next.value.token)
              if (!stored.includes(next.value.token)) stored.push(next.value.token)
              yield* Effect.sleep(`${Math.floor(Math.random() * 4)} millis`)
              yield* spill.remove(next.value.id)
            }
          })
        yield* Effect.all([drainer(one), drainer(two)], { concurrency: 2 })

        // Every entry stored, and first stored in put order; repeats are of tokens already stored.
        expect(stored).toEqual(tokens)
        expect(new Set(inserts)).toEqual(new Set(tokens))
        expect(yield* one.tenants).toEqual([])
        expect(yield* two.oldest("t")).toEqual(Option.none())
      }),
  )
})

describe("the S3 spill", () => {
  it.scoped("keeps one object per entry under <prefix><tenant>/, keys sortable and of one length", () =>
    Effect.gen(function* () {
      const bucket = yield* Effect.promise(newBucket)
      const spill = yield* open({ dataDir: "unused", spillBucket: { ...bucket, prefix: "parked" } })
      for (const i of [1, 2, 3]) yield* spill.put("acme", entry("acme", i))
      const keys = yield* keysIn(bucket.bucket, "parked/")
      expect(keys).toHaveLength(3)
      for (const key of keys) expect(key).toMatch(/^parked\/acme\/\d{15}-[0-9a-f]{16}-\d{12}$/)
      expect([...keys].sort()).toEqual(keys)
      expect(Option.map(yield* spill.oldest("acme"), (e) => e.id)).toEqual(Option.some(keys[0]))
    }),
  )

  it.scoped("counts its budget per processor: entries another processor drained are room again", () =>
    Effect.gen(function* () {
      const bucket = yield* Effect.promise(newBucket)
      const size = Spill.encodeBody(entry("a", 1, 1000)).length
      const budget = Math.floor(size * 2.5)
      const one = yield* open({ dataDir: "unused", spillBucket: bucket }, budget)
      const two = yield* open({ dataDir: "unused", spillBucket: bucket }, budget)
      yield* one.put("a", entry("a", 1, 1000))
      yield* one.put("a", entry("a", 2, 1000))
      expect((yield* Effect.flip(one.put("a", entry("a", 3, 1000))))._tag).toBe("SpillFull")
      // The other processor has a budget of its own...
      yield* two.put("a", entry("a", 3, 1000))
      // ...and drains the tenant, the first one's entries included.
      expect(yield* drain(two, "a")).toEqual(["a-1", "a-2", "a-3"])
      // The first one learns they are gone when it next lists the tenant (as its drain does).
      expect(yield* one.oldest("a")).toEqual(Option.none())
      yield* one.put("a", entry("a", 4, 1000))
      yield* one.put("a", entry("a", 5, 1000))
    }),
  )

  it.effect("is selected by SLUICE_SPILL_BUCKET, with the Kinesis settings' region and credentials", () =>
    Effect.gen(function* () {
      const read = (env: Record<string, string>) =>
        Effect.withConfigProvider(
          ProcessorConfig.spillBucket,
          ConfigProvider.fromMap(new Map(Object.entries(env)), { pathDelim: "_" }).pipe(
            ConfigProvider.constantCase,
          ),
        )
      expect(yield* read({})).toBeUndefined()
      expect(yield* read({ SLUICE_SPILL_BUCKET: "" })).toBeUndefined()
      const config = yield* read({
        SLUICE_SPILL_BUCKET: "sluice-spill",
        SLUICE_SPILL_ENDPOINT: "http://127.0.0.1:9000",
        SLUICE_KINESIS_REGION: "eu-west-1",
        SLUICE_KINESIS_ACCESS_KEY_ID: "AKIA",
        SLUICE_KINESIS_SECRET_ACCESS_KEY: "secret",
      })
      expect(config).toMatchObject({
        bucket: "sluice-spill",
        prefix: "spill/",
        endpoint: "http://127.0.0.1:9000",
        region: "eu-west-1",
        accessKeyId: "AKIA",
      })
      expect(Redacted.value(config!.secretAccessKey!)).toBe("secret")
    }),
  )

  it.scoped("fails with SpillUnavailable when the bucket does not exist", () =>
    Effect.gen(function* () {
      const bucket = yield* Effect.promise(newBucket)
      const spill = yield* open({ dataDir: "unused", spillBucket: { ...bucket, bucket: "no-such-bucket" } })
      expect((yield* Effect.flip(spill.tenants))._tag).toBe("SpillUnavailable")
      expect((yield* Effect.flip(spill.put("a", entry("a", 1))))._tag).toBe("SpillUnavailable")
    }),
  )
})

// ---------------------------------------------------------------------------------------------
// A processor stops for good while one tenant's storage fails; another one drains the bucket.

const demo = await Effect.runPromise(ConfigFile.load(join(import.meta.dirname, "../../config/demo.yaml")))

const record = (tenantId: string, deviceId: string, i: number) => ({
  partitionKey: partitionKeyOf(tenantId, deviceId),
  data: encodeEnvelope(
    { tenantId, deviceId, deviceClass: "thermostat", receivedAt: T0 },
    Buffer.from(JSON.stringify({ id: `m${i}`, ts: T0 + i, temp_f: 70, humidity: 40 })),
  ),
})

/** Tenants whose inserts fail right now. */
const failing = new Set<string>()

/** A processor with its own local data directory, on the shared stream, store and bucket. */
const processorLayers = (
  shared: { stream: string; chdb: string; bucket: ProcessorConfig.SpillBucketConfig },
  local: string,
  workerId: string,
) => {
  const infra = Layer.mergeAll(
    SqliteStreamLog.layerWith(SqliteStreamLog.defaults(shared.stream)),
    switchableStore(shared.chdb, failing),
    Tenancy.layer(demo),
    LiveFeed.layer,
    Metrics.layer,
  )
  return Processor.layerWith({
    ...ProcessorConfig.defaults,
    workerId,
    failoverMs: 2_000,
    flushIntervalMs: 20,
    checkpointIntervalMs: 50,
    spillAfterMs: 300,
    dataDir: local,
    spillBucket: shared.bucket,
  }).pipe(Layer.provideMerge(infra), Layer.provideMerge(embeddedLeases(shared.stream)))
}

const ids = (tenantId: string, deviceId: string) =>
  Effect.flatMap(TelemetryStore, (s) =>
    Effect.map(
      s.history(tenantId, deviceId, { from: T0 - 1000, to: T0 + 1_000_000 }, { limit: 1000 }),
      (page) => page.rows.map((r) => r.msgId),
    ),
  )

const until = polling({ timeoutMs: 30_000, intervalMs: 100 })

const expected = (n: number) => Array.from({ length: n }, (_, i) => `m${i}`)

describe("a processor lost while one tenant's storage fails", () => {
  it.scopedLive(
    "leaves that tenant's batches in S3, and the next processor stores them exactly once",
    () => {
      failing.clear()
      failing.add("other")
      return Effect.gen(function* () {
        const shared = {
          stream: mkdtempSync(join(tmpdir(), "sluice-s3spill-stream-")),
          chdb: mkdtempSync(join(tmpdir(), "sluice-s3spill-chdb-")),
          bucket: yield* Effect.promise(newBucket),
        }
        const firstLocal = mkdtempSync(join(tmpdir(), "sluice-s3spill-local-1-"))

        // First processor: "other" keeps failing, so its batches go to S3; "demo" is stored and
        // the shards' checkpoints move past both tenants' records.
        yield* Effect.scoped(
          Effect.gen(function* () {
            const log = yield* StreamLog
            const acks = yield* log.append(
              Array.from({ length: 40 }, (_, i) => [
                record("demo", "thermo-1", i),
                record("other", "other-thermo-1", i),
              ]).flat(),
            )
            expect(yield* until(ids("demo", "thermo-1"), (got) => got.length >= 40)).toEqual(expected(40))
            const leases = yield* ShardLeases
            for (const shardId of new Set(acks.map((a) => a.shardId))) {
              const last = acks.filter((a) => a.shardId === shardId).at(-1)!.sequenceNumber
              const position = yield* until(
                leaseCheckpoint(shardId).pipe(Effect.provideService(ShardLeases, leases)),
                (p) => p._tag === "AfterSequence" && p.sequenceNumber === last,
              )
              expect(position).toEqual({ _tag: "AfterSequence", sequenceNumber: last })
            }
            expect(yield* ids("other", "other-thermo-1")).toEqual([])
            expect((yield* keysIn(shared.bucket.bucket, "spill/other/")).length).toBeGreaterThan(0)
            // It stops with "other"'s storage still failing: its drain cannot store a thing, so
            // the entries stay in the bucket, as they would after a crash.
          }).pipe(Effect.provide(processorLayers(shared, firstLocal, "processor-1"))),
        )
        const left = yield* keysIn(shared.bucket.bucket, "spill/")
        expect(left.length).toBeGreaterThan(0)
        expect(left.every((key) => key.startsWith("spill/other/"))).toBe(true)
        // Its machine is gone, local disk and all.
        rmSync(firstLocal, { recursive: true, force: true })

        // Storage is back. A second processor, with fresh layers and a local directory of its
        // own, finds "other" in the bucket and drains it with no new message for it.
        failing.clear()
        const secondLocal = mkdtempSync(join(tmpdir(), "sluice-s3spill-local-2-"))
        yield* Effect.scoped(
          Effect.gen(function* () {
            expect(yield* until(ids("other", "other-thermo-1"), (got) => got.length >= 40)).toEqual(
              expected(40),
            )
            expect(yield* until(keysIn(shared.bucket.bucket, "spill/"), (keys) => keys.length === 0)).toEqual(
              [],
            )
            yield* Effect.sleep("300 millis")
            // Exactly once, in the table itself (no FINAL to hide a duplicate).
            const counted = yield* raw(
              "SELECT tenant_id, count() AS n, uniqExact(msg_id) AS ids FROM sluice.telemetry " +
                "GROUP BY tenant_id ORDER BY tenant_id",
              shared.chdb,
            )
            expect(counted.map((r) => [r.tenant_id, Number(r.n), Number(r.ids)])).toEqual([
              ["demo", 40, 40],
              ["other", 40, 40],
            ])
            expect(yield* ids("other", "other-thermo-1")).toEqual(expected(40))
            expect(yield* ids("demo", "thermo-1")).toEqual(expected(40))
          }).pipe(Effect.provide(processorLayers(shared, secondLocal, "processor-2"))),
        )
      })
    },
    60_000,
  )
})

/** Raw SQL on the store's chDB directory (a session of its own on the same path), bypassing FINAL. */
const raw = (query: string, chdb: string) =>
  rawSql(() =>
    createClient({
      connection: createChdbConnection({ path: chdb }) as unknown as NonNullable<
        NonNullable<Parameters<typeof createClient>[0]>["connection"]
      >,
    }),
  ).raw(query)
