/**
 * Per-tenant ingest quotas that hold for all the ingress workers of one machine together (the
 * node:cluster processes sharing one data directory): `Quota.ts`'s token bucket, kept in
 * `$SLUICE_DATA_DIR/quotas.sqlite`, so N workers let a tenant through at its rate, not N times it,
 * and a tenant whose devices all land on one worker still gets all of it.
 *
 * `reserve` is on the hot path of every message and synchronous, so it usually touches only
 * memory: a worker leases a chunk of tokens (50 ms of the rate, at least 1) from the shared bucket
 * in one short BEGIN IMMEDIATE transaction and spends them locally. The shared bucket refills at
 * the rate and holds one second's worth, as in memory. A lease taken while the bucket is in
 * deficit takes tokens that are due later: the shared balance goes negative, each leased token is
 * due when the deficit before it is paid off, and that is the caller's `waitMs` — so waiting
 * (MQTT) reservations queue behind each other across workers, and a lease never takes a token due
 * later than its caller may wait. A refusal is answered from memory whenever the worker already
 * knows the shared bucket cannot serve it in time (the bucket only refills at the rate; other
 * workers only take), so a refused HTTP flood costs no transactions.
 *
 * Bound: a worker can let through, beyond the shared bucket, only the leased tokens it has not
 * spent yet, at most one chunk. Over any window of T seconds, the messages of one tenant let
 * through by W workers together are at most rate × T + rate (the burst) + W × chunk, with
 * chunk = max(1, floor(rate × 0.05)): at 2,000/s and 4 workers, 400 more than one bucket would
 * allow. The same unspent tokens, when leased in deficit, delay other workers' waiting callers by
 * at most one chunk (50 ms) per worker.
 *
 * When the file fails (its lock held past the busy timeout, a disk error), the worker neither
 * fails open nor closed: it logs a warning, enforces each quota with its own in-memory bucket
 * (`Quota.make`, the full rate) and tries the file again after a second. Failing closed would turn
 * trouble in a bookkeeping file into an ingest outage for every tenant with a quota, while the
 * durable log is fine; failing open would let one tenant flood the log for as long as the file
 * stays broken. The fallback keeps every tenant bounded, at W times its quota at worst, for as
 * long as the outage lasts. The busy timeout (250 ms) bounds how long `reserve` may block its
 * worker's event loop, and every tenant on it, while another worker holds the lock. Transactions
 * take microseconds, but on a loaded machine their holder can be descheduled for tens of
 * milliseconds (25 ms was measured too short on a busy 2-core CI box: the fallback kicked in and
 * let a tenant overshoot); a lock held past 250 ms is an outage, not contention.
 */
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import Database from "better-sqlite3"
import { Data, Effect, Runtime, type Scope } from "effect"
import type { Quotas, Reservation } from "./Quota.js"
import * as Quota from "./Quota.js"

/** The quota file could not be opened at start-up. */
export class QuotaFileUnavailable extends Data.TaggedError("QuotaFileUnavailable")<{
  readonly reason: string
}> {}

export interface Options {
  /** Wall-clock ms: every process of the machine must read the same clock. */
  readonly now?: () => number
  /** How much of the rate one lease takes, ms (default 50). */
  readonly leaseMs?: number
  /** How long a transaction may wait for another worker's lock, ms (default 250). */
  readonly busyTimeoutMs?: number
  /** How long to use the in-memory fallback after the file failed, ms (default 1,000). */
  readonly retryMs?: number
}

/** What a worker holds of a tenant's shared bucket. */
interface Lease {
  /** Tokens leased and not spent yet. */
  left: number
  /** The shared balance just before the next of them was taken, as of `at`. */
  balance: number
  at: number
  /** When the shared bucket has a token again at the earliest: its balance after our last look. */
  sharedDue: number
}

interface Taken {
  readonly taken: number
  readonly balance: number
  readonly at: number
}

const NOW: Reservation = { granted: true, waitMs: 0 }

/** How long until a bucket holding `balance` tokens has one, ms. */
const dueIn = (balance: number, rate: number) => (balance >= 1 ? 0 : ((1 - balance) * 1000) / rate)

const reason = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

/**
 * Quotas by tenant (`rateOf` gives messages per second, or undefined for none) shared through
 * `dataDir/quotas.sqlite` with every process that opens the same file; closed with the scope.
 */
