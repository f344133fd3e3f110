/**
 * PutRecords retry and partitioning against a scripted sender: the emulators never throttle nor
 * fail part of a request, so this is where partial failures and backoff are exercised.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Either, Fiber, TestClock } from "effect"
import {
  defaultPutPolicy,
  MAX_PUT_BYTES,
  MAX_PUT_RECORDS,
  type PutOutcome,
  PutRequestFailed,
  type PutSender,
  putRecords,
} from "../../src/stream/kinesisPut.js"
import type { AppendRecord } from "../../src/stream/StreamLog.js"

const text = (data: Uint8Array) => new TextDecoder().decode(data)
const record = (partitionKey: string, body: string): AppendRecord => ({
  partitionKey,
  data: new TextEncoder().encode(body),
})

/**
 * A fake stream: appends what it accepts to a per-key log and numbers it. `script(call, records)`
 * decides, per call, which positions fail (or throws the whole request).
 */
const fakeStream = (
  script: (call: number, records: ReadonlyArray<AppendRecord>) => ReadonlyArray<number> | PutRequestFailed,
) => {
  const calls: Array<{ at: number; bodies: ReadonlyArray<string> }> = []
  const log = new Map<string, Array<string>>()
  let seq = 0
  const send: PutSender = (records) =>
    Effect.gen(function* () {
      calls.push({ at: yield* Clock.currentTimeMillis, bodies: records.map((r) => text(r.data)) })
      const failing = script(calls.length, records)
      if (failing instanceof PutRequestFailed) return yield* failing
      return records.map((r, i): PutOutcome => {
        if (failing.includes(i)) {
          return { errorCode: "ProvisionedThroughputExceededException", errorMessage: "slow down" }
        }
        const bodies = log.get(r.partitionKey) ?? []
        bodies.push(text(r.data))
        log.set(r.partitionKey, bodies)
        return { shardId: `shard-${r.partitionKey}`, sequenceNumber: `${++seq}:${text(r.data)}` }
      })
    })
  return { send, calls, log }
}

/** Runs a put to completion while the test clock skips through its backoff sleeps. */
const runPut = (records: ReadonlyArray<AppendRecord>, send: PutSender, policy = defaultPutPolicy) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(Effect.either(putRecords(records, send, policy)))
    yield* TestClock.adjust("10 minutes")
    return yield* Fiber.join(fiber)
  })

