/**
 * The embedded log shared by several processes: three writer processes append to one data
 * directory at once (overlapping partition keys, so they interleave within shards), one of them
 * is SIGKILLed mid-load again and again and restarted, and a reader in this process — its own
 * connection, like the processor — pulls everything and checkpoints along in its shard leases
 * while every process runs retention (bounded by those checkpoints) and presses on a small disk
 * budget.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import Database from "better-sqlite3"
import { Effect, ManagedRuntime } from "effect"
import { describe, expect, it } from "vitest"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { Position, StreamLog, type StreamRecord } from "../../src/stream/StreamLog.js"
import { application } from "./applications.js"
import { multiPayload, originOf } from "./fixtures/multi-payload.js"

const writerScript = fileURLToPath(new URL("./fixtures/multi-writer.ts", import.meta.url))
const WRITERS = 3
const APPENDERS = 6
const KILLS = 5
const MAX_BYTES = 256 * 1024

interface Ack {
  readonly writer: number
  readonly generation: number
  readonly appender: number
  readonly index: number
  readonly shardId: string
  readonly sequenceNumber: string
}

interface Writer {
  readonly exited: Promise<void>
  readonly ready: Promise<void>
  readonly kill: () => void
}

const startWriter = (
  dataDir: string,
  writer: number,
  generation: number,
  startAt: number,
  acks: Array<Ack>,
  failures: Array<string>,
): Writer => {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      writerScript,
      dataDir,
      String(writer),
      String(generation),
      String(APPENDERS),
      String(startAt),
      String(MAX_BYTES),
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  )
  let onReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => {
    onReady = resolve
  })
  let buffered = ""
  child.stdout!.on("data", (chunk: Buffer) => {
    buffered += chunk.toString("utf8")
    const lines = buffered.split("\n")
    buffered = lines.pop()!
    for (const line of lines) {
      if (line === "ready") onReady()
      else if (line === "full") continue
      else if (line.startsWith("failed")) failures.push(`writer ${writer}.${generation}: ${line}`)
      else {
        // Anything else on stdout (the writer's own log lines) is not an ack.
        const match = /^(\d+) (\d+) (shardId-\d{12}) (\d+)$/.exec(line)
        if (match === null) continue
        const [, a, i, shardId, seq] = match
        acks.push({
          writer,
          generation,
          appender: Number(a),
          index: Number(i),
          shardId: shardId!,
          sequenceNumber: seq!,
        })
      }
    }
  })
  const exited = new Promise<void>((resolve, reject) => {
    child.on("error", reject)
    // "close", not "exit": acks still in the pipe when the process died are read first.
    child.on("close", (code, signal) => {
      if (signal === "SIGKILL") resolve()
      else reject(new Error(`writer ${writer} exited on its own: code ${code}, signal ${signal}`))
    })
  })
  return { exited, ready, kill: () => child.kill("SIGKILL") }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe("embedded log shared by several processes", () => {
  it("keeps every acknowledged append, in order, under concurrent writers and kills", {
    timeout: 60_000,
  }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "sluice-multi-"))
    const acks: Array<Ack> = []
    const failures: Array<string> = []
    const config = {
      ...SqliteStreamLog.defaults(dataDir),
      retentionMs: 500,
      trimIntervalMs: 100,
      maxBytes: MAX_BYTES,
    }

    // Every writer and the reader open the fresh directory at the same moment.
    const startAt = Date.now() + 2500
    const writers = Array.from({ length: WRITERS }, (_, w) =>
      startWriter(dataDir, w, 0, startAt, acks, failures),
    )
    await sleep(startAt - Date.now())
    const reader = ManagedRuntime.make(SqliteStreamLog.layerWith(config))
    const probe = ManagedRuntime.make(SqliteStreamLog.layerWith(config))
    await reader.runtime()
    await Promise.all(writers.map((w) => w.ready))

    // The reader: pulls every shard from its lease's checkpoint and checkpoints the lease after
    // each pull, as a processor's shard worker does (the writers created the leases).
    let stopping = false
    const seen = new Map<string, StreamRecord>()
    const disorder: Array<string> = []
    const readAll = Effect.scoped(
      Effect.gen(function* () {
        const log = yield* StreamLog
        const app = yield* application(dataDir, "reader", yield* log.listShards)
        const readers = yield* Effect.forEach(yield* log.listShards, (s) =>
          Effect.flatMap(app.startPosition(s.shardId), (p) => log.reader(s.shardId, p)),
        )
        const last = new Map<string, StreamRecord>()
        for (;;) {
          const finishing = stopping
          let got = 0
          for (const shard of readers) {
            const batch = yield* shard.pull({ maxRecords: 2000, maxBytes: 1024 * 1024 })
            for (const r of batch.records) {
              const key = `${r.shardId}/${r.sequenceNumber}`
              const before = last.get(r.shardId)
              if (seen.has(key)) disorder.push(`${key} read twice`)
              if (before !== undefined && BigInt(before.sequenceNumber) >= BigInt(r.sequenceNumber))
                disorder.push(`${key} after ${before.sequenceNumber}`)
              if (before !== undefined && before.arrivedAt > r.arrivedAt)
                disorder.push(`${key} arrived ${r.arrivedAt} before ${before.arrivedAt}`)
              seen.set(key, r)
              last.set(r.shardId, r)
            }
            got += batch.records.length
            // Retention and budget reclaims in every process now may free what was read.
            const newest = batch.records.at(-1)
            if (newest !== undefined) yield* app.processed(shard.shardId, newest.sequenceNumber)
          }
          if (finishing && got === 0) return
          if (got === 0) yield* Effect.sleep("20 millis")
        }
      }),
    )
    const reading = reader.runPromise(readAll)

    // A third connection that never appends nor pulls far: positions at sequence numbers other
    // processes have just acknowledged must be accepted, not refused as past the end.
    let probes = 0
    const probeLatest = async () => {
      const ack = acks.at(-1)
      if (ack === undefined) return
      const first = await probe.runPromise(
        Effect.scoped(
          Effect.flatMap(StreamLog, (log) =>
            Effect.flatMap(
              log.reader(ack.shardId, Position.AtSequence({ sequenceNumber: ack.sequenceNumber })),
              (r) => r.pull({ maxRecords: 1, maxBytes: 1024 }),
            ),
          ),
        ),
      )
      // Not refused as past the end; the record itself, unless a budget reclaim took it already.
      expect(first.records.every((r) => BigInt(r.sequenceNumber) >= BigInt(ack.sequenceNumber))).toBe(true)
      probes++
    }

    // Writer 0 dies mid-load again and again, and comes back as a new generation.
    let victim = writers[0]!
    // Each generation is killed only once it has acknowledged something (bounded): on a loaded
    // machine a fixed sleep after `ready` could kill one before its first commit.
    const acknowledged = async (generation: number) => {
      const deadline = Date.now() + 20_000
      while (Date.now() < deadline && !acks.some((a) => a.writer === 0 && a.generation === generation)) {
        await sleep(20)
      }
    }
    for (let generation = 1; generation <= KILLS; generation++) {
      await victim.ready
      await acknowledged(generation - 1)
      await sleep(150 + Math.floor(Math.random() * 350))
      await probeLatest()
      victim.kill()
      await victim.exited
      victim = startWriter(dataDir, 0, generation, 0, acks, failures)
    }
    await victim.ready
    await sleep(300)
    for (const w of [victim, writers[1]!, writers[2]!]) w.kill()
    await Promise.all([victim.exited, writers[1]!.exited, writers[2]!.exited])
    stopping = true
    await reading

    expect(failures).toEqual([])
    expect(disorder).toEqual([])
    expect(probes).toBe(KILLS)

    const db = new Database(join(dataDir, "stream.sqlite"))
    expect(db.pragma("integrity_check", { simple: true })).toBe("ok")
    // The shared budget count is exactly the bytes of the records left, and within the budget.
    const tables = db
      .prepare("SELECT name FROM sqlite_schema WHERE name LIKE 'shard\\_%' ESCAPE '\\'")
      .all() as Array<{ name: string }>
    const bytesOf = (table: string) =>
      db.prepare(`SELECT coalesce(sum(length(data) + length(CAST(pkey AS BLOB))), 0) FROM ${table}`).pluck()
    const stored = tables.reduce((sum, t) => sum + (bytesOf(t.name).get() as number), 0)
    const counted = db.prepare("SELECT retained_bytes FROM budget").pluck().get()
    db.close()
    expect(counted).toBe(stored)
    expect(counted).toBeLessThanOrEqual(MAX_BYTES)

    // Every acknowledged record, byte for byte where it was acknowledged.
    const lost = acks.filter((ack) => {
      const r = seen.get(`${ack.shardId}/${ack.sequenceNumber}`)
      return (
        r === undefined ||
        r.partitionKey !== `key-${ack.appender}` ||
        !Buffer.from(r.data).equals(multiPayload(ack.writer, ack.generation, ack.appender, ack.index))
      )
    })
    expect(lost.slice(0, 5), `${lost.length} acknowledged records lost or altered`).toEqual([])

    // Exactly once, and per key each writer's records in its order: generation by generation,
    // indexes 0, 1, 2, ... (a killed writer may have committed a few it never acknowledged).
    const acked = new Map<string, number>()
    for (const ack of acks) {
      const id = `${ack.writer}/${ack.appender}/${ack.generation}`
      acked.set(id, Math.max(acked.get(id) ?? 0, ack.index + 1))
    }
    const next = new Map<string, { generation: number; index: number }>()
    const wrong: Array<string> = []
    const bySeq = [...seen.values()].sort((x, y) =>
      x.shardId === y.shardId
        ? Number(BigInt(x.sequenceNumber) - BigInt(y.sequenceNumber))
        : x.shardId < y.shardId
          ? -1
          : 1,
    )
    for (const r of bySeq) {
      const origin = originOf(r.data)
      if (origin === undefined || r.partitionKey !== `key-${origin.appender}`) {
        wrong.push(`${r.shardId}/${r.sequenceNumber}: not a writer's record`)
        continue
      }
      const stream = `${origin.writer}/${origin.appender}`
      const at = next.get(stream) ?? { generation: origin.generation, index: 0 }
      const expected =
        origin.generation === at.generation
          ? at
          : origin.generation > at.generation
            ? { generation: origin.generation, index: 0 }
            : undefined
      if (expected === undefined || origin.index !== expected.index) {
        wrong.push(
          `${r.shardId}/${r.sequenceNumber}: ${stream} g${origin.generation} i${origin.index}, expected ${JSON.stringify(expected ?? at)}`,
        )
      }
      if (origin.generation > at.generation && at.index < (acked.get(`${stream}/${at.generation}`) ?? 0)) {
        wrong.push(
          `${stream} g${at.generation}: stopped at ${at.index}, acknowledged ${acked.get(`${stream}/${at.generation}`)}`,
        )
      }
      next.set(stream, { generation: origin.generation, index: origin.index + 1 })
    }
    expect(wrong.slice(0, 5), `${wrong.length} records out of order, duplicated or foreign`).toEqual([])

    // A connection that pulled next to none of it opens a reader after the newest acknowledged
    // sequence number of each shard: it asks the database, not its memory, so it is not refused
    // as past the end. (A killed writer may have committed a few records it never acknowledged.)
    const newestAck = new Map<string, string>()
    for (const ack of acks) {
      const before = newestAck.get(ack.shardId)
      if (before === undefined || BigInt(before) < BigInt(ack.sequenceNumber))
        newestAck.set(ack.shardId, ack.sequenceNumber)
    }
    const afterNewest = await probe.runPromise(
      Effect.flatMap(StreamLog, (log) =>
        Effect.forEach(newestAck, ([shardId, seq]) =>
          Effect.scoped(
            Effect.flatMap(log.reader(shardId, Position.AfterSequence({ sequenceNumber: seq })), (r) =>
              Effect.map(r.pull(), (batch) =>
                batch.records.every((x) => BigInt(x.sequenceNumber) > BigInt(seq)),
              ),
            ),
          ),
        ),
      ),
    )
    expect(afterNewest).toEqual([...newestAck.keys()].map(() => true))
    await Promise.all([reader.dispose(), probe.dispose()])
    // The kills landed mid-load: a meaningful number of acknowledged records was checked.
    expect(acks.length).toBeGreaterThan(2000)
    expect(new Set(acks.map((a) => a.generation)).size).toBe(KILLS + 1)
  })
})
