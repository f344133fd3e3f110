/**
 * The AWS SDK boundary of the Kinesis backend: building the client from config, calling it from
 * Effect (interruption aborts the HTTP request), and turning SDK failures into plain data so the
 * rest of the backend matches on names instead of SDK exception classes.
 */
import {
  GetRecordsCommand,
  GetShardIteratorCommand,
  KinesisClient,
  PutRecordsCommand,
} from "@aws-sdk/client-kinesis"
import { NodeHttpHandler } from "@smithy/node-http-handler"
import { Data, Effect, Redacted } from "effect"
import { PutRequestFailed, type PutSender } from "./kinesisPut.js"
import type { ReadApi } from "./kinesisReader.js"
import type { KinesisStreamConfig } from "./StreamConfig.js"

/** A failed Kinesis call, reduced to what the backend decides on. */
export class AwsError extends Data.TaggedError("AwsError")<{
  /** The AWS error code (`ProvisionedThroughputExceededException`, ...) or the JS error name. */
  readonly name: string
  readonly message: string
  /** `client`: the request was refused as sent; `server`/`network`: it may succeed if retried. */
  readonly fault: "client" | "server" | "network"
}> {
  /** `Name: message`, for error reasons that reach logs and callers. */
  get reason(): string {
    return `${this.name}: ${this.message}`
  }
}

/**
 * Errors that mean "too much, too fast": retried with backoff, and reported as StreamFull when they
 * persist, because the remedy is the same as a full embedded log: slow down or add shards.
 */
const THROTTLING = new Set([
  "ProvisionedThroughputExceededException",
  "ThrottlingException",
  "LimitExceededException",
  "KMSThrottlingException",
])

/** Whether an AWS error code means throttling. */
export const isThrottling = (name: string): boolean => THROTTLING.has(name)

interface SdkErrorShape {
  readonly name?: unknown
  readonly message?: unknown
  readonly $fault?: unknown
}

/** Reduces whatever the SDK threw to an AwsError. */
export const toAwsError = (cause: unknown): AwsError => {
  const shape: SdkErrorShape = typeof cause === "object" && cause !== null ? cause : {}
  const name = typeof shape.name === "string" ? shape.name : "UnknownError"
  const message = typeof shape.message === "string" ? shape.message : String(cause)
  // Service exceptions carry $fault; anything else (ECONNREFUSED, a timeout) failed in transport.
  const fault = shape.$fault === "client" || shape.$fault === "server" ? shape.$fault : "network"
  return new AwsError({ name, message, fault })
}

/** Runs one SDK call; interrupting the effect aborts the request. */
export const call = <A>(send: (signal: AbortSignal) => Promise<A>): Effect.Effect<A, AwsError> =>
  Effect.tryPromise({ try: send, catch: toAwsError })

/** Emulator timeouts: a healthy call takes milliseconds, and kinesalite never answers some requests. */
const EMULATOR_CONNECT_TIMEOUT_MS = 3_000
const EMULATOR_REQUEST_TIMEOUT_MS = 10_000

/** Where and as whom an AWS SDK client connects (the Kinesis client's and the lease table's). */
export interface AwsTarget {
  readonly region: string
  readonly endpoint?: string | undefined
  readonly accessKeyId?: string | undefined
  readonly secretAccessKey?: Redacted.Redacted | undefined
}

/** SDK client options for `target`: static credentials if given, and an emulator's endpoint. */
export const awsClientOptions = (target: AwsTarget) => {
  const options: {
    region: string
    credentials?: { accessKeyId: string; secretAccessKey: string }
    endpoint?: string
    requestHandler?: NodeHttpHandler
  } = { region: target.region }
  if (target.accessKeyId !== undefined && target.secretAccessKey !== undefined) {
    options.credentials = {
      accessKeyId: target.accessKeyId,
      secretAccessKey: Redacted.value(target.secretAccessKey),
    }
  }
  if (target.endpoint !== undefined) {
    options.endpoint = target.endpoint
    // Emulators speak plain HTTP/1.1. A request timeout that throws (not just warns) turns a
    // request the emulator never answers into a retryable error instead of a hung call.
    options.requestHandler = new NodeHttpHandler({
      connectionTimeout: EMULATOR_CONNECT_TIMEOUT_MS,
      requestTimeout: EMULATOR_REQUEST_TIMEOUT_MS,
      throwOnRequestTimeout: true,
    })
  }
  return options
}

/** The SDK client for the configured region/endpoint/credentials, destroyed when the scope closes. */
export const makeClient = (config: KinesisStreamConfig) =>
  Effect.acquireRelease(
    Effect.sync(() => new KinesisClient(awsClientOptions(config))),
    (client) => Effect.sync(() => client.destroy()),
  )

/** PutRecords on `streamName` as a `PutSender`: throttling, refusals and transient failures told apart. */
export const putRecordsSender =
  (client: KinesisClient, streamName: string): PutSender =>
  (records) =>
    call((abortSignal) =>
      client.send(
        new PutRecordsCommand({
          StreamName: streamName,
          Records: records.map((r) => ({ PartitionKey: r.partitionKey, Data: r.data })),
        }),
        { abortSignal },
      ),
    ).pipe(
      Effect.map((out) =>
        (out.Records ?? []).map((r) => ({
          shardId: r.ShardId,
          sequenceNumber: r.SequenceNumber,
          errorCode: r.ErrorCode ?? undefined,
          errorMessage: r.ErrorMessage,
        })),
      ),
      Effect.mapError(
        (e) =>
          new PutRequestFailed({
            kind: isThrottling(e.name) ? "throughput" : e.fault === "client" ? "fatal" : "retryable",
            reason: e.reason,
          }),
      ),
    )

/** GetShardIterator and GetRecords on `streamName`, for readers. */
export const readApi = (client: KinesisClient, streamName: string): ReadApi => ({
  getShardIterator: (input) =>
    call((abortSignal) =>
      client.send(new GetShardIteratorCommand({ ...input, StreamName: streamName }), { abortSignal }),
    ),
  getRecords: (input) => call((abortSignal) => client.send(new GetRecordsCommand(input), { abortSignal })),
})
