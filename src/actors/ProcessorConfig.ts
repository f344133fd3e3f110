/**
 * Processing tier configuration (SLUICE_PROCESSOR_*), read with Effect `Config`.
 */
import { hostname } from "node:os"
import { Config, ConfigError, Either, Option, type Redacted } from "effect"
import { dataDir } from "../platform/DataDir.js"
import type { LeaseCheckpoint } from "../stream/ShardLeases.js"
import * as StreamConfig from "../stream/StreamConfig.js"

export interface ProcessorConfig {
  /**
   * The consumer application this processor belongs to: the processors with one name share the
   * stream's shards through one lease table and store everything once between them. Default
   * `processor`.
   */
  readonly consumer: string
  /**
   * This processor's name in the lease table, unique among the running processors of the
   * application. Default `<hostname>-<pid>`; the supervisor gives its processor child a name that
   * survives restarts, so a restarted child takes its own leases back at once instead of waiting
   * out the failover time.
   */
  readonly workerId: string
  /**
   * How long a lease may go unrenewed before another processor takes it (KCL's failover time).
   * Default 10 s: a dead processor's shards resume within about 1.5 × this.
   */
  readonly failoverMs: number
  /** Where a shard no processor of the application has read yet starts. Default the oldest record. */
  readonly initialPosition: LeaseCheckpoint
  /**
   * How often a shard worker writes its checkpoint, at most. Default 1 s: a checkpoint is a lease
   * store write (a DynamoDB write unit on AWS), and a crash replays at most this much, which the
   * storage tier deduplicates.
   */
  readonly checkpointIntervalMs: number
  /** Records per pull from a shard. Default 500: a pull is handled in one event-loop turn, so this bounds the stall. */
  readonly pullMaxRecords: number
  /** Bytes per pull from a shard. Default 4 MiB. */
  readonly pullMaxBytes: number
  /** Wait before pulling again from a caught-up shard. Default 5 ms: it bounds live latency. */
  readonly idlePollMs: number
  /**
   * Pulled records in flight (not yet stored and checkpointed) per shard before the worker stops
   * pulling. Default 10,000 (twenty full pulls): enough for a shard's share of a 250 ms insert
   * interval and the insert itself at ~35,000 readings/s over 4 shards, below which the shards
   * would stop pulling while inserts run. Records, not batches: a count of batches would stop
   * the pulls of a lightly loaded shard (many small pulls per insert interval) and with them the
   * live feed, until the next insert.
   */
  readonly maxInflightRecords: number
  /**
   * A tenant actor inserts when this many readings are buffered... Default 10,000. Every insert
   * writes three tables (readings, latest, rollups) at a fixed cost of ~10 ms of CPU for each
   * beyond its rows, so fewer, larger inserts are cheaper (bench/README.md, "The cost of latest").
   */
  readonly maxBatchRows: number
  /**
   * ...or when the oldest buffered reading has waited this long. Default 250 ms: how much later a
   * reading is in history and aggregates than it is in the live feed (which tails the stream).
   */
  readonly flushIntervalMs: number
  /** Batches (each at most one pull) a tenant actor's mailbox holds before senders wait. Default 32. */
  readonly mailboxBatches: number
  /**
   * Message ids remembered per device for dedup. Default 64: redeliveries (a QoS 1 resend after a
   * reconnect) arrive close together; older duplicates (replays) are dropped by ClickHouse. It is
   * per device, so it is most of a device actor's memory (about 64 x 60 B).
   */
  readonly dedupWindow: number
  /** A device actor idle this long is dropped (its state is rebuilt on the next message). Default 10 min. */
  readonly deviceIdleMs: number
  /**
   * How long a tenant's inserts may keep failing before its batches are parked in the spill, so
   * the shared shard checkpoints move on for the other tenants. Default 10 s.
   */
  readonly spillAfterMs: number
  /**
   * Byte budget of the spill (of this processor's entries in a shared S3 spill); past it a failing
   * tenant's batches wait in the stream. Default 1 GiB.
   */
  readonly spillMaxBytes: number
  /**
   * How often the spill is listed for tenants with entries, so that batches a stopped processor
   * left in a shared spill are drained by the ones still running. Default 10 s.
   */
  readonly spillScanMs: number
  /** Where the spill file lives (SLUICE_DATA_DIR). */
  readonly dataDir: string
  /**
   * The shared spill (SLUICE_SPILL_*): set, the spill is S3 objects every processor sees
   * (`S3Spill.ts`); unset (default), the SQLite file in `dataDir`.
   */
  readonly spillBucket?: SpillBucketConfig | undefined
}

/** Where the shared spill lives: a bucket of S3 or of an S3-compatible store. */
export interface SpillBucketConfig {
  /** Bucket name (SLUICE_SPILL_BUCKET); setting it selects the S3 spill. It must exist. */
  readonly bucket: string
  /** Key prefix of the spill's objects (SLUICE_SPILL_PREFIX). Default `spill/`. */
  readonly prefix: string
  /**
   * An S3-compatible endpoint instead of AWS S3 (SLUICE_SPILL_ENDPOINT); when set, requests use
   * path-style addressing (`<endpoint>/<bucket>/<key>`). Unset = AWS S3.
   */
  readonly endpoint: string | undefined
  /** The Kinesis settings': SLUICE_KINESIS_REGION (default us-east-1)... */
  readonly region: string
  /** ...and SLUICE_KINESIS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY; unset = the AWS default chain. */
  readonly accessKeyId: string | undefined
  readonly secretAccessKey: Redacted.Redacted | undefined
}

