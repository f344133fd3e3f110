/**
 * Two connections to one embedded log, as two processes would have: each sees the other's
 * appends (positions, lag), numbers records on from the other's, reclaims by the lease
 * checkpoints of a third, and both answer to one disk budget. The multi-process test does the
 * same with real processes and kills.
 */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { Effect, Either } from "effect"
import { BUSY_TIMEOUT_MS } from "../../src/stream/SqliteShards.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { Position } from "../../src/stream/StreamLog.js"
import { application } from "./applications.js"
import { readN } from "./contract.js"

const fresh = () => mkdtempSync(join(tmpdir(), "sluice-shared-"))
const record = (partitionKey: string, size: number, fill = 7) => ({
  partitionKey,
  data: new Uint8Array(size).fill(fill),
})

describe("embedded log, two connections", () => {
  it.scopedLive("a connection that never appends sees the other's records", () =>
    Effect.gen(function* () {
      const settings = SqliteStreamLog.defaults(fresh())
      const ingress = yield* SqliteStreamLog.make(settings)
      const processor = yield* SqliteStreamLog.make(settings)
      const shardId = (yield* ingress.append([record("k", 10)]))[0]!.shardId
      const latest = yield* processor.reader(shardId, Position.Latest())
      const acks = yield* ingress.append(Array.from({ length: 3 }, (_, i) => record("k", 10, i)))
      const last = acks[2]!.sequenceNumber
      // Positions at sequence numbers only the other connection has written.
      const at = yield* processor.reader(shardId, Position.AtSequence({ sequenceNumber: last }))
      expect((yield* readN(at, 1)).map((r) => r.sequenceNumber)).toEqual([last])
      const after = yield* processor.reader(
        shardId,
        Position.AfterSequence({ sequenceNumber: acks[0]!.sequenceNumber }),
      )
      expect((yield* readN(after, 2)).map((r) => r.sequenceNumber)).toEqual([acks[1]!.sequenceNumber, last])
      expect((yield* readN(latest, 3)).map((r) => r.sequenceNumber)).toEqual(
        acks.map((a) => a.sequenceNumber),
      )
      // Lag counts from the shard's newest record, appended by the other connection later.
      const fromStart = yield* processor.reader(shardId, Position.TrimHorizon())
      yield* Effect.sleep("30 millis")
      yield* ingress.append([record("k", 10)])
      const first = yield* fromStart.pull({ maxRecords: 1, maxBytes: 1024 })
      expect(first.behindLatestMs).toBeGreaterThanOrEqual(25)
      // Past what either has written: refused, not read from later.
      const pastEnd = (BigInt(last) + 100n).toString()
      const refused = yield* Effect.either(
        processor.reader(shardId, Position.AfterSequence({ sequenceNumber: pastEnd })),
      )
      expect(Either.isLeft(refused) && refused.left._tag).toBe("PositionPastEnd")
    }),
  )

  it.scopedLive(
    "at a budget filled by the other, reclaims, and numbers on after a trim emptied the shard",
    () =>
      Effect.gen(function* () {
        const dataDir = fresh()
        const settings = { ...SqliteStreamLog.defaults(dataDir), maxBytes: 10_000 }
        const a = yield* SqliteStreamLog.make(settings)
        const b = yield* SqliteStreamLog.make(settings)
        const processor = yield* application(dataDir, "processor", yield* a.listShards)
        const first = yield* a.append([record("k", 1000)])
        const second = yield* b.append([record("k", 1000)])
        const rest = yield* a.append(Array.from({ length: 6 }, () => record("k", 1000)))
        const seqs = [first[0]!, second[0]!, ...rest].map((ack) => BigInt(ack.sequenceNumber))
        expect(seqs.every((seq, i) => i === 0 || seq > seqs[i - 1]!)).toBe(true)
        // The processor application is done with all of it. b last saw 2 KB retained, the database
        // holds 8 KB: its commit is refused by the database's count, reclaims, and goes through.
        yield* processor.processed(first[0]!.shardId, rest[5]!.sequenceNumber)
        const after = yield* b.append([record("k", 3000)])
        // The shard was emptied by the reclaim; numbering goes on from its high-water mark.
        expect(BigInt(after[0]!.sequenceNumber)).toBeGreaterThan(seqs.at(-1)!)
        const reader = yield* a.reader(first[0]!.shardId, Position.TrimHorizon())
        expect((yield* readN(reader, 1)).map((r) => r.sequenceNumber)).toEqual([after[0]!.sequenceNumber])
      }),
  )

  it.scopedLive("holds one disk budget for both", () =>
    Effect.gen(function* () {
      const settings = { ...SqliteStreamLog.defaults(fresh()), maxBytes: 10_000 }
      const a = yield* SqliteStreamLog.make(settings)
      const b = yield* SqliteStreamLog.make(settings)
      yield* a.append(Array.from({ length: 9 }, () => record("d", 1000)))
      // b has appended nothing itself; the budget is the database's, not b's.
      const full = yield* Effect.either(b.append([record("e", 2000)]))
      expect(Either.isLeft(full) && full.left._tag).toBe("StreamFull")
      expect(Either.isRight(yield* Effect.either(b.append([record("e", 900)])))).toBe(true)
      const again = yield* Effect.either(a.append([record("d", 200)]))
      expect(Either.isLeft(again) && again.left._tag).toBe("StreamFull")
    }),
  )

  it.scopedLive(
    "answers StreamUnavailable, not a crash, when another holds the write lock past the busy timeout",
    () =>
      Effect.gen(function* () {
        const dataDir = fresh()
        const log = yield* SqliteStreamLog.make(SqliteStreamLog.defaults(dataDir))
        // Past the first retention round, which would wait for the lock as well.
        yield* Effect.sleep("100 millis")
        const other = new Database(join(dataDir, "stream.sqlite"))
        other.exec("BEGIN IMMEDIATE")
        const started = Date.now()
        const blocked = yield* Effect.either(log.append([record("k", 10)]))
        expect(Either.isLeft(blocked) && blocked.left._tag).toBe("StreamUnavailable")
        expect(Date.now() - started).toBeGreaterThanOrEqual(BUSY_TIMEOUT_MS - 100)
        other.exec("ROLLBACK")
        other.close()
        expect(Either.isRight(yield* Effect.either(log.append([record("k", 10)])))).toBe(true)
      }),
    { timeout: BUSY_TIMEOUT_MS + 10_000 },
  )
})
