/**
 * The stream tail against real parts: the embedded log in a temporary directory, the real
 * LiveFeed, a Tenancy over a small configuration. Records go into the stream as ingress writes
 * them; the test watches what live subscribers get. Where rows are compared with the processor's,
 * the real Processor runs beside the tail (with a store that accepts everything) and publishes
 * into a LiveFeed of its own.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { Context, Duration, Effect, Layer, Queue } from "effect"
import * as LiveFeedModule from "../../src/actors/LiveFeed.js"
import { LiveFeed, type LiveFeedApi } from "../../src/actors/LiveFeed.js"
import * as Processor from "../../src/actors/Processor.js"
import * as ProcessorConfig from "../../src/actors/ProcessorConfig.js"
import * as Metrics from "../../src/observability/Metrics.js"
import * as LiveTailConfig from "../../src/serving/live/LiveTailConfig.js"
import * as StreamTail from "../../src/serving/live/StreamTail.js"
import { type TelemetryRow, TelemetryStore } from "../../src/storage/TelemetryStore.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import type { EmbeddedStreamConfig } from "../../src/stream/StreamConfig.js"
import { StreamUnavailable, UnknownShard } from "../../src/stream/StreamError.js"
import { type AppendRecord, Position, StreamLog, type StreamLogApi } from "../../src/stream/StreamLog.js"
import { encodeEnvelope, partitionKeyOf } from "../../src/tenancy/Envelope.js"
import type { PlatformConfig } from "../../src/tenancy/PlatformConfig.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"
import { embeddedLeases } from "../support/leases.js"

const platform: PlatformConfig = {
  tenants: [
    { id: "acme", api_keys: ["acme-key-0123456789"] },
    { id: "globex", api_keys: ["globex-key-0123456789"] },
  ],
  device_classes: [
    {
      name: "thermostat",
      time_field: "ts",
      time_format: "epoch_ms",
      message_id_field: "id",
      fields: {
        temperature: { type: "number", from: "temp_f", convert: "fahrenheit_to_celsius", min: -40, max: 85 },
        humidity: { type: "number", min: 0, max: 100 },
        battery: { type: "integer", min: 0, max: 100, default: 100 },
      },
    },
  ],
  devices: [
    { id: "t-1", tenant: "acme", class: "thermostat", credential: "t-1-secret" },
    { id: "t-2", tenant: "acme", class: "thermostat", credential: "t-2-secret" },
    { id: "g-1", tenant: "globex", class: "thermostat", credential: "g-1-secret" },
  ],
}
const tenantOf: Record<string, string> = { "t-1": "acme", "t-2": "acme", "g-1": "globex" }

const T0 = Date.UTC(2026, 0, 1)

/** A stream record as ingress appends it: the envelope header, then the payload as sent. */
const envelope = (deviceId: string, payload: unknown, receivedAt = T0): AppendRecord => ({
  partitionKey: partitionKeyOf(tenantOf[deviceId]!, deviceId),
  data: encodeEnvelope(
    { tenantId: tenantOf[deviceId]!, deviceId, deviceClass: "thermostat", receivedAt },
    Buffer.from(typeof payload === "string" ? payload : JSON.stringify(payload)),
  ),
})
const reading = (id: string, i: number) => ({
  id,
  ts: T0 + i * 1000,
  temp_f: 68 + i / 10,
  humidity: 40 + (i % 50),
})

/** A temporary directory, removed with the test's scope. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "sluice-tail-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true })),
)

/** An embedded log on `dir`, as a process would open it; closed with the test's scope. */
const openLog = (dir: string, settings: Partial<EmbeddedStreamConfig> = {}) =>
  Effect.map(
    Layer.build(SqliteStreamLog.layerWith({ ...SqliteStreamLog.defaults(dir), fsync: false, ...settings })),
    (context) => Context.get(context, StreamLog),
  )

const tenancy = Tenancy.layer(platform)

/** The tail over `log`, publishing into `feed`, running until the test's scope closes. */
const startTail = (
  log: StreamLogApi,
  feed: LiveFeedApi,
  config: Partial<LiveTailConfig.LiveTailConfig> = {},
) =>
  Layer.build(
    StreamTail.layerWith({ ...LiveTailConfig.liveTailDefaults, pollMs: 2, ...config }).pipe(
      Layer.provide(
        Layer.mergeAll(Layer.succeed(StreamLog, log), Layer.succeed(LiveFeed, feed), tenancy, Metrics.layer),
      ),
    ),
  )

