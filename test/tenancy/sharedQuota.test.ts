/**
 * Quotas shared by the ingress workers of one machine: one bucket per tenant in the data dir,
 * leased in chunks. In-process tests drive a fake clock through several instances on one file
 * (each instance is what one worker holds); the last test runs real worker processes.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { Effect, Logger } from "effect"
import * as SharedQuota from "../../src/tenancy/SharedQuota.js"

const worker = fileURLToPath(new URL("./fixtures/quota-worker.ts", import.meta.url))
const freshDir = () => mkdtempSync(join(tmpdir(), "sluice-quota-"))

/** The tenant's balance as the file holds it (what no worker has leased). */
const tokensInFile = (dataDir: string, tenantId: string) => {
  const db = new Database(join(dataDir, "quotas.sqlite"), { readonly: true })
  try {
    return db
      .prepare<[string], { tokens: number }>("SELECT tokens FROM buckets WHERE tenant = ?")
      .get(tenantId)?.tokens
  } finally {
    db.close()
  }
}

describe("shared ingest quotas, one process", () => {
  it.scopedLive("one worker gets rate × seconds + the burst, leasing 50 ms at a time", () =>
    Effect.gen(function* () {
      const dir = freshDir()
      let now = 0
      const quotas = yield* SharedQuota.make(dir, (t) => (t === "acme" ? 1000 : undefined), {
        now: () => now,
      })
      expect(quotas.reserve("acme", 0)).toEqual({ granted: true, waitMs: 0 })
      // One message, one lease of 50: the other 49 are spent from memory.
      expect(tokensInFile(dir, "acme")).toBeCloseTo(950)
      let granted = 1
      for (; now <= 3000; now++) while (quotas.reserve("acme", 0).granted) granted++
      expect(granted).toBeGreaterThanOrEqual(3999)
      expect(granted).toBeLessThanOrEqual(4001)
      // A tenant without a quota never reaches the file.
      for (let i = 0; i < 1000; i++) expect(quotas.reserve("free", 0)).toEqual({ granted: true, waitMs: 0 })
      expect(tokensInFile(dir, "free")).toBeUndefined()
    }),
  )

  it.scopedLive("two workers share one bucket; either alone gets all of it", () =>
    Effect.gen(function* () {
      const dir = freshDir()
      let now = 0
      const rate = (t: string) => (t === "acme" ? 1000 : t === "globex" ? 100 : undefined)
      const a = yield* SharedQuota.make(dir, rate, { now: () => now })
      const b = yield* SharedQuota.make(dir, rate, { now: () => now })
      let byA = 0
      let byB = 0
      for (; now <= 3000; now++) {
        // Whoever asks first gets the token of the millisecond: take turns at being first.
        for (let more = true; more; ) {
          const x = now % 2 === 0 && a.reserve("acme", 0).granted
          const y = b.reserve("acme", 0).granted
          const z = now % 2 === 1 && a.reserve("acme", 0).granted
          byA += Number(x) + Number(z)
          byB += Number(y)
          more = x || y || z
        }
      }
      // Not twice the quota: rate × 3 s + 1 s burst, plus at most one unspent chunk per worker.
      expect(byA + byB).toBeGreaterThanOrEqual(3999)
      expect(byA + byB).toBeLessThanOrEqual(4000 + 2 * 50)
      expect(Math.min(byA, byB)).toBeGreaterThan(1500)
      // B's devices go quiet: A alone gets the whole rate.
      let alone = 0
      for (; now <= 4000; now++) while (a.reserve("acme", 0).granted) alone++
      expect(alone).toBeGreaterThanOrEqual(999)
      expect(alone).toBeLessThanOrEqual(1000 + 50)
      // Another tenant's bucket is its own.
      let globex = 0
      while (b.reserve("globex", 0).granted) globex++
      expect(globex).toBe(100)
    }),
  )

  it.scopedLive("waiting reservations queue behind each other across workers", () =>
    Effect.gen(function* () {
      const dir = freshDir()
      let now = 0
      const rate = (t: string) => (t === "slow" ? 10 : t === "fast" ? 1000 : undefined)
      const a = yield* SharedQuota.make(dir, rate, { now: () => now })
      const b = yield* SharedQuota.make(dir, rate, { now: () => now })
      // 10/s leases one token at a time: exactly the in-memory bucket's answers, across workers.
      for (let i = 0; i < 10; i++) expect((i % 2 === 0 ? a : b).reserve("slow", 0).granted).toBe(true)
      expect(a.reserve("slow", 1000)).toEqual({ granted: true, waitMs: 100 })
      expect(b.reserve("slow", 1000)).toEqual({ granted: true, waitMs: 200 })
      expect(a.reserve("slow", 1000)).toEqual({ granted: true, waitMs: 300 })
      // Refused from memory: a worker knows the file's balance as of its own last lease, a lower
      // bound (b: 300 ms) — asking the file only when that bound could let the caller through.
      expect(a.reserve("slow", 0)).toEqual({ granted: false, waitMs: 400 })
      expect(b.reserve("slow", 0)).toEqual({ granted: false, waitMs: 300 })
      expect(b.reserve("slow", 350)).toEqual({ granted: false, waitMs: 400 })
      expect(b.reserve("slow", 0)).toEqual({ granted: false, waitMs: 400 })
      now = 1000
      // The three queued are paid off; 7 of the 10 refilled tokens are left.
      let granted = 0
      while (a.reserve("slow", 0).granted || b.reserve("slow", 0).granted) granted++
      expect(granted).toBe(7)

      // 1,000/s: a lease in deficit takes up to 50 tokens due 1, 2, ... ms later; another worker's
      // waiting caller queues behind that chunk (the bounded unfairness), nobody is lost.
      while (a.reserve("fast", 0).granted) {}
      expect(a.reserve("fast", 1000)).toEqual({ granted: true, waitMs: 1 })
      expect(b.reserve("fast", 1000)).toEqual({ granted: true, waitMs: 51 })
      expect(a.reserve("fast", 1000)).toEqual({ granted: true, waitMs: 2 })
      expect(b.reserve("fast", 10)).toEqual({ granted: false, waitMs: 52 })
    }),
  )

  it.scopedLive(
    "a failing file: refusals still come from memory, then each worker enforces alone, then back",
    () => {
      const logs: Array<string> = []
      const capture = Logger.replace(
        Logger.defaultLogger,
        Logger.make(({ logLevel, message }) =>
          logs.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`),
        ),
      )
      return Effect.gen(function* () {
        const dir = freshDir()
        let now = 0
        const quotas = yield* SharedQuota.make(dir, (t) => (t === "acme" ? 10 : undefined), {
          now: () => now,
        }).pipe(Effect.provide(capture))
        for (let i = 0; i < 10; i++) expect(quotas.reserve("acme", 0).granted).toBe(true)
        expect(quotas.reserve("acme", 0)).toEqual({ granted: false, waitMs: 100 })
        // Another process holds the write lock.
        const locker = new Database(join(dir, "quotas.sqlite"))
        locker.exec("BEGIN IMMEDIATE")
        for (let i = 0; i < 1000; i++) expect(quotas.reserve("acme", 0).granted).toBe(false)
        yield* Effect.sleep(20)
        expect(logs).toEqual([])
        now = 1000
        const started = performance.now()
        let granted = 0
        for (let i = 0; i < 1000; i++) granted += Number(quotas.reserve("acme", 0).granted)
        // Bounded (its own bucket at the full rate), and not a lock wait per message.
        expect(granted).toBe(10)
        expect(performance.now() - started).toBeLessThan(500)
        yield* Effect.sleep(20)
        expect(logs).toHaveLength(1)
        expect(logs[0]).toMatch(/^WARN quotas\.sqlite failed .*one quota per worker/)
        locker.exec("ROLLBACK")
        locker.close()
        now = 3000
        expect(quotas.reserve("acme", 0).granted).toBe(true)
        yield* Effect.sleep(20)
        expect(logs[1]).toMatch(/^INFO quotas\.sqlite is back/)
        expect(tokensInFile(dir, "acme")).toBeLessThan(10)
      })
    },
  )
})

interface WorkerResult {
  readonly tenantId: string
  readonly granted: number
  readonly calls: number
  readonly lateMs: number
}

/** Starts a worker process; resolves its result line once told to go. */
const startWorker = (dataDir: string, tenantId: string, rate: number) => {
  const child: ChildProcess = spawn(
    process.execPath,
    ["--import", "tsx", worker, dataDir, tenantId, String(rate)],
    {
      stdio: ["pipe", "pipe", "inherit"],
    },
  )
  let buffered = ""
  let onReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => {
    onReady = resolve
  })
  const result = new Promise<WorkerResult>((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8")
      const lines = buffered.split("\n")
      buffered = lines.pop()!
      for (const line of lines) {
        if (line === "ready") onReady()
        // Only the result is JSON; anything else is the worker's log.
        else if (line.startsWith("{")) resolve(JSON.parse(line) as WorkerResult)
      }
    })
    child.on("error", reject)
    child.on("exit", (code) => reject(new Error(`quota worker exited with ${code} before answering`)))
  })
  const go = (startAt: number, durationMs: number) => child.stdin!.write(`go ${startAt} ${durationMs}\n`)
  return { child, ready, result, go }
}

describe("shared ingest quotas, several processes", () => {
  it("three workers together get one quota; a tenant on a fourth gets its own", {
    timeout: 20_000,
  }, async () => {
    const dir = freshDir()
    const rate = 2000
    const seconds = 3
    const workers = [
      startWorker(dir, "acme", rate),
      startWorker(dir, "acme", rate),
      startWorker(dir, "acme", rate),
      startWorker(dir, "globex", rate),
    ]
    try {
      await Promise.all(workers.map((w) => w.ready))
      const startAt = Date.now() + 300
      for (const w of workers) w.go(startAt, seconds * 1000)
      const results = await Promise.all(workers.map((w) => w.result))
      const acme = results.filter((r) => r.tenantId === "acme").reduce((n, r) => n + r.granted, 0)
      const globex = results.find((r) => r.tenantId === "globex")!.granted
      const quota = rate * seconds + rate
      const chunk = rate * 0.05
      // Never three quotas: at most one unspent chunk per worker above one bucket.
      expect(acme).toBeLessThanOrEqual(quota + 3 * chunk)
      // ...and the whole of one (some slack for processes descheduled on a busy box).
      expect(acme).toBeGreaterThanOrEqual(quota * 0.85)
      expect(globex).toBeLessThanOrEqual(quota + chunk)
      expect(globex).toBeGreaterThanOrEqual(quota * 0.85)
      // They did hammer: refusals far outnumber grants, and cost no transactions.
      for (const r of results) expect(r.calls).toBeGreaterThan(r.granted)
    } finally {
      for (const w of workers) w.child.kill()
    }
  })
})