export const make = (
  dataDir: string,
  rateOf: (tenantId: string) => number | undefined,
  options: Options = {},
): Effect.Effect<Quotas, QuotaFileUnavailable, Scope.Scope> =>
  Effect.gen(function* () {
    const now = options.now ?? Date.now
    const leaseMs = options.leaseMs ?? 50
    const retryMs = options.retryMs ?? 1000
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const db = yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          mkdirSync(dataDir, { recursive: true })
          // Workers start together: setting up may wait for each other longer than a lease may.
          const db = new Database(join(dataDir, "quotas.sqlite"), { timeout: 5000 })
          db.pragma("journal_mode = WAL")
          // Forgetting the last leases in a power loss forgives a few tokens; no fsync per lease.
          db.pragma("synchronous = NORMAL")
          db.exec(`CREATE TABLE IF NOT EXISTS buckets (
            tenant TEXT PRIMARY KEY,
            tokens REAL NOT NULL,
            at REAL NOT NULL
          ) WITHOUT ROWID`)
          db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 250}`)
          return db
        },
        catch: (cause) => new QuotaFileUnavailable({ reason: reason(cause) }),
      }),
      (db) => Effect.sync(() => db.close()),
    )
    const read = db.prepare<[string], { tokens: number; at: number }>(
      "SELECT tokens, at FROM buckets WHERE tenant = ?",
    )
    const write = db.prepare<[string, number, number]>(
      `INSERT INTO buckets (tenant, tokens, at) VALUES (?, ?, ?)
       ON CONFLICT (tenant) DO UPDATE SET tokens = excluded.tokens, at = excluded.at`,
    )

    /**
     * Takes tokens from the file: how many, and the balance before them; or, if the first would
     * come later than the caller may wait, how long until it comes.
     */
    const take = db.transaction(
      (tenantId: string, rate: number, maxWaitMs: number, t: number): Taken | number => {
        const row = read.get(tenantId)
        // A clock stepping back must not refill the bucket twice.
        const at = row === undefined ? t : Math.max(row.at, t)
        const balance =
          row === undefined ? rate : Math.min(rate, row.tokens + (Math.max(0, t - row.at) * rate) / 1000)
        const firstDue = dueIn(balance, rate)
        if (Math.ceil(firstDue) > maxWaitMs) return firstDue
        const chunk = Math.max(1, Math.floor((rate * leaseMs) / 1000))
        // Tokens there now, if any; otherwise only tokens due within what the caller may wait.
        const taken = Math.min(
          chunk,
          Math.max(1, Math.floor(balance >= 1 ? balance : balance + (maxWaitMs * rate) / 1000)),
        )
        write.run(tenantId, balance - taken, at)
        return { taken, balance, at }
      },
    )

    const log = (warning: boolean, message: string) =>
      runFork(warning ? Effect.logWarning(message) : Effect.logInfo(message))
    const fallback = Quota.make(rateOf, now)
    let fallbackUntil = Number.NEGATIVE_INFINITY
    let failing = false

    /** `take`, committed, into `lease`: 0; refused: ms until a token; the file failed: undefined. */
    const leaseFromFile = (tenantId: string, rate: number, maxWaitMs: number, t: number, lease: Lease) => {
      try {
        const taken = take.immediate(tenantId, rate, maxWaitMs, t)
        if (failing) {
          failing = false
          log(false, "quotas.sqlite is back: ingest quotas hold across the ingress workers again")
        }
        if (typeof taken === "number") return taken
        // Only now: a lease whose commit failed must not be spent.
        lease.left = taken.taken
        lease.balance = taken.balance
        lease.at = taken.at
        lease.sharedDue = taken.at + dueIn(taken.balance - taken.taken, rate)
        return 0
      } catch (cause) {
        fallbackUntil = t + retryMs
        if (!failing) {
          failing = true
          log(
            true,
            `quotas.sqlite failed (${reason(cause)}): each ingress worker enforces the quotas alone, ` +
              `so a tenant may get up to one quota per worker, until the file works again`,
          )
        }
        return undefined
      }
    }

    const leases = new Map<string, Lease>()
    const quotas: Quotas = {
      reserve: (tenantId, maxWaitMs) => {
        const rate = rateOf(tenantId)
        if (rate === undefined) return NOW
        const t = now()
        let lease = leases.get(tenantId)
        if (lease === undefined) {
          lease = { left: 0, balance: 0, at: t, sharedDue: t }
          leases.set(tenantId, lease)
        }
        if (lease.left < 1) {
          const knownWait = Math.ceil(lease.sharedDue - t)
          if (knownWait > maxWaitMs) return { granted: false, waitMs: knownWait }
          if (t < fallbackUntil) return fallback.reserve(tenantId, maxWaitMs)
          const refusedMs = leaseFromFile(tenantId, rate, maxWaitMs, t, lease)
          if (refusedMs === undefined) return fallback.reserve(tenantId, maxWaitMs)
          if (refusedMs > 0) {
            lease.sharedDue = t + refusedMs
            return { granted: false, waitMs: Math.ceil(refusedMs) }
          }
        }
        const waitMs = Math.ceil(Math.max(0, dueIn(lease.balance, rate) - (t - lease.at)))
        // The next leased token is the earliest this worker can get: the file's are all later.
        if (waitMs > maxWaitMs) return { granted: false, waitMs }
        lease.left -= 1
        lease.balance -= 1
        return waitMs === 0 ? NOW : { granted: true, waitMs }
      },
    }
    return quotas
  })
