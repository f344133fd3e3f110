/**
 * Stream tier benchmark (not a test): embedded-log append throughput for 200-byte records with
 * 1, 10 and 100 concurrent appenders, read throughput, the same 100 appenders spread over several
 * processes sharing the log (as ingress workers do), and in the same run the ceiling: raw
 * better-sqlite3 inserts of the same rows in one transaction.
 *
 *   npm run bench:stream [-- --seconds 5 --batch 1 --fsync true --processes 3]
 */
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import Database from "better-sqlite3"
import { Effect, Layer } from "effect"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { Position, StreamLog } from "../../src/stream/StreamLog.js"

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    batch: { type: "string", default: "1" },
    fsync: { type: "string", default: "true" },
    devices: { type: "string", default: "10000" },
    processes: { type: "string", default: "3" },
  },
})
const seconds = Number(values.seconds)
const batch = Number(values.batch)
const fsync = values.fsync === "true"
const devices = Number(values.devices)
const processes = Number(values.processes)
const RECORD_BYTES = 200
const payload = randomBytes(RECORD_BYTES)
const keys = Array.from({ length: devices }, (_, i) => `device-${i}`)

const fmt = (n: number) => Math.round(n).toLocaleString("en-US")
const line = (name: string, records: number, ms: number) =>
  console.log(
    `${name.padEnd(34)} ${fmt((records / ms) * 1000).padStart(10)} records/s  ${(((records / ms) * 1000 * RECORD_BYTES) / 1e6).toFixed(1).padStart(6)} MB/s  (${fmt(records)} in ${(ms / 1000).toFixed(1)} s)`,
  )

/** Appends for `seconds` from `appenders` fibers, each awaiting its own acks; returns records/s. */
const appendRun = (appenders: number) =>
  Effect.gen(function* () {
    const log = yield* StreamLog
    let done = 0
    const deadline = performance.now() + seconds * 1000
    const start = performance.now()
    yield* Effect.forEach(
      Array.from({ length: appenders }, (_, a) => a),
      (a) =>
        Effect.gen(function* () {
          let k = a
          while (performance.now() < deadline) {
            const records = Array.from({ length: batch }, () => ({
              partitionKey: keys[k++ % devices]!,
              data: payload,
            }))
            yield* log.append(records)
            done += batch
          }
        }),
      { concurrency: "unbounded", discard: true },
    )
    const ms = performance.now() - start
    line(`append, ${appenders} appender(s), batch ${batch}`, done, ms)
    return (done / ms) * 1000
  })

const readRun = Effect.gen(function* () {
  const log = yield* StreamLog
  const start = performance.now()
  let read = 0
  for (const shard of yield* log.listShards) {
    yield* Effect.scoped(
      Effect.gen(function* () {
        const reader = yield* log.reader(shard.shardId, Position.TrimHorizon())
        for (;;) {
          const got = yield* reader.pull({ maxRecords: 5000, maxBytes: 4 * 1024 * 1024 })
          if (got.records.length === 0) break
          read += got.records.length
        }
      }),
    )
  }
  line("read, 4 shards, pulls of 5000", read, performance.now() - start)
})

/** 100 appenders split over `processes` processes appending to one log at once; returns records/s. */
const multiProcessRun = async (dir: string) => {
  const writer = fileURLToPath(new URL("./writer.ts", import.meta.url))
  const each = Math.ceil(100 / processes)
  const startAt = Date.now() + 3000
  const results = await Promise.all(
    Array.from(
      { length: processes },
      () =>
        new Promise<{ records: number; ms: number }>((resolve, reject) => {
          const args = [dir, each, seconds, batch, fsync, startAt].map(String)
          const child = spawn(process.execPath, ["--import", "tsx", writer, ...args], {
            stdio: ["ignore", "pipe", "inherit"],
          })
          let out = ""
          child.stdout!.on("data", (chunk: Buffer) => {
            out += chunk.toString("utf8")
          })
          child.on("error", reject)
          child.on("close", (code) => {
            const [records, ms] = out.trim().split(" ").map(Number)
            if (code === 0 && records !== undefined && ms !== undefined) resolve({ records, ms })
            else reject(new Error(`bench writer exited with ${code}`))
          })
        }),
    ),
  )
  const records = results.reduce((sum, r) => sum + r.records, 0)
  const ms = Math.max(...results.map((r) => r.ms))
  line(`append, ${processes} processes x ${each}, batch ${batch}`, records, ms)
  return (records / ms) * 1000
}

/** The ceiling: the same rows through raw better-sqlite3 in one transaction, same pragmas. */
const ceiling = (count: number) => {
  const dir = mkdtempSync(join(tmpdir(), "sluice-bench-raw-"))
  const db = new Database(join(dir, "raw.sqlite"))
  db.pragma("journal_mode = WAL")
  db.pragma(`synchronous = ${fsync ? "FULL" : "NORMAL"}`)
  db.exec(
    "CREATE TABLE shard_0 (seq INTEGER PRIMARY KEY, pkey TEXT NOT NULL, data BLOB NOT NULL, arrived_at INTEGER NOT NULL)",
  )
  const insert = db.prepare("INSERT INTO shard_0 (seq, pkey, data, arrived_at) VALUES (?, ?, ?, ?)")
  const start = performance.now()
  db.transaction(() => {
    const now = Date.now()
    for (let i = 1; i <= count; i++) insert.run(i, keys[i % devices], payload, now)
  })()
  const ms = performance.now() - start
  db.close()
  rmSync(dir, { recursive: true, force: true })
  line("ceiling: raw better-sqlite3, 1 tx", count, ms)
  return (count / ms) * 1000
}

const main = Effect.gen(function* () {
  console.log(
    `machine: ${cpus().length} x ${cpus()[0]?.model ?? "?"}, node ${process.version}; fsync=${fsync}, ${RECORD_BYTES} B records, ${devices} partition keys`,
  )
  const results: Record<number, number> = {}
  for (const appenders of [1, 10, 100]) {
    const dir = mkdtempSync(join(tmpdir(), "sluice-bench-"))
    const config = { ...SqliteStreamLog.defaults(dir), fsync, maxBytes: 64 * 1024 ** 3 }
    results[appenders] = yield* Effect.provide(
      appenders === 100 ? Effect.zipLeft(appendRun(appenders), readRun) : appendRun(appenders),
      Layer.fresh(SqliteStreamLog.layerWith(config)),
    )
    rmSync(dir, { recursive: true, force: true })
  }
  if (processes > 1) {
    const dir = mkdtempSync(join(tmpdir(), "sluice-bench-"))
    yield* Effect.promise(() => multiProcessRun(dir))
    rmSync(dir, { recursive: true, force: true })
  }
  const raw = ceiling(500_000)
  console.log(`ratio, 100 appenders / ceiling: ${(results[100]! / raw).toFixed(2)}`)
})

Effect.runPromise(main).catch((error) => {
  console.error(error)
  process.exit(1)
})
