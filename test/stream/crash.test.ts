/**
 * Crash safety of the embedded log: a separate process appends under load and is killed with
 * SIGKILL at random moments; after each kill every acknowledged append must read back in order,
 * byte for byte, and the database must pass SQLite's integrity check.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import Database from "better-sqlite3"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { Position, StreamLog, type StreamRecord } from "../../src/stream/StreamLog.js"
import { crashPayload } from "./fixtures/crash-payload.js"

const writer = fileURLToPath(new URL("./fixtures/crash-writer.ts", import.meta.url))
const ROUNDS = 20
const APPENDERS = 16

interface Ack {
  readonly appender: number
  readonly index: number
  readonly shardId: string
  readonly sequenceNumber: string
}

/** Runs one writer until a random moment after it starts acknowledging, then SIGKILLs it. */
const runAndKill = (dataDir: string, round: number): Promise<ReadonlyArray<Ack>> =>
  new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(
      process.execPath,
      ["--import", "tsx", writer, dataDir, String(round), String(APPENDERS)],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    )
    const acks: Array<Ack> = []
    let buffered = ""
    let killTimer: NodeJS.Timeout | undefined
    child.stdout!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8")
      const lines = buffered.split("\n")
      buffered = lines.pop()!
      for (const line of lines) {
        if (line === "ready") {
          killTimer = setTimeout(() => child.kill("SIGKILL"), 50 + Math.floor(Math.random() * 400))
          continue
        }
        const [a, i, shardId, seq] = line.split(" ")
        acks.push({ appender: Number(a), index: Number(i), shardId: shardId!, sequenceNumber: seq! })
      }
    })
    child.on("error", reject)
    child.on("exit", (code, signal) => {
      clearTimeout(killTimer)
      if (signal !== "SIGKILL") reject(new Error(`writer exited on its own: code ${code}, signal ${signal}`))
      else resolve(acks)
    })
  })

const readEverything = (dataDir: string) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const log = yield* StreamLog
        const bySeq = new Map<string, StreamRecord>()
        for (const shard of yield* log.listShards) {
          const reader = yield* log.reader(shard.shardId, Position.TrimHorizon())
          for (;;) {
            const batch = yield* reader.pull({ maxRecords: 5000, maxBytes: 8 * 1024 * 1024 })
            if (batch.records.length === 0) break
            for (const r of batch.records) bySeq.set(`${r.shardId}/${r.sequenceNumber}`, r)
          }
        }
        return bySeq
      }).pipe(Effect.provide(SqliteStreamLog.layerWith(SqliteStreamLog.defaults(dataDir)))),
    ),
  )

describe("embedded log under SIGKILL", () => {
  it(`keeps every acknowledged append across ${ROUNDS} kills`, { timeout: 300_000 }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "sluice-crash-"))
    const acked: Array<Ack & { round: number }> = []
    for (let round = 0; round < ROUNDS; round++) {
      const acks = await runAndKill(dataDir, round)
      acked.push(...acks.map((a) => ({ ...a, round })))

      const db = new Database(join(dataDir, "stream.sqlite"))
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok")
      db.close()

      const stored = await readEverything(dataDir)
      // Plain checks collected per round: a million expect() calls would dominate the run.
      const lost = acked.filter((ack) => {
        const record = stored.get(`${ack.shardId}/${ack.sequenceNumber}`)
        return (
          record === undefined ||
          record.partitionKey !== `r${ack.round}-a${ack.appender}` ||
          !Buffer.from(record.data).equals(crashPayload(ack.round, ack.appender, ack.index))
        )
      })
      expect(lost, `round ${round}: acknowledged records lost or altered`).toEqual([])
      // Order and no garbage: this round's records of each appender read back as 0, 1, 2, ...
      const mine = [...stored.values()]
        .filter((r) => r.partitionKey.startsWith(`r${round}-`))
        .sort((x, y) => Number(x.sequenceNumber) - Number(y.sequenceNumber))
      const next = new Map<string, number>()
      const disorder = mine.filter((r) => {
        const index = next.get(r.partitionKey) ?? 0
        next.set(r.partitionKey, index + 1)
        const appender = Number(r.partitionKey.split("-a")[1])
        return !Buffer.from(r.data).equals(crashPayload(round, appender, index))
      })
      expect(
        disorder.map((r) => r.sequenceNumber),
        `round ${round}: out of order or corrupt`,
      ).toEqual([])
    }
    // The kills landed mid-load: a meaningful number of acks were checked.
    expect(acked.length).toBeGreaterThan(ROUNDS * 50)
  })
})
