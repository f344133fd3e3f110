/**
 * Kinesis semantics shared by every StreamLog backend: how a partition key picks a shard, how
 * sequence numbers compare, how a batch is validated, and in which order shards may be read
 * after a reshard.
 */
import { createHash } from "node:crypto"
import { Effect } from "effect"
import { EmptyBatch, InvalidPartitionKey, MalformedSequenceNumber, RecordTooLarge } from "./StreamError.js"
import type { AppendRecord, ShardInfo } from "./StreamLog.js"

/** Kinesis: a record (data + partition key) is at most 1 MiB. */
export const MAX_RECORD_BYTES = 1024 * 1024
/** Kinesis: a partition key is 1..256 Unicode characters. */
export const MAX_PARTITION_KEY_LENGTH = 256
/** The hash-key space is the 128-bit range of MD5. */
export const MAX_HASH_KEY = (1n << 128n) - 1n

/** The 128-bit hash key of a partition key: MD5 read as an unsigned big-endian integer. */
export const hashKey = (partitionKey: string): bigint =>
  BigInt("0x" + createHash("md5").update(partitionKey, "utf8").digest("hex"))

/** Hash-key ranges of `count` equal shards, as Kinesis's CreateStream lays them out. */
export const evenHashRanges = (count: number): ReadonlyArray<{ start: bigint; end: bigint }> => {
  const size = (MAX_HASH_KEY + 1n) / BigInt(count)
  return Array.from({ length: count }, (_, i) => ({
    start: size * BigInt(i),
    end: i === count - 1 ? MAX_HASH_KEY : size * BigInt(i + 1) - 1n,
  }))
}

/** The open shard whose hash-key range holds the partition key's hash. */
export const shardFor = <S extends Pick<ShardInfo, "hashKeyStart" | "hashKeyEnd">>(
  shards: ReadonlyArray<S>,
  partitionKey: string,
): S | undefined => {
  const key = hashKey(partitionKey)
  return shards.find((s) => s.hashKeyStart <= key && key <= s.hashKeyEnd)
}

const SEQUENCE = /^[0-9]{1,129}$/

/** Checks a sequence number's shape: a decimal of up to 129 digits. */
export const parseSequenceNumber = (value: string): Effect.Effect<string, MalformedSequenceNumber> =>
  SEQUENCE.test(value) ? Effect.succeed(value) : Effect.fail(new MalformedSequenceNumber({ value }))

/** Compares two well-formed sequence numbers as the decimals they are (not as strings). */
export const compareSequenceNumbers = (a: string, b: string): -1 | 0 | 1 => {
  const x = a.replace(/^0+(?=\d)/, "")
  const y = b.replace(/^0+(?=\d)/, "")
  if (x.length !== y.length) return x.length < y.length ? -1 : 1
  return x === y ? 0 : x < y ? -1 : 1
}

/** Rejects the batches Kinesis would reject, with the first offending record's index. */
export const validateBatch = (
  records: ReadonlyArray<AppendRecord>,
  maxRecordBytes: number = MAX_RECORD_BYTES,
): Effect.Effect<void, EmptyBatch | InvalidPartitionKey | RecordTooLarge> => {
  if (records.length === 0) return Effect.fail(new EmptyBatch())
  for (let index = 0; index < records.length; index++) {
    const { partitionKey, data } = records[index]!
    if (partitionKey.length === 0 || partitionKey.length > MAX_PARTITION_KEY_LENGTH) {
      return Effect.fail(new InvalidPartitionKey({ index, length: partitionKey.length }))
    }
    const bytes = data.byteLength + Buffer.byteLength(partitionKey, "utf8")
    if (bytes > maxRecordBytes)
      return Effect.fail(new RecordTooLarge({ index, bytes, maxBytes: maxRecordBytes }))
  }
  return Effect.void
}

/**
 * The shards a consumer may read now: those not finished whose parents are all finished or no
 * longer listed (expired). A child shard is read only after its parents are fully consumed, so
 * a key's records stay in order across a split or merge.
 */
export const readableShards = (
  shards: ReadonlyArray<ShardInfo>,
  finished: ReadonlySet<string>,
): ReadonlyArray<ShardInfo> => {
  const listed = new Set(shards.map((s) => s.shardId))
  const done = (id: string | undefined) => id === undefined || !listed.has(id) || finished.has(id)
  return shards.filter(
    (s) => !finished.has(s.shardId) && done(s.parentShardId) && done(s.adjacentParentShardId),
  )
}
