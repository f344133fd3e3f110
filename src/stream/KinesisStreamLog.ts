/**
 * The StreamLog on AWS Kinesis (or an emulator, through `endpoint`). The stream is created with
 * `shard_count` shards if it does not exist. Appends are group-committed into shared PutRecords
 * requests (`kinesisGroupCommit.ts`, `kinesisPut.ts`); readers are in `kinesisReader.ts`.
 *
 * It keeps nothing on local disk: a processor fleet's checkpoints live in its shard leases
 * (`DynamoShardLeases`), which any number of workers on any machines share.
 */
import {
  CreateStreamCommand,
  DescribeStreamSummaryCommand,
  ListShardsCommand,
  type Shard,
} from "@aws-sdk/client-kinesis"
import { Effect, Layer } from "effect"
import { call, makeClient, putRecordsSender, readApi } from "./kinesisClient.js"
import { defaultQueueBounds, groupCommit, type QueueBounds } from "./kinesisGroupCommit.js"
import { defaultPutPolicy, type PutPolicy } from "./kinesisPut.js"
import { openReader } from "./kinesisReader.js"
import { validateBatch } from "./Shards.js"
import * as StreamConfig from "./StreamConfig.js"
import { StreamUnavailable } from "./StreamError.js"
import { type ShardInfo, StreamLog, type StreamLogApi } from "./StreamLog.js"

/** Tuning for `make`; every field has a default. */
export interface KinesisOptions {
  /** Retry and backoff of PutRecords. */
  readonly put?: PutPolicy
  /** How many records and bytes may wait for PutRecords before appends get StreamFull. */
  readonly queue?: Partial<QueueBounds>
  /** How long start-up waits for a new stream to become ACTIVE. */
  readonly activeTimeoutMs?: number
}

const unavailable = (operation: string) => (e: unknown) =>
  new StreamUnavailable({
    operation,
    reason: typeof e === "object" && e !== null && "reason" in e ? String(e.reason) : String(e),
  })

const toShardInfo = (s: Shard): ShardInfo => ({
  shardId: s.ShardId ?? "",
  parentShardId: s.ParentShardId,
  adjacentParentShardId: s.AdjacentParentShardId,
  hashKeyStart: BigInt(s.HashKeyRange?.StartingHashKey ?? "0"),
  hashKeyEnd: BigInt(s.HashKeyRange?.EndingHashKey ?? "0"),
  endingSequenceNumber: s.SequenceNumberRange?.EndingSequenceNumber,
})

/** Connects to the stream (creating it if missing); the scope drains pending appends, then closes. */
export const make = (config: StreamConfig.KinesisStreamConfig, options: KinesisOptions = {}) =>
  Effect.gen(function* () {
    const streamName = config.streamName
    const client = yield* makeClient(config)

    // --- the stream exists and is ACTIVE ---------------------------------------------------------
    const describe = Effect.map(
      call((abortSignal) =>
        client.send(new DescribeStreamSummaryCommand({ StreamName: streamName }), { abortSignal }),
      ),
      (out) => out.StreamDescriptionSummary?.StreamStatus,
    )
    const create = call((abortSignal) =>
      client.send(new CreateStreamCommand({ StreamName: streamName, ShardCount: config.shardCount }), {
        abortSignal,
      }),
    ).pipe(
      Effect.catchIf(
        (e) => e.name === "ResourceInUseException",
        () => Effect.void,
      ),
    )
    const usable = (status: string | undefined) => status === "ACTIVE" || status === "UPDATING"
    yield* describe.pipe(
      Effect.catchIf(
        (e) => e.name === "ResourceNotFoundException",
        () => Effect.as(create, "CREATING"),
      ),
      Effect.flatMap((status) =>
        usable(status)
          ? Effect.void
          : describe.pipe(
              Effect.delay("100 millis"),
              Effect.repeat({ until: usable }),
              Effect.timeoutFail({
                duration: options.activeTimeoutMs ?? 60_000,
                onTimeout: () => `stream ${streamName} did not become ACTIVE`,
              }),
            ),
      ),
      Effect.mapError(unavailable("start")),
      Effect.withSpan("KinesisStreamLog.start"),
    )

    // --- shards ---------------------------------------------------------------------------------
    const listShards = Effect.gen(function* () {
      const shards: Array<ShardInfo> = []
      let nextToken: string | undefined
      do {
        // A later page is named by its token alone (AWS refuses both). kinesalite never returns a
        // token, and crashes when sent one, so a token is only ever sent back, never invented.
        const input = nextToken === undefined ? { StreamName: streamName } : { NextToken: nextToken }
        const out = yield* call((abortSignal) => client.send(new ListShardsCommand(input), { abortSignal }))
        for (const shard of out.Shards ?? []) shards.push(toShardInfo(shard))
        nextToken = out.NextToken
      } while (nextToken !== undefined)
      return shards as ReadonlyArray<ShardInfo>
    }).pipe(Effect.mapError(unavailable("listShards")), Effect.withSpan("KinesisStreamLog.listShards"))

    // --- appends ---------------------------------------------------------------------------------
    const enqueue = yield* groupCommit(
      putRecordsSender(client, streamName),
      options.put ?? defaultPutPolicy,
      {
        ...defaultQueueBounds,
        ...options.queue,
      },
    )
    const append: StreamLogApi["append"] = Effect.fn("KinesisStreamLog.append")(function* (records) {
      yield* validateBatch(records)
      return yield* enqueue(records)
    })

    // --- reading --------------------------------------------------------------------------------
    const reads = readApi(client, streamName)
    const reader: StreamLogApi["reader"] = Effect.fn("KinesisStreamLog.reader")((shardId, position) =>
      openReader(reads, shardId, position),
    )

    return StreamLog.of({ append, listShards, reader })
  })

/** Kinesis configured from the environment (SLUICE_KINESIS_*). */
export const layer = Layer.scoped(
  StreamLog,
  Effect.flatMap(StreamConfig.kinesis, (config) => make(config)),
)

/** Kinesis with explicit settings (tests, benchmarks). */
export const layerWith = (config: StreamConfig.KinesisStreamConfig, options?: KinesisOptions) =>
  Layer.scoped(StreamLog, make(config, options))
