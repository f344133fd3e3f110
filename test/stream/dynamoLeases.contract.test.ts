/**
 * ShardLeases on DynamoDB, against dynalite: the shared contract suite, then what only this
 * backend has (creating the table, the settings, a store that does not answer). One dynalite
 * process for the file; the contract's tests share one table, the others get tables of their own.
 */
import { randomUUID } from "node:crypto"
import net from "node:net"
import { DescribeTableCommand, DynamoDBClient } from "@aws-sdk/client-dynamodb"
import { NodeHttpHandler } from "@smithy/node-http-handler"
import { Clock, ConfigProvider, Effect, Either, Layer, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as DynamoShardLeases from "../../src/stream/DynamoShardLeases.js"
import * as LeasesConfig from "../../src/stream/LeasesConfig.js"
import { LeaseStoreUnavailable, ShardLeases } from "../../src/stream/ShardLeases.js"
import { type DynamoEmulator, startDynalite } from "../support/emulators.js"
import { leaseContract } from "./leases.contract.js"

let emulator: DynamoEmulator | undefined
beforeAll(async () => {
  emulator = await startDynalite()
})
afterAll(async () => {
  await emulator?.stop()
})

const settings = (table: string, endpoint = emulator!.endpoint): LeasesConfig.DynamoLeasesConfig => ({
  table,
  endpoint,
  region: "us-east-1",
  accessKeyId: "AKIAEMULATOR00000000",
  secretAccessKey: Redacted.make("emulator-secret"),
})

const freshTable = () => `sluice-leases-test-${randomUUID()}`

// The endpoint is known only once dynalite is up, after this file's tests are declared. The
// suite's layer is built under @effect/vitest's TestClock, which never advances on its own: the
// real clock lets start-up poll a new table until it is ACTIVE.
leaseContract(
  "DynamoDB (dynalite)",
  Layer.unwrapEffect(Effect.sync(() => DynamoShardLeases.layerWith(settings(freshTable())))).pipe(
    Layer.provide(Layer.setClock(Clock.make())),
  ),
)

describe("DynamoDB lease table", () => {
  it("is created on first use (on-demand, keyed by shardId) and reused by the next worker", async () => {
    const table = freshTable()
    const shards = [{ shardId: "shardId-000000000000", hashKeyStart: 0n, hashKeyEnd: 1n }]
    const first = Effect.gen(function* () {
      const leases = yield* ShardLeases
      yield* leases.ensure(shards, { _tag: "TrimHorizon" })
      const [lease] = yield* leases.list
      return yield* leases.take(lease!, "worker-a")
    })
    const taken = await Effect.runPromise(
      first.pipe(Effect.provide(DynamoShardLeases.layerWith(settings(table))), Effect.scoped),
    )
    // A second worker opening the existing table sees the first one's lease.
    const seen = await Effect.runPromise(
      Effect.flatMap(ShardLeases, (leases) => leases.list).pipe(
        Effect.provide(DynamoShardLeases.layerWith(settings(table))),
      ),
    )
    expect(seen).toEqual([taken])

    const client = new DynamoDBClient({
      endpoint: emulator!.endpoint,
      region: "us-east-1",
      credentials: { accessKeyId: "AKIAEMULATOR00000000", secretAccessKey: "emulator-secret" },
      requestHandler: new NodeHttpHandler({ connectionTimeout: 2_000, requestTimeout: 5_000 }),
    })
    try {
      const { Table } = await client.send(new DescribeTableCommand({ TableName: table }))
      expect(Table?.TableStatus).toBe("ACTIVE")
      expect(Table?.BillingModeSummary?.BillingMode).toBe("PAY_PER_REQUEST")
      expect(Table?.KeySchema).toEqual([{ AttributeName: "shardId", KeyType: "HASH" }])
    } finally {
      client.destroy()
    }
  })

  it("lists every lease across Scan pages", async () => {
    const shards = Array.from({ length: 7 }, (_, i) => ({
      shardId: `shard-${i}`,
      hashKeyStart: 0n,
      hashKeyEnd: 1n,
    }))
    const listed = await Effect.runPromise(
      Effect.gen(function* () {
        const leases = yield* ShardLeases
        yield* leases.ensure(shards, { _tag: "Latest" })
        return yield* leases.list
      }).pipe(Effect.provide(DynamoShardLeases.layerWith({ ...settings(freshTable()), scanPageItems: 2 }))),
    )
    expect(listed.map((l) => l.shardId).sort()).toEqual(shards.map((s) => s.shardId).sort())
  })

  it("reads its settings: the table follows the consumer unless named", async () => {
    const read = (env: Record<string, string>) =>
      Effect.runPromise(
        Effect.withConfigProvider(
          LeasesConfig.dynamo,
          ConfigProvider.fromMap(new Map(Object.entries(env)), { pathDelim: "_" }).pipe(
            ConfigProvider.constantCase,
          ),
        ),
      )
    expect(await read({})).toMatchObject({ table: "sluice-leases-processor", endpoint: undefined })
    expect(await read({ SLUICE_PROCESSOR_CONSUMER: "fleet-7" })).toMatchObject({
      table: "sluice-leases-fleet-7",
    })
    const named = await read({
      SLUICE_LEASES_TABLE: "leases",
      SLUICE_LEASES_ENDPOINT: "http://127.0.0.1:4567",
      SLUICE_KINESIS_REGION: "eu-west-1",
    })
    expect(named).toMatchObject({ table: "leases", endpoint: "http://127.0.0.1:4567", region: "eu-west-1" })
  })

  it("a store that does not answer fails with LeaseStoreUnavailable", async () => {
    // A port that was free a moment ago: connections are refused.
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer().listen(0, "127.0.0.1", () => {
        const address = server.address()
        server.close(() =>
          typeof address === "object" && address !== null ? resolve(address.port) : reject(),
        )
      })
    })
    const result = await Effect.runPromise(
      Effect.either(
        Layer.build(DynamoShardLeases.layerWith(settings(freshTable(), `http://127.0.0.1:${port}`))).pipe(
          Effect.scoped,
        ),
      ),
    )
    expect(Either.isLeft(result)).toBe(true)
    if (Either.isLeft(result)) {
      expect(result.left).toBeInstanceOf(LeaseStoreUnavailable)
      expect(result.left.operation).toBe("start")
    }
  })
})
