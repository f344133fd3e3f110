import { describe, expect, it } from "vitest"
import {
  compareSequenceNumbers,
  evenHashRanges,
  hashKey,
  MAX_HASH_KEY,
  readableShards,
  shardFor,
} from "../../src/stream/Shards.js"
import type { ShardInfo } from "../../src/stream/StreamLog.js"

describe("Kinesis shard semantics", () => {
  it("hashes a partition key with MD5 into 128 bits", () => {
    // md5("device-1") = 0x...; checked against node's own md5 of a known string.
    expect(hashKey("")).toBe(0xd41d8cd98f00b204e9800998ecf8427en)
    expect(hashKey("device-1") <= MAX_HASH_KEY).toBe(true)
  })

  it("lays even shard ranges over the whole hash space without gaps", () => {
    const ranges = evenHashRanges(3)
    expect(ranges[0]!.start).toBe(0n)
    expect(ranges[2]!.end).toBe(MAX_HASH_KEY)
    expect(ranges[1]!.start).toBe(ranges[0]!.end + 1n)
    expect(ranges[2]!.start).toBe(ranges[1]!.end + 1n)
    const shards = ranges.map((r, i) => ({ shardId: `s${i}`, hashKeyStart: r.start, hashKeyEnd: r.end }))
    expect(shardFor(shards, "")!.shardId).toBe("s2") // 0xd4... is in the top third
  })

  it("compares sequence numbers as decimals, not strings", () => {
    expect(compareSequenceNumbers("9", "10")).toBe(-1)
    expect(compareSequenceNumbers("49590338271490256608559692538361571095921575989136588898", "9")).toBe(1)
    expect(compareSequenceNumbers("007", "7")).toBe(0)
    expect(compareSequenceNumbers("1".repeat(129), "1".repeat(128) + "2")).toBe(-1)
  })

  it("reads a child shard only after all its parents are finished", () => {
    const shard = (shardId: string, parent?: string, adjacent?: string): ShardInfo => ({
      shardId,
      parentShardId: parent,
      adjacentParentShardId: adjacent,
      hashKeyStart: 0n,
      hashKeyEnd: 1n,
    })
    // p splits into a and b; a and b merge into m.
    const shards = [shard("p"), shard("a", "p"), shard("b", "p"), shard("m", "a", "b")]
    const ids = (finished: Array<string>) => readableShards(shards, new Set(finished)).map((s) => s.shardId)
    expect(ids([])).toEqual(["p"])
    expect(ids(["p"])).toEqual(["a", "b"])
    expect(ids(["p", "a"])).toEqual(["b"])
    expect(ids(["p", "a", "b"])).toEqual(["m"])
    // An expired parent (no longer listed) does not block its children.
    expect(readableShards(shards.slice(1), new Set()).map((s) => s.shardId)).toEqual(["a", "b"])
  })
})
