/**
 * Quotas shared by every ingress process through a DynamoDB table, against dynalite: one process
 * (a tenant's rate, a tenant without quota, tenants apart), three processes on one tenant, a
 * process whose clock is far off, and the table going away. Devices are simulated by a timer that
 * reserves a burst every millisecond and never waits (HTTP), so the event loop stays free for the
 * background leases as in an ingress process. Upper bounds are the documented bound; lower bounds
 * are loose, for busy machines.
 */
import { spawn } from "node:child_process"
import { fileURLToPath, pathToFileURL } from "node:url"
import { DynamoDBClient, GetItemCommand } from "@aws-sdk/client-dynamodb"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Logger, Redacted } from "effect"
import * as DynamoQuota from "../../src/tenancy/DynamoQuota.js"
import type { DynamoQuotaConfig } from "../../src/tenancy/QuotaConfig.js"
import { type DynamoEmulator, startDynalite } from "../support/emulators.js"

const moduleUrl = pathToFileURL(
  fileURLToPath(new URL("../../src/tenancy/DynamoQuota.ts", import.meta.url)),
).href
const root = fileURLToPath(new URL("../..", import.meta.url))

let tables = 0
const freshTable = () => `quotas-${process.pid}-${++tables}`

const configFor = (endpoint: string, table: string): DynamoQuotaConfig => ({
  table,
  endpoint,
  region: "us-east-1",
  accessKeyId: "AKIAEMULATOR00000000",
  secretAccessKey: Redacted.make("emulator-secret"),
})

/** The defaults: 40 ms of the rate in hand, 10 ms on credit. */
const chunkOf = (rate: number) => Math.max(1, Math.floor(rate * 0.04))
const creditOf = (rate: number) => Math.max(1, Math.floor(rate * 0.01))

interface Hammered {
  readonly granted: Record<string, number>
  readonly calls: number
  /** From the first reservation to the last, ms. */
  readonly elapsedMs: number
}

/**
 * Reserves each of `tenants` `perTick` times every millisecond (never waiting) for `durationMs`,
 * from `startAt` on; counts the grants.
 */
const hammer = (
  reserve: (tenantId: string) => boolean,
  tenants: ReadonlyArray<string>,
  durationMs: number,
  startAt = Date.now(),
  perTick = 20,
) =>
  new Promise<Hammered>((resolve) => {
    const granted: Record<string, number> = Object.fromEntries(tenants.map((t) => [t, 0]))
    let calls = 0
    let first = Number.NaN
    const tick = () => {
      const t = Date.now()
      if (Number.isNaN(first)) first = t
      if (t >= startAt + durationMs) return resolve({ granted, calls, elapsedMs: t - first })
      for (let i = 0; i < perTick; i++) {
        for (const tenantId of tenants) {
          calls++
          if (reserve(tenantId)) granted[tenantId]! += 1
        }
      }
      setTimeout(tick, 1)
    }
    setTimeout(tick, Math.max(0, startAt - Date.now()))
  })

/** At most `rate` × T + the burst + a chunk and a credit per process (one ms of rounding). */
const bound = (rate: number, elapsedMs: number, processes: number) =>
  Math.ceil((rate * (elapsedMs + 1)) / 1000) + rate + processes * (chunkOf(rate) + creditOf(rate))