/** A store that accepts every insert: the processor runs only for the rows it publishes. */
const acceptingStore = Layer.succeed(
  TelemetryStore,
  TelemetryStore.of({
    insert: () => Effect.void,
    insertDeadLetters: () => Effect.void,
    history: () => Effect.dieMessage("unused"),
    aggregate: () => Effect.dieMessage("unused"),
    latest: () => Effect.dieMessage("unused"),
    activity: () => Effect.dieMessage("unused"),
    expire: () => Effect.dieMessage("unused"),
    dropTenant: () => Effect.dieMessage("unused"),
    lastSeen: () => Effect.dieMessage("unused"),
    seenSince: () => Effect.dieMessage("unused"),
    countSeenSince: () => Effect.dieMessage("unused"),
    deadLetters: () => Effect.dieMessage("unused"),
  }),
)

/** The real processor over `log`, publishing into `feed`, until the test's scope closes. */
const startProcessor = (log: StreamLogApi, feed: LiveFeedApi, dataDir: string) =>
  Layer.build(
    Processor.layerWith({ ...ProcessorConfig.defaults, flushIntervalMs: 20, dataDir }).pipe(
      Layer.provide(
        Layer.mergeAll(
          Layer.succeed(StreamLog, log),
          Layer.succeed(LiveFeed, feed),
          tenancy,
          Metrics.layer,
          acceptingStore,
          embeddedLeases(dataDir),
        ),
      ),
    ),
  )

/** The next `n` readings of a subscription, failing after 10 s. */
const take = (queue: Queue.Dequeue<TelemetryRow>, n: number) => {
  const got: Array<TelemetryRow> = []
  return Effect.forEach(Array.from({ length: n }), () =>
    Effect.map(Queue.take(queue), (row) => void got.push(row)),
  ).pipe(
    Effect.as(got),
    Effect.timeoutFail({
      duration: Duration.seconds(10),
      onTimeout: () => new Error(`expected ${n} readings, got ${got.length} in 10 s`),
    }),
  )
}

/** True if nothing arrives within `ms`. */
const staysEmpty = (queue: Queue.Dequeue<TelemetryRow>, ms = 100) =>
  Effect.zipRight(
    Effect.sleep(Duration.millis(ms)),
    Effect.map(Queue.size(queue), (n) => n === 0),
  )

const byDevice = (rows: ReadonlyArray<TelemetryRow>) => {
  const out: Record<string, Array<TelemetryRow>> = {}
  for (const row of rows) {
    const mine = out[row.deviceId] ?? []
    mine.push(row)
    out[row.deviceId] = mine
  }
  return out
}

