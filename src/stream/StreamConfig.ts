/**
 * Stream tier configuration, read with Effect `Config`. Keys are snake_case with unit suffixes;
 * from the environment they are upper-cased under SLUICE_, e.g. `SLUICE_STREAM_SHARD_COUNT`.
 */
import { Config, type Redacted } from "effect"
import { dataDir } from "../platform/DataDir.js"

/** Which StreamLog backend runs (SLUICE_STREAM_BACKEND): `embedded` (default) or `kinesis`. */
export const backend = Config.literal(
  "embedded",
  "kinesis",
)("backend").pipe(Config.withDefault("embedded" as const), Config.nested("stream"), Config.nested("sluice"))

export interface EmbeddedStreamConfig {
  /** Directory of the log's SQLite files. */
  readonly dataDir: string
  /** Fixed shard count of the embedded log. Default 4. */
  readonly shardCount: number
  /**
   * `true` (default): fsync the WAL on every group commit (SQLite synchronous=FULL), so an
   * acknowledged record survives power loss. `false`: let the OS flush (synchronous=NORMAL),
   * which survives a process crash (kill -9) but may lose the last commits on power loss.
   */
  readonly fsync: boolean
  /** Records older than this are trimmed. Default 24 h, as Kinesis. */
  readonly retentionMs: number
  /**
   * Disk budget: bytes of retained records (data + partition key), counted in the database and so
   * shared by every process using the log; SQLite's own overhead (pages, the WAL) comes on top. At
   * the budget, appends fail with StreamFull. Default 1 GiB.
   */
  readonly maxBytes: number
  /** How often retention runs (in every process that opens the log). Default 10 s. */
  readonly trimIntervalMs: number
}

/** The embedded log's settings (SLUICE_STREAM_*). */
export const embedded: Config.Config<EmbeddedStreamConfig> = Config.all({
  dataDir,
  shardCount: Config.integer("shard_count").pipe(
    Config.withDefault(4),
    Config.validate({ message: "must be between 1 and 1024", validation: (n) => n >= 1 && n <= 1024 }),
    Config.nested("stream"),
    Config.nested("sluice"),
  ),
  fsync: Config.boolean("fsync").pipe(
    Config.withDefault(true),
    Config.nested("stream"),
    Config.nested("sluice"),
  ),
  retentionMs: Config.integer("retention_ms").pipe(
    Config.withDefault(24 * 3600_000),
    Config.nested("stream"),
    Config.nested("sluice"),
  ),
  maxBytes: Config.integer("max_bytes").pipe(
    Config.withDefault(1024 ** 3),
    Config.nested("stream"),
    Config.nested("sluice"),
  ),
  trimIntervalMs: Config.integer("trim_interval_ms").pipe(
    Config.withDefault(10_000),
    Config.nested("stream"),
    Config.nested("sluice"),
  ),
})

export interface KinesisStreamConfig {
  /** Stream name (SLUICE_KINESIS_STREAM_NAME). Default `sluice-telemetry`. */
  readonly streamName: string
  /** Endpoint override, e.g. an emulator (SLUICE_KINESIS_ENDPOINT). Unset = AWS. */
  readonly endpoint: string | undefined
  /** AWS region (SLUICE_KINESIS_REGION). Default us-east-1. */
  readonly region: string
  /** Static credentials (SLUICE_KINESIS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY); unset = the AWS default chain. */
  readonly accessKeyId: string | undefined
  readonly secretAccessKey: Redacted.Redacted | undefined
  /** Shards to create if the stream does not exist (SLUICE_KINESIS_SHARD_COUNT). Default 4. */
  readonly shardCount: number
}

const kinesisKey = <A>(c: Config.Config<A>) => c.pipe(Config.nested("kinesis"), Config.nested("sluice"))

/** The Kinesis backend's settings (SLUICE_KINESIS_*). */
export const kinesis: Config.Config<KinesisStreamConfig> = Config.all({
  streamName: kinesisKey(Config.string("stream_name").pipe(Config.withDefault("sluice-telemetry"))),
  endpoint: kinesisKey(Config.option(Config.string("endpoint"))).pipe(
    Config.map((o) => (o._tag === "Some" ? o.value : undefined)),
  ),
  region: kinesisKey(Config.string("region").pipe(Config.withDefault("us-east-1"))),
  accessKeyId: kinesisKey(Config.option(Config.string("access_key_id"))).pipe(
    Config.map((o) => (o._tag === "Some" ? o.value : undefined)),
  ),
  secretAccessKey: kinesisKey(Config.option(Config.redacted("secret_access_key"))).pipe(
    Config.map((o) => (o._tag === "Some" ? o.value : undefined)),
  ),
  shardCount: kinesisKey(Config.integer("shard_count").pipe(Config.withDefault(4))),
})
