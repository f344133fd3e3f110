import { Schema } from "effect"

/** The batch handed to `append` had no records. */
export class EmptyBatch extends Schema.TaggedError<EmptyBatch>()("EmptyBatch", {}) {
  override get message() {
    return "append needs at least one record"
  }
}

/** A partition key is empty or longer than Kinesis allows (256 characters). */
export class InvalidPartitionKey extends Schema.TaggedError<InvalidPartitionKey>()("InvalidPartitionKey", {
  index: Schema.Number,
  length: Schema.Number,
}) {
  override get message() {
    return `record ${this.index}: partition key must be 1..256 characters, got ${this.length}`
  }
}

/** One record (data + partition key) is larger than the per-record limit (Kinesis: 1 MiB). */
export class RecordTooLarge extends Schema.TaggedError<RecordTooLarge>()("RecordTooLarge", {
  index: Schema.Number,
  bytes: Schema.Number,
  maxBytes: Schema.Number,
}) {
  override get message() {
    return `record ${this.index} is ${this.bytes} bytes, the limit is ${this.maxBytes}`
  }
}

/** The shard does not exist in this stream (or has expired). */
export class UnknownShard extends Schema.TaggedError<UnknownShard>()("UnknownShard", {
  shardId: Schema.String,
}) {
  override get message() {
    return `no shard ${this.shardId} in this stream`
  }
}

/** A sequence number that is not a decimal of at most 129 digits. */
export class MalformedSequenceNumber extends Schema.TaggedError<MalformedSequenceNumber>()(
  "MalformedSequenceNumber",
  { value: Schema.String },
) {
  override get message() {
    return `malformed sequence number ${JSON.stringify(this.value.slice(0, 140))}: expected up to 129 decimal digits`
  }
}

/** A read position names a sequence number the shard has not reached. */
export class PositionPastEnd extends Schema.TaggedError<PositionPastEnd>()("PositionPastEnd", {
  shardId: Schema.String,
  sequenceNumber: Schema.String,
}) {
  override get message() {
    return `sequence number ${this.sequenceNumber} is past the end of ${this.shardId}`
  }
}

/**
 * The stream is at its bound (embedded: disk budget; Kinesis: throughput still exceeded after
 * retries). Ingress turns this into pushback (no PUBACK, HTTP 429/503 with Retry-After).
 */
export class StreamFull extends Schema.TaggedError<StreamFull>()("StreamFull", {
  reason: Schema.String,
  retryAfterMs: Schema.Number,
}) {
  override get message() {
    return `stream full: ${this.reason}; retry after ${this.retryAfterMs} ms`
  }
}

/** The backend failed (I/O error, network, emulator gone). The operation may be retried. */
export class StreamUnavailable extends Schema.TaggedError<StreamUnavailable>()("StreamUnavailable", {
  operation: Schema.String,
  reason: Schema.String,
}) {
  override get message() {
    return `stream ${this.operation} failed: ${this.reason}`
  }
}

/** Every error the StreamLog contract can fail with. */
export type StreamError =
  | EmptyBatch
  | InvalidPartitionKey
  | RecordTooLarge
  | UnknownShard
  | MalformedSequenceNumber
  | PositionPastEnd
  | StreamFull
  | StreamUnavailable

/** Errors of `append`. */
export type AppendError = EmptyBatch | InvalidPartitionKey | RecordTooLarge | StreamFull | StreamUnavailable

/** Errors of opening or pulling a shard reader. */
export type ReadError = UnknownShard | MalformedSequenceNumber | PositionPastEnd | StreamUnavailable
