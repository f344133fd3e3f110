/**
 * AWS IoT Core as a device source, end to end without AWS: records of exactly the shape the topic
 * rule in docs/aws-iot-core.md writes go onto a Kinesis stream (kinesalite) with PutRecords,
 * partition key = client id, as the rule's Kinesis action puts them; the processor reads the stream
 * (leases in dynalite, the embedded chDB store) and the test looks at what lands in ClickHouse.
 */
import { randomUUID } from "node:crypto"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { CreateStreamCommand, DescribeStreamSummaryCommand, PutRecordsCommand } from "@aws-sdk/client-kinesis"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import * as LiveFeedLayer from "../../src/actors/LiveFeed.js"
import * as Processor from "../../src/actors/Processor.js"
import * as ProcessorConfig from "../../src/actors/ProcessorConfig.js"
import { UNATTRIBUTED_TENANT } from "../../src/actors/ShardWorker.js"
import * as Metrics from "../../src/observability/Metrics.js"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import { TelemetryStore } from "../../src/storage/TelemetryStore.js"
import * as DynamoShardLeases from "../../src/stream/DynamoShardLeases.js"
import * as KinesisStreamLog from "../../src/stream/KinesisStreamLog.js"
import * as ConfigFile from "../../src/tenancy/ConfigFile.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"
import { emulatorConfig } from "../stream/kinesisEnv.js"
import {
  type DynamoEmulator,
  type KinesisEmulator,
  kinesisClientFor,
  startDynalite,
  startKinesalite,
} from "../support/emulators.js"
import { polling } from "../support/polling.js"

const demo = await Effect.runPromise(ConfigFile.load(join(import.meta.dirname, "../../config/demo.yaml")))
const T0 = Date.UTC(2026, 0, 1)
const range = { from: T0 - 3600_000, to: T0 + 3600_000 }

let kinesis: KinesisEmulator | undefined
let dynamo: DynamoEmulator | undefined
beforeAll(async () => {
  ;[kinesis, dynamo] = await Promise.all([startKinesalite(), startDynalite()])
})
afterAll(async () => {
  await Promise.all([kinesis?.stop(), dynamo?.stop()])
})

/**
 * One Kinesis record as AWS IoT Core's rule writes it: the JSON object of the rule's SELECT
 * (`source`, `clientId`, `receivedAt`, `topic`, `payload` base64) and the partition key
 * `${clientid()}`. Written by hand here, not with the decoder's own encoder, so the test pins the
 * documented shape rather than whatever the code happens to produce.
 */
const ruleRecord = (clientId: string, payload: Uint8Array | string, receivedAt: number) => ({
  PartitionKey: clientId,
  Data: Buffer.from(
    JSON.stringify({
      source: "aws-iot-core",
      clientId,
      receivedAt,
      topic: `sluice/${clientId}/telemetry`,
      payload: Buffer.from(payload).toString("base64"),
    }),
    "utf8",
  ),
})
const reading = (i: number) =>
  JSON.stringify({ id: `iot-${i}`, ts: T0 + i * 1000, temp_f: 68 + i / 10, humidity: 40 })