describe("kinesisPut", () => {
  it.effect("resends only the failed records and maps results back to input positions", () =>
    Effect.gen(function* () {
      const records = [
        record("a", "a0"),
        record("b", "b0"),
        record("c", "c0"),
        record("a", "a1"),
        record("b", "b1"),
      ]
      // The first request fails b0 (position 1); everything else succeeds.
      const stream = fakeStream((call) => (call === 1 ? [1] : []))
      const result = yield* runPut(records, stream.send)
      expect(stream.calls.map((c) => c.bodies)).toEqual([["a0", "b0", "c0"], ["a1", "b0"], ["b1"]])
      const acks = Either.getOrThrow(result)
      expect(acks.map((a) => a.sequenceNumber.split(":")[1])).toEqual(["a0", "b0", "c0", "a1", "b1"])
      expect(acks.map((a) => a.shardId)).toEqual(["shard-a", "shard-b", "shard-c", "shard-a", "shard-b"])
    }),
  )

  it.effect("keeps each key's order and never puts two records of one key in one request", () =>
    Effect.gen(function* () {
      const keys = ["k0", "k1", "k2", "k3", "k4"]
      const records = Array.from({ length: 60 }, (_, i) => record(keys[(i * 7) % 5]!, `m${i}`))
      // Fails a rotating third of every request, so most records are retried at least once.
      const stream = fakeStream((call, sent) => sent.map((_, i) => i).filter((i) => (i + call) % 3 === 0))
      const policy = { ...defaultPutPolicy, maxElapsedMs: 600_000 }
      const acks = Either.getOrThrow(yield* runPut(records, stream.send, policy))
      for (const call of stream.calls) {
        const callKeys = call.bodies.map((b) => records.find((r) => text(r.data) === b)!.partitionKey)
        expect(new Set(callKeys).size).toBe(callKeys.length)
      }
      for (const key of keys) {
        const expected = records.filter((r) => r.partitionKey === key).map((r) => text(r.data))
        expect(stream.log.get(key)).toEqual(expected)
      }
      expect(acks.map((a) => a.sequenceNumber.split(":")[1])).toEqual(records.map((r) => text(r.data)))
      expect(stream.calls.length).toBeGreaterThan(12) // 12 records of each key need at least 12 rounds
    }),
  )

  it.effect("splits a round into requests of at most 500 records and 5 MiB", () =>
    Effect.gen(function* () {
      const many = Array.from({ length: 1_200 }, (_, i) => record(`d${i}`, "x"))
      const counted = fakeStream(() => [])
      expect(Either.isRight(yield* runPut(many, counted.send))).toBe(true)
      expect(counted.calls.map((c) => c.bodies.length)).toEqual([MAX_PUT_RECORDS, MAX_PUT_RECORDS, 200])

      const big = Array.from({ length: 12 }, (_, i) => ({
        partitionKey: `b${i}`,
        data: new Uint8Array(1_000_000),
      }))
      const sized = fakeStream(() => [])
      expect(Either.isRight(yield* runPut(big, sized.send))).toBe(true)
      for (const call of sized.calls)
        expect(call.bodies.length * 1_000_003).toBeLessThanOrEqual(MAX_PUT_BYTES)
      expect(sized.calls.map((c) => c.bodies.length).reduce((a, b) => a + b)).toBe(12)
    }),
  )

  it.effect("backs off exponentially on throughput errors, then fails with StreamFull", () =>
    Effect.gen(function* () {
      const policy = { ...defaultPutPolicy, maxAttempts: 6, maxElapsedMs: 60_000 }
      const stream = fakeStream(() => new PutRequestFailed({ kind: "throughput", reason: "Rate exceeded" }))
      const result = yield* runPut([record("a", "a0")], stream.send, policy)
      expect(Either.isLeft(result) && result.left.error._tag).toBe("StreamFull")
      if (Either.isLeft(result)) {
        expect(result.left.landed).toEqual([undefined])
        expect(result.left.error.message).toContain("Rate exceeded")
      }
      expect(stream.calls).toHaveLength(6)
      const gaps = stream.calls.slice(1).map((c, i) => c.at - stream.calls[i]!.at)
      // Equal jitter: each gap is within [d/2, d] of a nominal delay d that doubles per attempt.
      gaps.forEach((gap, i) => {
        const nominal = policy.baseDelayMs * 2 ** i
        expect(gap).toBeGreaterThanOrEqual(nominal / 2)
        expect(gap).toBeLessThanOrEqual(nominal)
      })
    }),
  )

  it.effect("gives up on per-record throttling within the time bound, keeping what landed", () =>
    Effect.gen(function* () {
      const policy = { ...defaultPutPolicy, maxElapsedMs: 3_000 }
      // Key "hot" is always throttled; "cool" lands.
      const stream = fakeStream((_, sent) => sent.flatMap((r, i) => (r.partitionKey === "hot" ? [i] : [])))
      const started = yield* Clock.currentTimeMillis
      const result = yield* runPut([record("cool", "c0"), record("hot", "h0")], stream.send, policy)
      expect(Either.isLeft(result) && result.left.error._tag).toBe("StreamFull")
      if (Either.isLeft(result)) {
        expect(result.left.landed[0]?.sequenceNumber).toBe("1:c0")
        expect(result.left.landed[1]).toBeUndefined()
      }
      expect(stream.calls.at(-1)!.at - started).toBeLessThanOrEqual(3_000)
      expect(stream.log.get("hot")).toBeUndefined()
    }),
  )

  it.effect("retries retryable errors, then fails with StreamUnavailable; fatal errors fail at once", () =>
    Effect.gen(function* () {
      const flaky = fakeStream((call) =>
        call <= 2 ? new PutRequestFailed({ kind: "retryable", reason: "InternalFailure" }) : [],
      )
      expect(Either.isRight(yield* runPut([record("a", "a0")], flaky.send))).toBe(true)
      expect(flaky.calls).toHaveLength(3)

      const down = fakeStream(() => new PutRequestFailed({ kind: "retryable", reason: "ECONNREFUSED" }))
      const failed = yield* runPut([record("a", "a0")], down.send)
      expect(Either.isLeft(failed) && failed.left.error._tag).toBe("StreamUnavailable")
      expect(down.calls).toHaveLength(defaultPutPolicy.maxAttempts)

      const refused = fakeStream(
        () => new PutRequestFailed({ kind: "fatal", reason: "ResourceNotFoundException" }),
      )
      const fatal = yield* runPut([record("a", "a0")], refused.send)
      expect(Either.isLeft(fatal) && fatal.left.error._tag).toBe("StreamUnavailable")
      expect(refused.calls).toHaveLength(1)
    }),
  )
})
