/**
 * Behaviour only the Kinesis backend has, on both emulators: resharding (a split parent is read to
 * its end before its children) and future timestamps.
 */
import { DescribeStreamSummaryCommand, type KinesisClient, SplitShardCommand } from "@aws-sdk/client-kinesis"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import * as KinesisStreamLog from "../../src/stream/KinesisStreamLog.js"
import { readableShards } from "../../src/stream/Shards.js"
import { type AppendRecord, Position, StreamLog, type StreamRecord } from "../../src/stream/StreamLog.js"
import {
  type KinesisEmulator,
  kinesisClientFor,
  startKinesalite,
  startKinesisMock,
} from "../support/emulators.js"
import { readN } from "./contract.js"
import { emulatorConfig, uniqueStreamName } from "./kinesisEnv.js"

const text = (data: Uint8Array) => new TextDecoder().decode(data)
const record = (partitionKey: string, body: string): AppendRecord => ({
  partitionKey,
  data: new TextEncoder().encode(body),
})

const sdk = <A>(client: KinesisClient, send: (client: KinesisClient) => Promise<A>) =>
  Effect.promise(() => send(client))

const waitUntilActive = (client: KinesisClient, streamName: string) =>
  sdk(client, (c) => c.send(new DescribeStreamSummaryCommand({ StreamName: streamName }))).pipe(
    Effect.map((out) => out.StreamDescriptionSummary?.StreamStatus),
    Effect.repeat({ until: (status) => status === "ACTIVE", schedule: Schedule.spaced("20 millis") }),
    Effect.timeout("10 seconds"),
  )

describe.each([
  ["kinesis-mock", startKinesisMock],
  ["kinesalite", startKinesalite],
] as const)("Kinesis backend on %s", (_name, start) => {
  let emulator: KinesisEmulator | undefined
  let client: KinesisClient | undefined
  beforeAll(async () => {
    emulator = await start()
    client = kinesisClientFor(emulator.endpoint)
  })
  afterAll(async () => {
    client?.destroy()
    await emulator?.stop()
  })

  it.scopedLive(
    "after a split, reads the parent to its end before the children, keeping each key's order",
    () => {
      const config = emulatorConfig(emulator!.endpoint, uniqueStreamName(), 1)
      const keys = Array.from({ length: 8 }, (_, i) => `device-${i}`)
      const batch = (from: number) =>
        keys.flatMap((k) => [from, from + 1, from + 2].map((i) => record(k, `${k}:${i}`)))
      return Effect.gen(function* () {
        const log = yield* StreamLog
        yield* log.append(batch(0))
        const [parent] = yield* log.listShards
        yield* sdk(client!, (c) =>
          c.send(
            new SplitShardCommand({
              StreamName: config.streamName,
              ShardToSplit: parent!.shardId,
              NewStartingHashKey: ((parent!.hashKeyStart + parent!.hashKeyEnd) / 2n).toString(),
            }),
          ),
        )
        yield* waitUntilActive(client!, config.streamName)
        const after = yield* log.append(batch(3))

        const shards = yield* log.listShards
        expect(shards).toHaveLength(3)
        expect(shards.find((s) => s.shardId === parent!.shardId)!.endingSequenceNumber).toBeDefined()
        const children = shards.filter((s) => s.parentShardId === parent!.shardId)
        expect(children).toHaveLength(2)
        expect(children.every((c) => c.endingSequenceNumber === undefined)).toBe(true)
        const childIds = new Set(children.map((c) => c.shardId))
        expect(after.every((a) => childIds.has(a.shardId))).toBe(true)
        expect(new Set(after.map((a) => a.shardId)).size).toBe(2)

        // A consumer that follows readableShards: closed shards to their end, open ones until caught up.
        const finished = new Set<string>()
        const opened: Array<string> = []
        const got: Array<StreamRecord> = []
        const deadline = Date.now() + 30_000
        for (
          let next = readableShards(shards, finished);
          next.length > 0;
          next = readableShards(shards, finished)
        ) {
          for (const shard of next) {
            opened.push(shard.shardId)
            const reader = yield* log.reader(shard.shardId, Position.TrimHorizon())
            for (;;) {
              expect(Date.now()).toBeLessThan(deadline)
              const pulled = yield* reader.pull()
              got.push(...pulled.records)
              if (pulled.endOfShard) break
              if (shard.endingSequenceNumber === undefined && pulled.records.length === 0) break
            }
            finished.add(shard.shardId)
          }
        }
        expect(opened[0]).toBe(parent!.shardId)
        expect(new Set(opened.slice(1))).toEqual(childIds)
        expect(got).toHaveLength(keys.length * 6)
        for (const key of keys) {
          const mine = got.filter((r) => r.partitionKey === key).map((r) => text(r.data))
          expect(mine).toEqual([0, 1, 2, 3, 4, 5].map((i) => `${key}:${i}`))
        }
      }).pipe(Effect.provide(KinesisStreamLog.layerWith(config)))
    },
  )

  it.scopedLive("reads from a future timestamp as from latest, skipping what arrives before it", () =>
    Effect.gen(function* () {
      const log = yield* StreamLog
      const [shard] = yield* log.listShards
      const at = Date.now() + 1_500
      const reader = yield* log.reader(shard!.shardId, Position.AtTimestamp({ at }))
      yield* log.append([record("k", "early")])
      yield* Effect.sleep("1700 millis")
      yield* log.append([record("k", "late")])
      const got = yield* readN(reader, 1)
      expect(got.map((r) => text(r.data))).toEqual(["late"])
      expect(got[0]!.arrivedAt).toBeGreaterThanOrEqual(at)
    }).pipe(
      Effect.provide(KinesisStreamLog.layerWith(emulatorConfig(emulator!.endpoint, uniqueStreamName(), 1))),
    ),
  )
})