const captureLogs = () => {
  const logs: Array<string> = []
  const layer = Logger.replace(
    Logger.defaultLogger,
    Logger.make(({ logLevel, message }) =>
      logs.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`),
    ),
  )
  return { logs, layer }
}

let dynalite: DynamoEmulator

beforeAll(async () => {
  dynalite = await startDynalite()
})

afterAll(async () => {
  await dynalite?.stop()
})

describe("DynamoDB ingest quotas, one process", () => {
  it.scopedLive("a tenant gets its rate, a tenant without quota everything, and tenants stay apart", () =>
    Effect.gen(function* () {
      const table = freshTable()
      const rates: Record<string, number> = { acme: 500, globex: 200 }
      const quotas = yield* DynamoQuota.make(configFor(dynalite.endpoint, table), (t) => rates[t])
      const result = yield* Effect.promise(() =>
        hammer((t) => quotas.reserve(t, 0).granted, ["acme", "globex", "free"], 2000),
      )
      const acme = result.granted.acme!
      const globex = result.granted.globex!
      expect(acme).toBeLessThanOrEqual(bound(500, result.elapsedMs, 1))
      expect(acme).toBeGreaterThanOrEqual(0.5 * 500 * 2)
      // Another tenant's bucket is its own: acme's flood did not eat into it.
      expect(globex).toBeLessThanOrEqual(bound(200, result.elapsedMs, 1))
      expect(globex).toBeGreaterThanOrEqual(0.5 * 200 * 2)
      // No quota: every call granted, and the table never asked.
      expect(result.granted.free).toBe(result.calls / 3)
      const client = new DynamoDBClient({
        endpoint: dynalite.endpoint,
        region: "us-east-1",
        credentials: { accessKeyId: "AKIAEMULATOR00000000", secretAccessKey: "emulator-secret" },
      })
      const item = (tenantId: string) =>
        Effect.promise(() =>
          client.send(new GetItemCommand({ TableName: table, Key: { tenant_id: { S: tenantId } } })),
        ).pipe(Effect.map((out) => out.Item))
      expect(yield* item("free")).toBeUndefined()
      expect(yield* item("acme")).toBeDefined()
      client.destroy()
      const stats = quotas.stats()
      expect(stats.fallbacks).toBe(0)
      // Leased in chunks: far fewer calls than grants.
      expect(stats.leases).toBeLessThan((acme + globex) / 5)
    }),
  )

  it.scopedLive(
    "a process whose clock is 30 s ahead takes DynamoDB's time, and starves nobody for 30 s",
    () =>
      Effect.gen(function* () {
        const config = configFor(dynalite.endpoint, freshTable())
        const rate = 500
        const rates = (t: string) => (t === "acme" ? rate : undefined)
        const ahead = yield* DynamoQuota.make(config, rates, { now: () => Date.now() + 30_000 })
        const right = yield* DynamoQuota.make(config, rates)
        // Corrected from the start-up call already: by 30 s, give or take DynamoDB's whole seconds.
        expect(ahead.stats().clockCorrectionMs).toBeLessThanOrEqual(-28_500)
        expect(ahead.stats().clockCorrectionMs).toBeGreaterThanOrEqual(-31_000)
        // The fast process has the tenant's devices for a second, then the right one.
        const first = yield* Effect.promise(() => hammer((t) => ahead.reserve(t, 0).granted, ["acme"], 1000))
        const then = yield* Effect.promise(() => hammer((t) => right.reserve(t, 0).granted, ["acme"], 1500))
        // Uncorrected, the fast process would have left tat 30 s ahead of the right one's clock,
        // refusing it everything for 30 s. Corrected, what is left of the skew (at most 1.1 s + a
        // round trip, less as calls narrow it) delays it a little, and adds at most one burst.
        expect(then.granted.acme).toBeGreaterThanOrEqual(0.3 * rate * 1.5)
        const total = first.granted.acme! + then.granted.acme!
        expect(total).toBeLessThanOrEqual(bound(rate, first.elapsedMs + then.elapsedMs, 2) + rate)
        expect(right.stats().fallbacks + ahead.stats().fallbacks).toBe(0)
      }),
  )
})

describe("DynamoDB ingest quotas, waiting callers", () => {
  it.scopedLive("waiting reservations queue behind each other across processes", () =>
    Effect.gen(function* () {
      const config = configFor(dynalite.endpoint, freshTable())
      // A frozen clock (so not DynamoDB's): only the leases move, each awaited below.
      let now = 1_800_000_000_000
      const rate = 10
      const rates = (t: string) => (t === "slow" ? rate : undefined)
      const options = { now: () => now, syncClock: false }
      const a = yield* DynamoQuota.make(config, rates, options)
      const b = yield* DynamoQuota.make(config, rates, options)
      const settled = Effect.gen(function* () {
        while (a.stats().inFlight + b.stats().inFlight > 0) yield* Effect.sleep(2)
      })
      // MQTT-like callers that may wait a second, on two processes taking turns.
      const waits: Array<number> = []
      for (let round = 0; round < 20; round++) {
        for (const quotas of [a, b]) {
          const reservation = quotas.reserve("slow", 1000)
          if (reservation.granted) waits.push(reservation.waitMs)
          else expect(reservation.waitMs).toBeGreaterThan(0)
          yield* settled
        }
      }
      // One bucket: the burst now, and the next second's tokens queued, ±a chunk and a credit each.
      const slack = 2 * (chunkOf(rate) + creditOf(rate))
      expect(waits.length).toBeGreaterThanOrEqual(2 * rate - slack)
      expect(waits.length).toBeLessThanOrEqual(2 * rate + slack)
      expect(Math.max(...waits)).toBeLessThanOrEqual(1000)
      // Queued, not bunched: the waiting ones are spread over the second.
      const waited = waits.filter((w) => w > 0)
      expect(waited.length).toBeGreaterThanOrEqual(rate - slack)
      expect(new Set(waited).size).toBeGreaterThanOrEqual(rate - slack)
      // A second later the queue has taken that second's tokens: an HTTP caller is refused...
      now += 1000
      let granted = 0
      for (const quotas of [a, b, a, b]) {
        granted += Number(quotas.reserve("slow", 0).granted)
        yield* settled
      }
      expect(granted).toBeLessThanOrEqual(slack)
      // ...and a second after that, the bucket has refilled.
      now += 1000
      granted = 0
      for (let round = 0; round < 20; round++) {
        for (const quotas of [a, b]) {
          granted += Number(quotas.reserve("slow", 0).granted)
          yield* settled
        }
      }
      expect(granted).toBeGreaterThanOrEqual(rate - slack)
      expect(granted).toBeLessThanOrEqual(rate + slack)
    }),
  )
})

describe("DynamoDB ingest quotas, when the table goes away", () => {
  it.scopedLive("each process falls back to its own bucket, bounded, and says so", () => {
    const { logs, layer } = captureLogs()
    return Effect.gen(function* () {
      const own = yield* Effect.acquireRelease(
        Effect.promise(() => startDynalite()),
        (emulator) => Effect.promise(() => emulator.stop()),
      )
      const rate = 500
      const quotas = yield* DynamoQuota.make(configFor(own.endpoint, freshTable()), (t) =>
        t === "acme" ? rate : undefined,
      ).pipe(Effect.provide(layer))
      const reserve = (t: string) => quotas.reserve(t, 0).granted
      const before = yield* Effect.promise(() => hammer(reserve, ["acme"], 500))
      expect(before.granted.acme).toBeGreaterThan(0)
      expect(quotas.stats().leases).toBeGreaterThan(0)
      yield* Effect.promise(() => own.stop())
      const during = yield* Effect.promise(() => hammer(reserve, ["acme"], 1500))
      // Neither open nor closed: the process's own bucket (its burst and rate), plus what it held.
      expect(during.granted.acme).toBeLessThanOrEqual(bound(rate, during.elapsedMs, 1) + rate)
      expect(during.granted.acme).toBeGreaterThanOrEqual(0.3 * rate * 1.5)
      expect(quotas.stats().fallbacks).toBe(1)
      const warnings = logs.filter((l) => l.startsWith("WARN"))
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toMatch(/^WARN quota table quotas-\S+ failed .*one quota per process/)
    })
  })
})

describe("DynamoDB ingest quotas, at start-up", () => {
  it.scopedLive("a table DynamoDB refuses fails the start; an unreachable one starts on the fallback", () => {
    const { logs, layer } = captureLogs()
    return Effect.gen(function* () {
      const rates = (t: string) => (t === "acme" ? 100 : undefined)
      // A name DynamoDB rejects (too short): a configuration error, said at once.
      const refused = yield* Effect.flip(DynamoQuota.make(configFor(dynalite.endpoint, "ab"), rates))
      expect(refused._tag).toBe("QuotaTableUnavailable")
      expect(refused.reason).toMatch(/^ab: ValidationException/)
      // Nothing listens there: ingress starts anyway, each process on its own buckets, and says so.
      const quotas = yield* DynamoQuota.make(configFor("http://127.0.0.1:9", freshTable()), rates).pipe(
        Effect.provide(layer),
      )
      expect(quotas.stats().fallbacks).toBe(1)
      let granted = 0
      for (let i = 0; i < 1000; i++) granted += Number(quotas.reserve("acme", 0).granted)
      expect(granted).toBeGreaterThanOrEqual(100)
      expect(granted).toBeLessThanOrEqual(105)
      yield* Effect.sleep(20)
      expect(logs.filter((l) => l.startsWith("WARN"))).toHaveLength(1)
    })
  })
})

/**
 * One ingress process of the multi-process test, as an inline ES module run by `node --import tsx`:
 * builds its quotas on the table, says `ready`, waits for `go <startAt> <durationMs>`, hammers one
 * tenant like `hammer` above, and prints its grants and stats as JSON.
 *
 * argv: endpoint table tenantId rate moduleUrl
 */
const WORKER = `
const [endpoint, table, tenantId, rateText, moduleUrl] = process.argv.slice(1)
const rate = Number(rateText)
const { Effect, Redacted } = await import("effect")
const { createInterface } = await import("node:readline")
const DynamoQuota = await import(moduleUrl)
const lines = createInterface({ input: process.stdin })
const go = new Promise((resolve) =>
  lines.once("line", (line) => {
    lines.close()
    const [, startAt, durationMs] = line.split(" ")
    resolve([Number(startAt), Number(durationMs)])
  }),
)
const hammer = (quotas, startAt, durationMs) =>
  new Promise((resolve) => {
    let granted = 0
    let calls = 0
    let first = Number.NaN
    const tick = () => {
      const t = Date.now()
      if (Number.isNaN(first)) first = t
      if (t >= startAt + durationMs) return resolve({ granted, calls, elapsedMs: t - first })
      for (let i = 0; i < 20; i++) {
        calls++
        if (quotas.reserve(tenantId, 0).granted) granted++
      }
      setTimeout(tick, 1)
    }
    setTimeout(tick, Math.max(0, startAt - Date.now()))
  })
const program = Effect.gen(function* () {
  const quotas = yield* DynamoQuota.make(
    {
      table,
      endpoint,
      region: "us-east-1",
      accessKeyId: "AKIAEMULATOR00000000",
      secretAccessKey: Redacted.make("emulator-secret"),
    },
    (t) => (t === tenantId ? rate : undefined),
    // This test is about the shared bound, on one machine and so one clock: a slow emulator on a
    // busy box must not look like an outage, nor its late Date headers (Node caches them for a
    // second) like a clock to correct.
    { leaseTimeoutMs: 5000, syncClock: false },
  )
  process.stdout.write("ready\\n")
  const [startAt, durationMs] = yield* Effect.promise(() => go)
  const result = yield* Effect.promise(() => hammer(quotas, startAt, durationMs))
  process.stdout.write(JSON.stringify({ ...result, stats: quotas.stats() }) + "\\n")
})
await Effect.runPromise(Effect.scoped(program))
`

interface WorkerResult {
  readonly granted: number
  readonly calls: number
  readonly elapsedMs: number
  readonly stats: DynamoQuota.Stats
}

const startWorker = (endpoint: string, table: string, tenantId: string, rate: number) => {
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "--input-type=module",
      "-e",
      WORKER,
      endpoint,
      table,
      tenantId,
      String(rate),
      moduleUrl,
    ],
    { cwd: root, stdio: ["pipe", "pipe", "inherit"] },
  )
  let buffered = ""
  let onReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => {
    onReady = resolve
  })
  const result = new Promise<WorkerResult>((resolve, reject) => {
    child.stdout.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8")
      const lines = buffered.split("\n")
      buffered = lines.pop()!
      for (const line of lines) {
        if (line === "ready") onReady()
        else if (line.startsWith("{")) resolve(JSON.parse(line) as WorkerResult)
      }
    })
    child.on("error", reject)
    child.on("exit", (code) => reject(new Error(`quota worker exited with ${code} before answering`)))
  })
  const go = (startAt: number, durationMs: number) => child.stdin.write(`go ${startAt} ${durationMs}\n`)
  return { child, ready, result, go }
}

describe("DynamoDB ingest quotas, several processes", () => {
  it("three processes hammering one tenant together get one quota", { timeout: 30_000 }, async () => {
    const table = freshTable()
    const rate = 1000
    const seconds = 2
    const workers = [1, 2, 3].map(() => startWorker(dynalite.endpoint, table, "acme", rate))
    try {
      // All ready: every worker has created or found the table.
      await Promise.all(workers.map((w) => w.ready))
      const startAt = Date.now() + 300
      for (const w of workers) w.go(startAt, seconds * 1000)
      const results = await Promise.all(workers.map((w) => w.result))
      const total = results.reduce((n, r) => n + r.granted, 0)
      const elapsedMs = Math.max(...results.map((r) => r.elapsedMs))
      const detail = JSON.stringify(results)
      // Never three quotas: one bucket, plus at most a chunk and a credit per process.
      expect(total, detail).toBeLessThanOrEqual(bound(rate, elapsedMs, 3))
      // ...and most of one (slack for processes and the emulator descheduled on a busy box).
      expect(total, detail).toBeGreaterThanOrEqual(0.5 * (rate * seconds + rate))
      // Shared, not taken by one: each process got a part (loosely: races decide the split).
      for (const r of results) expect(r.granted, detail).toBeGreaterThan(total / 10)
      for (const r of results) {
        // They did hammer, and leased in chunks, not a call per message.
        expect(r.calls, detail).toBeGreaterThan(r.granted)
        expect(r.stats.fallbacks, detail).toBe(0)
      }
      expect(
        results.reduce((n, r) => n + r.stats.leases, 0),
        detail,
      ).toBeLessThan(total / 5)
    } finally {
      for (const w of workers) w.child.kill()
    }
  })
})