/** Creates the stream the rule's Kinesis action writes to and puts the records, in order. */
const putAsTheRule = async (
  endpoint: string,
  streamName: string,
  records: ReadonlyArray<ReturnType<typeof ruleRecord>>,
) => {
  const client = kinesisClientFor(endpoint)
  try {
    await client.send(new CreateStreamCommand({ StreamName: streamName, ShardCount: 2 }))
    for (let i = 0; ; i++) {
      const out = await client.send(new DescribeStreamSummaryCommand({ StreamName: streamName }))
      if (out.StreamDescriptionSummary?.StreamStatus === "ACTIVE") break
      if (i > 100) throw new Error("stream did not become ACTIVE")
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    // One request at a time and in order: a device's records keep their order within its shard.
    const out = await client.send(new PutRecordsCommand({ StreamName: streamName, Records: [...records] }))
    expect(out.FailedRecordCount ?? 0).toBe(0)
  } finally {
    client.destroy()
  }
}

const layers = (dirs: { stream: string; chdb: string }) => {
  const stream = emulatorConfig(kinesis!.endpoint, dirs.stream, 2)
  const infra = Layer.mergeAll(
    KinesisStreamLog.layerWith(stream),
    DynamoShardLeases.layerWith({
      table: `sluice-leases-iot-${randomUUID()}`,
      endpoint: dynamo!.endpoint,
      region: "us-east-1",
      accessKeyId: "AKIAEMULATOR00000000",
      secretAccessKey: Redacted.make("emulator-secret"),
    }),
    ClickHouseTelemetryStore.layerWith(ClickHouseTelemetryStore.embedded(dirs.chdb)),
    Tenancy.layer(demo),
    LiveFeedLayer.layer,
    Metrics.layer,
  )
  return Processor.layerWith({
    ...ProcessorConfig.defaults,
    flushIntervalMs: 20,
    dataDir: dirs.stream,
  }).pipe(Layer.provideMerge(infra))
}

/** Polls the store until `check` holds, bounded in time. */
const eventually = polling({ timeoutMs: 20_000, intervalMs: 50 })

describe("AWS IoT Core as a device source (records of the rule's shape on Kinesis)", () => {
  it.scopedLive(
    "stores a known device's readings under its tenant and dead-letters an unknown client id with the reason",
    () => {
      const dirs = {
        stream: mkdtempSync(join(tmpdir(), "sluice-iot-stream-")),
        chdb: mkdtempSync(join(tmpdir(), "sluice-iot-chdb-")),
      }
      const streamName = emulatorConfig(kinesis!.endpoint, dirs.stream).streamName
      const known = Array.from({ length: 20 }, (_, i) => ruleRecord("thermo-1", reading(i), T0 + i))
      // The records are on the stream before the processor starts (it creates a missing stream itself).
      const written = Effect.promise(() =>
        putAsTheRule(kinesis!.endpoint, streamName, [
          ...known.slice(0, 10),
          // A client id that is no device of the configuration.
          ruleRecord("intruder-7", reading(99), T0 + 50),
          // A known device of another tenant: attributed by the registry, not by the record.
          ruleRecord("other-thermo-1", reading(7), T0 + 60),
          // A known device's binary (non-JSON) payload: its own tenant's dead letter.
          ruleRecord("meter-1", Uint8Array.from([0x00, 0xff, 0x10]), T0 + 70),
          ...known.slice(10),
        ]),
      )
      const check = Effect.gen(function* () {
        const history = (tenantId: string, deviceId: string) =>
          Effect.flatMap(TelemetryStore, (s) => s.history(tenantId, deviceId, range, { limit: 1000 }))
        const deadLetters = (tenantId: string) =>
          Effect.flatMap(TelemetryStore, (s) => s.deadLetters(tenantId, 10))

        const stored = yield* eventually(history("demo", "thermo-1"), (p) => p.rows.length >= 20)
        expect(stored.rows.map((r) => r.msgId)).toEqual(Array.from({ length: 20 }, (_, i) => `iot-${i}`))
        expect(stored.rows[0]).toMatchObject({
          tenantId: "demo",
          deviceClass: "thermostat",
          receivedAt: T0, // the rule's timestamp(), not the time the processor read it
        })
        expect(stored.rows[10]!.values.temperature).toBeCloseTo((69 - 32) / 1.8, 6)

        const other = yield* eventually(history("other", "other-thermo-1"), (p) => p.rows.length >= 1)
        expect(other.rows.map((r) => r.msgId)).toEqual(["iot-7"])
        expect((yield* history("demo", "other-thermo-1")).rows).toHaveLength(0)

        const unattributed = yield* eventually(deadLetters(UNATTRIBUTED_TENANT), (rows) => rows.length >= 1)
        expect(unattributed).toHaveLength(1)
        expect(unattributed[0]).toMatchObject({
          tenantId: UNATTRIBUTED_TENANT,
          deviceId: "intruder-7",
          reason: expect.stringContaining('unknown device "intruder-7"'),
        })
        expect(JSON.parse(unattributed[0]!.raw)).toMatchObject({
          source: "aws-iot-core",
          clientId: "intruder-7",
        })
        expect((yield* history(UNATTRIBUTED_TENANT, "intruder-7")).rows).toHaveLength(0)

        const demoDead = yield* eventually(deadLetters("demo"), (rows) => rows.length >= 1)
        expect(demoDead).toEqual([
          expect.objectContaining({ deviceId: "meter-1", reason: expect.stringContaining("not valid JSON") }),
        ])
      })
      return Effect.zipRight(written, Effect.provide(check, layers(dirs)))
    },
    30_000,
  )
})