const spillKey = <A>(c: Config.Config<A>) => c.pipe(Config.nested("spill"), Config.nested("sluice"))

/** The shared spill's settings (SLUICE_SPILL_*), or undefined when SLUICE_SPILL_BUCKET is unset. */
export const spillBucket: Config.Config<SpillBucketConfig | undefined> = Config.all({
  bucket: spillKey(Config.option(Config.string("bucket"))),
  prefix: spillKey(Config.string("prefix").pipe(Config.withDefault("spill/"))),
  endpoint: spillKey(Config.option(Config.string("endpoint"))),
  kinesis: StreamConfig.kinesis,
}).pipe(
  Config.map(({ bucket, prefix, endpoint, kinesis }) =>
    // An empty value (`SLUICE_SPILL_BUCKET=` in an env file) counts as unset.
    Option.isNone(bucket) || bucket.value === ""
      ? undefined
      : {
          bucket: bucket.value,
          prefix,
          endpoint: Option.getOrUndefined(Option.filter(endpoint, (e) => e !== "")),
          region: kinesis.region,
          accessKeyId: kinesis.accessKeyId,
          secretAccessKey: kinesis.secretAccessKey,
        },
  ),
)

const key = <A>(c: Config.Config<A>) => c.pipe(Config.nested("processor"), Config.nested("sluice"))

/** `trim_horizon` (default), `latest`, or an ISO 8601 time: where a never-read shard starts. */
const initialPosition = Config.string("initial_position").pipe(
  Config.withDefault("trim_horizon"),
  Config.mapOrFail((text) => {
    if (text === "trim_horizon") return Either.right<LeaseCheckpoint>({ _tag: "TrimHorizon" })
    if (text === "latest") return Either.right<LeaseCheckpoint>({ _tag: "Latest" })
    const at = Date.parse(text)
    return Number.isNaN(at)
      ? Either.left(
          ConfigError.InvalidData(
            [],
            `expected trim_horizon, latest or an ISO 8601 time such as 2026-01-01T00:00:00Z, got "${text}"`,
          ),
        )
      : Either.right<LeaseCheckpoint>({ _tag: "AtTimestamp", at })
  }),
)

export const processor: Config.Config<ProcessorConfig> = Config.all({
  consumer: key(Config.string("consumer").pipe(Config.withDefault("processor"))),
  workerId: key(
    Config.option(Config.nonEmptyString("worker_id")).pipe(
      Config.map(Option.getOrElse(() => `${hostname()}-${process.pid}`)),
    ),
  ),
  failoverMs: key(
    Config.integer("failover_ms").pipe(
      Config.withDefault(10_000),
      Config.validate({ message: "must be at least 300", validation: (n) => n >= 300 }),
    ),
  ),
  initialPosition: key(initialPosition),
  checkpointIntervalMs: key(Config.integer("checkpoint_interval_ms").pipe(Config.withDefault(1_000))),
  pullMaxRecords: key(Config.integer("pull_max_records").pipe(Config.withDefault(500))),
  pullMaxBytes: key(Config.integer("pull_max_bytes").pipe(Config.withDefault(4 * 1024 * 1024))),
  idlePollMs: key(Config.integer("idle_poll_ms").pipe(Config.withDefault(5))),
  maxInflightRecords: key(
    Config.integer("max_inflight_records").pipe(
      Config.withDefault(10_000),
      Config.validate({ message: "must be at least 1", validation: (n) => n >= 1 }),
    ),
  ),
  maxBatchRows: key(Config.integer("max_batch_rows").pipe(Config.withDefault(10_000))),
  flushIntervalMs: key(Config.integer("flush_interval_ms").pipe(Config.withDefault(250))),
  mailboxBatches: key(Config.integer("mailbox_batches").pipe(Config.withDefault(32))),
  dedupWindow: key(Config.integer("dedup_window").pipe(Config.withDefault(64))),
  deviceIdleMs: key(Config.integer("device_idle_ms").pipe(Config.withDefault(600_000))),
  spillAfterMs: key(Config.integer("spill_after_ms").pipe(Config.withDefault(10_000))),
  spillMaxBytes: key(Config.integer("spill_max_bytes").pipe(Config.withDefault(1024 ** 3))),
  spillScanMs: key(Config.integer("spill_scan_ms").pipe(Config.withDefault(10_000))),
  dataDir,
  spillBucket,
})

/** Defaults, for tests and benchmarks that override a few fields. */
export const defaults: ProcessorConfig = {
  consumer: "processor",
  workerId: `${hostname()}-${process.pid}`,
  failoverMs: 10_000,
  initialPosition: { _tag: "TrimHorizon" },
  checkpointIntervalMs: 1_000,
  pullMaxRecords: 500,
  pullMaxBytes: 4 * 1024 * 1024,
  idlePollMs: 5,
  maxInflightRecords: 10_000,
  maxBatchRows: 10_000,
  flushIntervalMs: 250,
  mailboxBatches: 32,
  dedupWindow: 64,
  deviceIdleMs: 600_000,
  spillAfterMs: 10_000,
  spillMaxBytes: 1024 ** 3,
  spillScanMs: 10_000,
  dataDir: "./data",
}
