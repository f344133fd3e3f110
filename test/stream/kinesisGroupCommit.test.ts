/** Group commit of the Kinesis backend against a scripted sender (no emulator needed). */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, type Duration, Effect, Either, Exit, Fiber, Option } from "effect"
import { groupCommit } from "../../src/stream/kinesisGroupCommit.js"
import { defaultPutPolicy, type PutOutcome, type PutSender } from "../../src/stream/kinesisPut.js"
import type { AppendRecord } from "../../src/stream/StreamLog.js"

const text = (data: Uint8Array) => new TextDecoder().decode(data)
const record = (partitionKey: string, body: string): AppendRecord => ({
  partitionKey,
  data: new TextEncoder().encode(body),
})
const fast = { ...defaultPutPolicy, baseDelayMs: 1, maxDelayMs: 2, maxAttempts: 3 }

/** A sender that takes `delay` per request and refuses every record whose body starts with "bad". */
const scripted = (delay: Duration.DurationInput = "10 millis") => {
  const requests: Array<ReadonlyArray<string>> = []
  const log: Array<string> = []
  const send: PutSender = (records) =>
    Effect.gen(function* () {
      requests.push(records.map((r) => text(r.data)))
      yield* Effect.sleep(delay)
      return records.map((r, i): PutOutcome => {
        const body = text(r.data)
        if (body.startsWith("bad")) return { errorCode: "InternalFailure", errorMessage: "refused" }
        log.push(body)
        return { shardId: "shardId-000000000000", sequenceNumber: String(requests.length * 1000 + i) }
      })
    })
  return { send, requests, log }
}

describe("kinesisGroupCommit", () => {
  it.scopedLive("coalesces concurrent appends into shared requests, in the order they were made", () =>
    Effect.gen(function* () {
      const stream = scripted()
      const enqueue = yield* groupCommit(stream.send, fast)
      // 100 concurrent single-record appends: 50 devices, then the same 50 again.
      const bodies = Array.from({ length: 100 }, (_, i) => `d${i % 50}:${Math.floor(i / 50)}`)
      const acks = yield* Effect.forEach(bodies, (b) => enqueue([record(b.split(":")[0]!, b)]), {
        concurrency: "unbounded",
      })
      expect(acks.every((a) => a.length === 1)).toBe(true)
      expect(stream.requests.length).toBeLessThanOrEqual(6)
      expect(stream.requests.flat().sort()).toEqual([...bodies].sort())
      // Each device's second record landed after its first.
      for (let d = 0; d < 50; d++) {
        expect(stream.log.indexOf(`d${d}:0`)).toBeLessThan(stream.log.indexOf(`d${d}:1`))
      }
    }),
  )

  it.scopedLive("fails only the appends whose records did not land", () =>
    Effect.gen(function* () {
      const stream = scripted()
      const enqueue = yield* groupCommit(stream.send, fast)
      const [good, bad] = yield* Effect.all(
        [Effect.either(enqueue([record("a", "ok")])), Effect.either(enqueue([record("b", "bad")]))],
        {
          concurrency: "unbounded",
        },
      )
      expect(Either.isRight(good!)).toBe(true)
      expect(Either.isLeft(bad!) && bad.left._tag).toBe("StreamUnavailable")
      expect(stream.log).toEqual(["ok"])
    }),
  )

  it.scopedLive("refuses appends with StreamFull while its queue is at the bound", () =>
    Effect.gen(function* () {
      const stream = scripted("300 millis")
      const enqueue = yield* groupCommit(stream.send, fast, {
        maxQueuedRecords: 5,
        maxQueuedBytes: 1_000_000,
      })
      const first = yield* Effect.fork(enqueue(Array.from({ length: 5 }, (_, i) => record(`k${i}`, `r${i}`))))
      yield* Effect.sleep("50 millis")
      const refused = yield* Effect.either(enqueue([record("x", "one more")]))
      expect(Either.isLeft(refused) && refused.left._tag).toBe("StreamFull")
      expect((yield* Fiber.join(first)).length).toBe(5)
      // Once drained, the queue takes appends again.
      expect(yield* enqueue([record("x", "one more")])).toHaveLength(1)
    }),
  )

  it.live("answers every accepted append before its scope closes", () =>
    Effect.gen(function* () {
      const stream = scripted("200 millis")
      const sending = yield* Deferred.make<void>()
      const send: PutSender = (records) =>
        Effect.zipRight(Deferred.succeed(sending, undefined), stream.send(records))
      const pending = yield* Effect.scoped(
        Effect.gen(function* () {
          const enqueue = yield* groupCommit(send, fast)
          const fiber = yield* Effect.forkDaemon(enqueue([record("k", "in flight")]))
          yield* Deferred.await(sending)
          return fiber
        }),
      )
      const exit = yield* Effect.timeout(Fiber.await(pending), "5 seconds").pipe(Effect.option)
      expect(Option.isSome(exit) && Exit.isSuccess(exit.value)).toBe(true)
      expect(stream.log).toEqual(["in flight"])
    }),
  )
})