describe("live stream tail", () => {
  it.scopedLive(
    "delivers the processor's rows, per device in order, to a tenant and a device subscriber",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const log = yield* openLog(dir)
        const tailFeed = yield* LiveFeedModule.make
        const processorFeed = yield* LiveFeedModule.make
        yield* startTail(log, tailFeed)
        yield* startProcessor(log, processorFeed, dir)

        // Subscribe first, then append.
        const tenant = yield* tailFeed.subscribe("acme")
        const device = yield* tailFeed.subscribe("acme", "t-1")
        const processed = yield* processorFeed.subscribe("acme")

        const t1 = Array.from({ length: 30 }, (_, i) => envelope("t-1", reading(`a${i}`, i)))
        const t2 = Array.from({ length: 30 }, (_, i) => envelope("t-2", reading(`b${i}`, i)))
        const interleaved = t1.flatMap((r, i) => [r, t2[i]!])
        yield* log.append(interleaved.slice(0, 20))
        yield* log.append([
          envelope("t-1", reading("a3", 3)), // a redelivered message id: dropped, as the processor does
          envelope("t-2", [reading("b-arr-0", 100), reading("b-arr-1", 101)]), // two readings in one message
          envelope("t-2", { id: "b-default", ts: T0, temp_f: 50, humidity: 10 }), // battery from its default
        ])
        yield* log.append(interleaved.slice(20))

        const expected = 30 + 30 + 3
        const fromTail = yield* take(tenant, expected)
        const fromProcessor = yield* take(processed, expected)
        expect(byDevice(fromTail)).toEqual(byDevice(fromProcessor))

        const mine = byDevice(fromTail)
        expect(mine["t-1"]!.map((r) => r.msgId)).toEqual(Array.from({ length: 30 }, (_, i) => `a${i}`))
        expect(mine["t-2"]!.map((r) => r.msgId)).toEqual([
          ...Array.from({ length: 10 }, (_, i) => `b${i}`),
          "b-arr-0",
          "b-arr-1",
          "b-default",
          ...Array.from({ length: 20 }, (_, i) => `b${i + 10}`),
        ])
        expect(mine["t-1"]![10]).toEqual({
          tenantId: "acme",
          deviceId: "t-1",
          deviceClass: "thermostat",
          classVersion: 1,
          msgId: "a10",
          ts: T0 + 10_000,
          receivedAt: T0,
          values: { temperature: expect.closeTo((69 - 32) / 1.8, 9), humidity: 50, battery: 100 },
        })

        // The device subscriber: that device's rows only, the same rows, in order.
        expect(yield* take(device, 30)).toEqual(mine["t-1"])
        expect(yield* staysEmpty(tenant)).toBe(true)
        expect(yield* staysEmpty(device)).toBe(true)
      }),
    30_000,
  )

  it.scopedLive("skips a payload that fails its class and reads on", () =>
    Effect.gen(function* () {
      const log = yield* openLog(yield* tempDir)
      const feed = yield* LiveFeedModule.make
      yield* startTail(log, feed)
      const rows = yield* feed.subscribe("acme")
      yield* log.append([
        envelope("t-1", "{not json"),
        envelope("t-1", { id: "too-humid", ts: T0, temp_f: 70, humidity: 140 }),
        envelope("t-1", []),
        { partitionKey: partitionKeyOf("acme", "t-1"), data: Buffer.from("no envelope header") },
      ])
      yield* log.append([envelope("t-1", reading("good", 1))])
      const [first] = yield* take(rows, 1)
      expect(first).toMatchObject({ deviceId: "t-1", msgId: "good" })
      expect(yield* staysEmpty(rows)).toBe(true)
    }),
  )

  it.scopedLive("gives a tenant's subscriber nothing of another tenant", () =>
    Effect.gen(function* () {
      const log = yield* openLog(yield* tempDir)
      const feed = yield* LiveFeedModule.make
      yield* startTail(log, feed)
      const acme = yield* feed.subscribe("acme")
      const globex = yield* feed.subscribe("globex")
      yield* log.append(
        Array.from({ length: 20 }, (_, i) => envelope(i % 2 ? "t-1" : "t-2", reading(`a${i}`, i))),
      )
      yield* take(acme, 20)
      yield* log.append([envelope("g-1", reading("g0", 0))])
      const [mine] = yield* take(globex, 1)
      expect(mine).toMatchObject({ tenantId: "globex", deviceId: "g-1", msgId: "g0" })
      expect(yield* staysEmpty(globex)).toBe(true)
      expect(yield* staysEmpty(acme)).toBe(true)
    }),
  )

  it.scopedLive("starts at the newest record: what came before it, or before a subscriber, is history", () =>
    Effect.gen(function* () {
      const log = yield* openLog(yield* tempDir)
      const feed = yield* LiveFeedModule.make
      yield* log.append([envelope("t-1", reading("before-start", 0))])
      // Even a subscriber that is already there gets nothing the stream held before the tail started.
      const early = yield* feed.subscribe("acme", "t-1")
      yield* startTail(log, feed)
      yield* log.append([envelope("t-1", reading("after-start", 1))])
      expect((yield* take(early, 1))[0]!.msgId).toBe("after-start")

      // Appended while nobody watched the tenant: not live for a subscriber that comes later.
      expect(feed.hasSubscribers("globex")).toBe(false)
      yield* log.append([envelope("g-1", reading("unwatched", 2))])
      yield* Effect.sleep(Duration.millis(50))
      const late = yield* feed.subscribe("globex")
      expect(feed.hasSubscribers("globex")).toBe(true)
      yield* log.append([envelope("g-1", reading("watched", 3))])
      expect((yield* take(late, 1))[0]!.msgId).toBe("watched")
      expect(yield* staysEmpty(early)).toBe(true)
      expect(yield* staysEmpty(late)).toBe(true)
    }),
  )

  it.scopedLive("creates no lease nor consumer state, so retention trims what it has read", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const log = yield* openLog(dir, { retentionMs: 500, trimIntervalMs: 50 })
      const feed = yield* LiveFeedModule.make
      yield* startTail(log, feed)
      const rows = yield* feed.subscribe("acme")
      const acks = yield* log.append(
        Array.from({ length: 50 }, (_, i) => envelope(i % 2 ? "t-1" : "t-2", reading(`c${i}`, i))),
      )
      yield* take(rows, 50)
      // The log's own tables only: no `leases` (no processor application for retention to wait
      // for), nor anything else that could name the tail as a consumer.
      const db = yield* Effect.acquireRelease(
        Effect.sync(() => new Database(join(dir, "stream.sqlite"), { readonly: true })),
        (db) => Effect.sync(() => db.close()),
      )
      const tables = db
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
        .pluck()
        .all() as Array<string>
      expect(tables.filter((t) => !/^shard_\d+$/.test(t)).sort()).toEqual(["budget", "shards"])
      // Past the retention, what the tail read is gone, from every shard it was in.
      yield* Effect.sleep(Duration.millis(1_000))
      for (const shardId of new Set(acks.map((a) => a.shardId))) {
        const left = yield* Effect.scoped(
          Effect.flatMap(log.reader(shardId, Position.TrimHorizon()), (reader) => reader.pull()),
        )
        expect(left.records).toEqual([])
      }
      // And the tail reads on over the trimmed shards.
      yield* log.append([envelope("t-1", reading("after-trim", 99))])
      expect((yield* take(rows, 1))[0]!.msgId).toBe("after-trim")
    }),
  )

  it.scopedLive("reads what another process appends to the same log", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const serving = yield* openLog(dir)
      const feed = yield* LiveFeedModule.make
      yield* startTail(serving, feed)
      // Another connection to the same data directory, as the ingress process has.
      const ingress = yield* openLog(dir)
      const rows = yield* feed.subscribe("acme", "t-2")
      yield* ingress.append([envelope("t-2", reading("from-elsewhere-0", 0))])
      yield* ingress.append([
        envelope("t-1", reading("other-device", 1)),
        envelope("t-2", reading("from-elsewhere-1", 1)),
      ])
      expect((yield* take(rows, 2)).map((r) => r.msgId)).toEqual(["from-elsewhere-0", "from-elsewhere-1"])
    }),
  )

  it.scopedLive("rides out an unavailable stream and lost readers, missing and repeating nothing", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const real = yield* openLog(dir)
      // The appends come from another instance, so the tail's own log knows a stale newest record.
      const ingress = yield* openLog(dir)
      let down = true
      const lose = new Set<string>()
      const unavailable = new StreamUnavailable({ operation: "test", reason: "the stream is down (test)" })
      const flaky: StreamLogApi = {
        ...real,
        listShards: Effect.suspend(() => (down ? Effect.fail(unavailable) : real.listShards)),
        reader: (shardId, position) =>
          Effect.map(real.reader(shardId, position), (reader) => ({
            shardId,
            pull: (limits) =>
              Effect.suspend(() => {
                if (down) return Effect.fail(unavailable)
                if (lose.delete(shardId)) return Effect.fail(new UnknownShard({ shardId }))
                return reader.pull(limits)
              }),
          })),
      }
      const feed = yield* LiveFeedModule.make
      // The layer is built although the stream does not answer. A dedup window of one, so a
      // reading read again would not be hidden by its repeated message id.
      yield* startTail(flaky, feed, { shardRefreshMs: 50, dedupWindow: 1 })
      const rows = yield* feed.subscribe("acme")
      const send = (from: number, to: number) =>
        ingress.append(
          Array.from({ length: to - from }, (_, i) => envelope("t-1", reading(`d${from + i}`, i))),
        )
      const ids = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `d${from + i}`)
      const received = (n: number) => Effect.map(take(rows, n), (got) => got.map((r) => r.msgId))

      // Down from the start: once it answers, what was appended since the tail started arrives.
      yield* send(0, 10)
      yield* Effect.sleep(Duration.millis(100))
      down = false
      expect(yield* received(10)).toEqual(ids(0, 10))

      // Down while reading: pulls are retried on the same readers.
      down = true
      yield* send(10, 20)
      yield* Effect.sleep(Duration.millis(200))
      down = false
      expect(yield* received(10)).toEqual(ids(10, 20))

      // Every reader lost: the next refresh opens new ones after the last record each shard saw.
      for (const shard of yield* real.listShards) lose.add(shard.shardId)
      yield* send(20, 30)
      expect(yield* received(10)).toEqual(ids(20, 30))
      expect(lose.size).toBe(0)
      yield* send(30, 31)
      expect(yield* received(1)).toEqual(ids(30, 31))
      expect(yield* staysEmpty(rows)).toBe(true)
    }),
  )
})
