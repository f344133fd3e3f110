/**
 * ShardLeases on DynamoDB (or an emulator such as dynalite, through `endpoint`): one table per
 * consumer application, keyed by `shardId`, created on demand (on-demand capacity) as KCL does.
 *
 * An item: `shardId`, `counter` (N), `checkpoint` (the `LeaseCheckpoint` as JSON), `parents` (L of
 * S), and `owner` (S) only while the lease is held — a free lease has no owner attribute, so
 * "still free" is `attribute_not_exists(owner)` rather than a sentinel value a worker could be
 * named. Every write is one conditional UpdateItem on owner and counter, which DynamoDB evaluates
 * atomically with the write: that condition is the whole fencing of the contract.
 */
import {
  type AttributeValue,
  DynamoDBClient,
  PutItemCommand,
  ScanCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb"
import { Effect, Layer, Schema } from "effect"
import { ensureTable } from "./dynamoTable.js"
import { type AwsError, awsClientOptions, call } from "./kinesisClient.js"
import * as LeasesConfig from "./LeasesConfig.js"
import {
  type Lease,
  LeaseCheckpoint,
  LeaseLost,
  LeaseStoreUnavailable,
  ShardLeases,
  type ShardLeasesApi,
} from "./ShardLeases.js"
import type { ShardInfo } from "./StreamLog.js"

/**
 * Every failure but a failed condition: throttling and transport failures, which a retry may cure,
 * and also client faults such as access denied, since the contract has no other store error; the
 * AWS code in the reason tells them apart.
 */
const unavailable = (operation: string) => (e: AwsError) =>
  new LeaseStoreUnavailable({ operation, reason: e.reason })

const CONDITION_FAILED = "ConditionalCheckFailedException"

const makeClient = (config: LeasesConfig.DynamoLeasesConfig) =>
  Effect.acquireRelease(
    Effect.sync(() => new DynamoDBClient(awsClientOptions(config))),
    (client) => Effect.sync(() => client.destroy()),
  )

const CheckpointJson = Schema.parseJson(LeaseCheckpoint)
const encodeCheckpoint = Schema.encodeSync(CheckpointJson)
const decodeCheckpoint = Schema.decodeUnknownSync(CheckpointJson)

/** An item as `list` and the writes read it back. A malformed item is a defect: nothing wrote it. */
const toLease = (item: Record<string, AttributeValue>): Lease => {
  const shardId = item.shardId?.S
  const counter = item.counter?.N
  const checkpoint = item.checkpoint?.S
  if (shardId === undefined || counter === undefined || checkpoint === undefined) {
    throw new Error(`malformed lease item: ${JSON.stringify(item)}`)
  }
  return {
    shardId,
    owner: item.owner?.S ?? null,
    counter: Number(counter),
    checkpoint: decodeCheckpoint(checkpoint),
    parentShardIds: (item.parents?.L ?? []).flatMap((p) => (p.S === undefined ? [] : [p.S])),
  }
}

const parentsOf = (shard: ShardInfo): ReadonlyArray<string> =>
  [shard.parentShardId, shard.adjacentParentShardId].filter((p): p is string => p !== undefined)

/** Connects to the lease table, creating it if missing and waiting until it is ACTIVE. */
export const make = (config: LeasesConfig.DynamoLeasesConfig) =>
  Effect.gen(function* () {
    const client = yield* makeClient(config)
    const TableName = config.table

    yield* ensureTable(client, {
      table: TableName,
      key: "shardId",
      activeTimeoutMs: config.activeTimeoutMs,
    }).pipe(Effect.mapError(unavailable("start")), Effect.withSpan("DynamoShardLeases.start"))

    const ensureOne = (shard: ShardInfo, initial: string) =>
      call((abortSignal) =>
        client.send(
          new PutItemCommand({
            TableName,
            Item: {
              shardId: { S: shard.shardId },
              counter: { N: "0" },
              checkpoint: { S: initial },
              parents: { L: parentsOf(shard).map((p) => ({ S: p })) },
            },
            ConditionExpression: "attribute_not_exists(shardId)",
          }),
          { abortSignal },
        ),
      ).pipe(
        Effect.asVoid,
        Effect.catchIf(
          (e) => e.name === CONDITION_FAILED,
          () => Effect.void,
        ),
      )

    const ensure: ShardLeasesApi["ensure"] = (shards, initial) =>
      Effect.forEach(shards, (shard) => ensureOne(shard, encodeCheckpoint(initial)), {
        concurrency: 8,
        discard: true,
      }).pipe(Effect.mapError(unavailable("ensure")), Effect.withSpan("DynamoShardLeases.ensure"))

    const list: ShardLeasesApi["list"] = Effect.gen(function* () {
      const leases: Array<Lease> = []
      let start: Record<string, AttributeValue> | undefined
      do {
        const page = yield* call((abortSignal) =>
          client.send(
            new ScanCommand({
              TableName,
              ConsistentRead: true,
              ExclusiveStartKey: start,
              Limit: config.scanPageItems,
            }),
            {
              abortSignal,
            },
          ),
        )
        for (const item of page.Items ?? []) leases.push(toLease(item))
        start = page.LastEvaluatedKey
      } while (start !== undefined)
      return leases as ReadonlyArray<Lease>
    }).pipe(Effect.mapError(unavailable("list")), Effect.withSpan("DynamoShardLeases.list"))

    /**
     * One fenced write: applies `update` (plus the counter increment) only if the lease is still
     * exactly as `lease` says — same counter, same owner or still free — and returns it as stored.
     * A write whose answer was lost and that the SDK retried finds its own increment and reports
     * LeaseLost although it landed: safe (a renew or checkpoint is redone after the next `list`,
     * which shows the caller still owning the lease), never the other way round.
     */
    const write = (
      operation: string,
      lease: Lease,
      update: { readonly set?: string; readonly remove?: string },
      names: Record<string, string> = {},
      values: Record<string, AttributeValue> = {},
    ) => {
      const ownerCondition = lease.owner === null ? "attribute_not_exists(#owner)" : "#owner = :seen"
      const set = ["#counter = #counter + :one", ...(update.set === undefined ? [] : [update.set])]
      return call((abortSignal) =>
        client.send(
          new UpdateItemCommand({
            TableName,
            Key: { shardId: { S: lease.shardId } },
            UpdateExpression: `SET ${set.join(", ")}${update.remove === undefined ? "" : ` REMOVE ${update.remove}`}`,
            ConditionExpression: `#counter = :counter AND ${ownerCondition}`,
            // Names, never raw attribute names: DynamoDB reserves OWNER and COUNTER. It also refuses
            // names and values an expression does not use, hence only the ones this write needs.
            ExpressionAttributeNames: { "#owner": "owner", "#counter": "counter", ...names },
            ExpressionAttributeValues: {
              ":one": { N: "1" },
              ":counter": { N: String(lease.counter) },
              ...(lease.owner === null ? {} : { ":seen": { S: lease.owner } }),
              ...values,
            },
            ReturnValues: "ALL_NEW",
          }),
          { abortSignal },
        ),
      ).pipe(
        Effect.map((out) => toLease(out.Attributes ?? {})),
        Effect.mapError((e) =>
          e.name === CONDITION_FAILED
            ? new LeaseLost({
                shardId: lease.shardId,
                reason: `${operation}: no longer held by ${lease.owner ?? "nobody"} at counter ${lease.counter}`,
              })
            : unavailable(operation)(e),
        ),
        Effect.withSpan(`DynamoShardLeases.${operation}`),
      )
    }

    /** Renew, checkpoint and release need an owner; a free lease was never the caller's to keep. */
    const held = <A>(
      operation: string,
      lease: Lease,
      effect: Effect.Effect<A, LeaseLost | LeaseStoreUnavailable>,
    ) =>
      lease.owner === null
        ? Effect.fail(new LeaseLost({ shardId: lease.shardId, reason: `${operation}: the lease is free` }))
        : effect

    const api: ShardLeasesApi = {
      ensure,
      list,
      take: (lease, owner) =>
        write("take", lease, { set: "#owner = :owner" }, {}, { ":owner": { S: owner } }),
      renew: (lease) => held("renew", lease, write("renew", lease, {})),
      checkpoint: (lease, checkpoint) =>
        held(
          "checkpoint",
          lease,
          write(
            "checkpoint",
            lease,
            { set: "#checkpoint = :checkpoint" },
            { "#checkpoint": "checkpoint" },
            { ":checkpoint": { S: encodeCheckpoint(checkpoint) } },
          ),
        ),
      release: (lease) =>
        held("release", lease, Effect.asVoid(write("release", lease, { remove: "#owner" }))),
    }
    return api
  })

/** ShardLeases on the given table; the DynamoDB client lives as long as the layer. */
export const layerWith = (
  config: LeasesConfig.DynamoLeasesConfig,
): Layer.Layer<ShardLeases, LeaseStoreUnavailable> => Layer.scoped(ShardLeases, make(config))

/** ShardLeases on the table the environment names (SLUICE_LEASES_*, see `LeasesConfig.ts`). */
export const layer = Layer.unwrapScoped(Effect.map(LeasesConfig.dynamo, layerWith))
