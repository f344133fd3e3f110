import {
  CreateStreamCommand,
  DescribeStreamSummaryCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
  type KinesisClient,
  PutRecordsCommand,
} from "@aws-sdk/client-kinesis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  type KinesisEmulator,
  kinesisClientFor,
  startKinesalite,
  startKinesisMock,
} from "./support/emulators.js"

const TIMEOUT_MS = 60_000

const waitUntilActive = async (client: KinesisClient, streamName: string): Promise<void> => {
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    const { StreamDescriptionSummary } = await client.send(
      new DescribeStreamSummaryCommand({ StreamName: streamName }),
    )
    if (StreamDescriptionSummary?.StreamStatus === "ACTIVE") return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`stream ${streamName} did not become ACTIVE`)
}

describe.each([
  ["kinesis-mock", startKinesisMock],
  ["kinesalite", startKinesalite],
] as const)("%s", (name, start) => {
  let emulator: KinesisEmulator | undefined
  let client: KinesisClient | undefined

  beforeAll(async () => {
    emulator = await start()
    client = kinesisClientFor(emulator.endpoint)
  }, TIMEOUT_MS)

  afterAll(async () => {
    client?.destroy()
    await emulator?.stop()
  }, TIMEOUT_MS)

  it(
    "round-trips records through a 4-shard stream",
    async () => {
      expect(emulator?.name).toBe(name)
      expect(emulator?.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
      const kinesis = client!
      const streamName = `smoke-${Date.now()}`
      await kinesis.send(new CreateStreamCommand({ StreamName: streamName, ShardCount: 4 }))
      await waitUntilActive(kinesis, streamName)

      // One partition key so all three records land on one shard, in order.
      const payloads = ["one", "two", "three"]
      const put = await kinesis.send(
        new PutRecordsCommand({
          StreamName: streamName,
          Records: payloads.map((p) => ({ Data: Buffer.from(p), PartitionKey: "device-1" })),
        }),
      )
      expect(put.FailedRecordCount ?? 0).toBe(0)
      const shardId = put.Records?.[0]?.ShardId
      expect(shardId).toBeDefined()

      const { ShardIterator } = await kinesis.send(
        new GetShardIteratorCommand({
          StreamName: streamName,
          ShardId: shardId,
          ShardIteratorType: "TRIM_HORIZON",
        }),
      )
      const got = await kinesis.send(new GetRecordsCommand({ ShardIterator }))
      const records = got.Records ?? []
      expect(records.map((r) => Buffer.from(r.Data ?? new Uint8Array()).toString("utf8"))).toEqual(payloads)
      expect(records.map((r) => r.SequenceNumber)).toEqual(put.Records?.map((r) => r.SequenceNumber))
    },
    TIMEOUT_MS,
  )
})
