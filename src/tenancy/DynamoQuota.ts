/**
 * Per-tenant ingest quotas that hold for every ingress process on every node together: the token
 * bucket of `Quota.ts` (the rate, one second's worth of burst) kept in a DynamoDB table (or an
 * emulator such as dynalite, through `endpoint`), one item per tenant (`tenant_id`), the table
 * created on demand with on-demand capacity. `SharedQuota.ts` does the same for the processes of
 * one machine through a SQLite file; this is its fleet-wide sibling, chosen with SLUICE_QUOTA_TABLE.
 *
 * The item holds one number, `tat` (epoch ms; GCRA's "theoretical arrival time"): the bucket holds
 * rate × (1 s − max(0, tat − now)) tokens, so tat ≤ now is a full bucket, and taking n tokens moves
 * tat to max(tat, now) + n × 1000 / rate. The token that moves tat to x is due at x − 1 s: due
 * later than now means a waiting caller gets it with that `waitMs`, the in-memory bucket's
 * negative balance. Nothing rate-dependent is stored, so processes that disagree on a rate for a
 * while (a rolling config change) still share one consistent bucket.
 *
 * One conditional UpdateItem per lease, no read first. Update expressions add and subtract but
 * have no max(), so the two cases of max(tat, now) are two expressions, each guarded by the
 * condition that makes it the right one:
 * - in deficit (tat ≥ now): `SET tat = tat + :span` if `tat BETWEEN :now AND :limit`, :limit
 *   letting the lease take only tokens due within what its callers may wait (below);
 * - full (tat < now, or no item): `SET tat = :now + :span` if `attribute_not_exists(tat) OR
 *   tat < :now`.
 * The process picks the case from the tat of its last answer; if the condition fails, DynamoDB
 * returns the item (ReturnValuesOnConditionCheckFailure), which says whether the other case
 * applies or the bucket cannot cover the lease (emulators do not return it: then one consistent
 * GetItem reads it). Under contention the bucket is in deficit, and the deficit case is an
 * increment: W processes leasing at once all succeed in one call each, in whatever order DynamoDB
 * applies them, where read-compute-write with a version condition (the obvious design) fails all
 * but one and makes them read and retry, the more so the more processes share a tenant. tat only
 * grows: one case adds, the other writes :now + :span over a tat below :now.
 *
 * Leasing ahead. `reserve` is synchronous and on every message's hot path, and DynamoDB is a round
 * trip away, so a process keeps a chunk of each active tenant's tokens in hand (40 ms of the rate,
 * at least 1) and forks the next lease when half of it is spent; `reserve` itself only touches
 * memory. A lease takes tokens due within the longest `maxWaitMs` the tenant's callers asked for in
 * the last second, and at least two chunks' span (so the next chunk can be leased before the one in
 * hand is due): waiting (MQTT) reservations queue behind each other across the fleet as in
 * `SharedQuota`, a lease never takes a token later than its callers may wait, and every process
 * asks under the same limit whatever it holds, so none has a head start. A refused lease tells the
 * process when its tokens could fit; it asks again no sooner (at least 5 ms later), and answers
 * refusals from memory meanwhile (tat only grows), so a refused HTTP flood costs no calls.
 *
 * No tokens in hand. The first message of a tenant on a process, or one arriving while its hand
 * is empty and the refill is on its way, is granted on credit, unless the table was last seen
 * short: up to 10 ms of the rate (at least 1) per tenant per process, charged to the table with the
 * next lease, unconditionally, since those messages went through. Refusing instead would answer a
 * tenant well under its quota with a 429, or end an MQTT device's connection (the broker
 * disconnects on a refusal), for a round trip that is not its fault; an in-memory bucket until the
 * first lease would hand each process a whole extra burst. Beyond the credit a process refuses,
 * with the expected time of the lease's answer: one that receives more than half a chunk and a
 * credit of one tenant within a round trip (a few ms) turns the excess away.
 *
 * Bound: beyond what it has charged to the table, a process can let through only what it holds
 * (at most a chunk) and what it owes (at most a credit). Over any window of T seconds, the messages
 * of one tenant let through by W processes together are at most
 * rate × T + rate (the burst) + W × (chunk + credit) + rate × min(S, 1 s), where S is how far
 * apart the processes' clocks are: at 2,000/s and 4 processes, 400 above one bucket (the same
 * 50 ms of the rate per process as `SharedQuota`), plus 2 per ms of skew. Tokens held by a process
 * that stops are lost to the tenant (fewer, never more).
 *
 * Clock skew. Each process's clock enters as :now, and the bucket is full or not by the clock of
 * whoever writes. A process whose clock is S ahead of another's may find full, and take, a burst
 * the other has just spent, so skew adds rate × min(S, 1 s) to the bound once: tat only grows, so
 * skew shifts the bucket, it does not add to the rate. The larger harm is starvation: tat written
 * by the fast clock is S ahead of the others', so they are refused for up to S after it (and, while
 * it keeps the bucket full, a process behind by more than a chunk's span gets little). NTP keeps
 * S to about a millisecond on EC2 (Amazon Time Sync Service). For a clock that is plainly wrong,
 * time comes from DynamoDB as far as it can tell: each response carries the server's `Date`
 * (whole seconds), so the offset of the server's clock from ours lies in [Date − received,
 * Date + 1 s − sent]; the process intersects these intervals over its calls (loosened by 100 ppm
 * of drift, reset when they contradict, as after a clock step). A clock within 100 ms of that interval
 * is left alone (NTP does better than whole-second headers, which a busy server may stamp late);
 * one further off is moved to the interval's nearest edge. The start-up call gives the first
 * interval, so whatever the local clocks say, S stays under 1.1 s + a round trip, and shrinks
 * towards 100 ms + a round trip as calls at various sub-second phases narrow the interval. A clock
 * stepped forward between two calls can push tat ahead by the step once: that tenant is starved
 * until real time catches up, never over-admitted.
 *
 * Failures. When a lease fails (DynamoDB throttles, refuses the request, is unreachable, or takes
 * over 500 ms), the process neither fails open nor closed, as with `SharedQuota`: it logs a
 * warning, enforces each quota with its own in-memory bucket (`Quota.make`, the full rate) and
 * tries the table again after a second; `stats` counts these fallbacks. Failing closed would turn
 * trouble in a bookkeeping table into an ingest outage while the stream is fine; failing open
 * would let one tenant flood the stream for as long as the table stays away. The fallback keeps
 * every tenant bounded, at W times its quota at worst, for as long as the outage lasts. A call cut
 * short may have landed: its tokens are lost, or its credit charged twice (fewer, never more).
 * Start-up fails only when the table is refused outright (access denied, a bad name); when
 * DynamoDB is merely unreachable, ingress starts on the fallback and finds or creates the table
 * later.
 *
 * Permissions on the table: dynamodb:DescribeTable, UpdateItem and GetItem (read only when a
 * failed condition returns no item: emulators, or an item deleted by hand), and CreateTable unless
 * the table is made beforehand.
 *
 * Cost: nothing for an idle tenant. A tenant at its quota costs about rate / chunk accepted writes
 * a second (25, whatever its rate and the number of processes), plus, when several processes
 * compete for it, the writes the table refuses to those that lost a race, each retrying only once
 * its tokens could fit.
 */
import {
  type AttributeValue,
  DynamoDBClient,
  GetItemCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb"
import { Data, Effect, FiberSet, type Scope } from "effect"
import * as DynamoTable from "../stream/dynamoTable.js"
import { AwsError, awsClientOptions, isThrottling, toAwsError } from "../stream/kinesisClient.js"
import type { Quotas, Reservation } from "./Quota.js"
import * as Quota from "./Quota.js"
import type { DynamoQuotaConfig } from "./QuotaConfig.js"

/** The quota table was refused at start-up (access denied, an invalid name, ...). */
export class QuotaTableUnavailable extends Data.TaggedError("QuotaTableUnavailable")<{
  readonly reason: string
}> {}

export interface Options {
  /** The local wall clock, ms (default Date.now); corrected by DynamoDB's unless `syncClock` is false. */
  readonly now?: () => number
  /** Correct `now` by the `Date` of DynamoDB's responses (default true; false for fake clocks). */
  readonly syncClock?: boolean
  /** How much of the rate a process keeps in hand, ms (default 40). */
  readonly leaseMs?: number
  /** How much of the rate a process may grant before its lease lands, ms (default 10). */
  readonly creditMs?: number
  /** How long a call to the table may take before it counts as failed, ms (default 500). */
  readonly leaseTimeoutMs?: number
  /** How long to use the in-memory fallback after the table failed, ms (default 1,000). */
  readonly retryMs?: number
}

/** What a process did with the table, for tests and diagnostics. */
export interface Stats {
  /** Writes the table accepted (leases and charges of credit). */
  readonly leases: number
  /** Leases the table refused: the bucket could not cover them in time. */
  readonly refusedLeases: number
  /** Times the process fell back to its own in-memory buckets (each logged). */
  readonly fallbacks: number
  /** Leases under way. */
  readonly inFlight: number
  /** What is added to the local clock to agree with DynamoDB's, ms. */
  readonly clockCorrectionMs: number
}

export interface DynamoQuotas extends Quotas {
  readonly stats: () => Stats
}

/** The bucket's depth: one second of the rate, as in `Quota.make`. */
const BURST_MS = 1000
/** How soon a process asks again after a refused lease at the earliest, ms. */
const MIN_RETRY_MS = 5
/** How long each start-up call may take (the first call also fetches credentials), ms. */
const START_CALL_TIMEOUT_MS = 10_000
/** What the drift of two clocks may loosen an offset interval by, per ms elapsed (100 ppm). */
const DRIFT = 1e-4
/** How far outside what DynamoDB's `Date` headers allow the local clock may be before it is corrected. */
const CLOCK_MARGIN_MS = 100

const NOW: Reservation = { granted: true, waitMs: 0 }

/** A failed condition, with the item's tat when DynamoDB returned the item (dynalite does not). */
class ConditionFailed extends Data.TaggedError("ConditionFailed")<{ readonly tat: number | undefined }> {}

/** A lease's answer: tokens taken (tat after them), or refused (tat, or a lower bound of it). */
type Outcome = { readonly taken: boolean; readonly tat: number }

/** Leased tokens not spent yet, due one `interval` apart from `nextDue`. */
interface Segment {
  left: number
  nextDue: number
}

/** What a process holds of one tenant's bucket. */
interface Hand {
  /** Oldest first; tat only grows, so later segments are due later. */
  readonly segments: Array<Segment>
  inHand: number
  /** Tokens granted on credit, not charged to the table yet. */
  debt: number
  /** tat as of this process's last answer from the table: a lower bound of the table's. */
  knownTat: number
  /** How far ahead the table last refused to lease, ms (−1: the last lease was granted). */
  refusedAheadMs: number
  leasing: boolean
  leaseStartedAt: number
  retryAt: number
  /** The longest `maxWaitMs` asked this second and the one before. */
  waitNow: number
  waitPrev: number
  waitSince: number
}

const reasonOf = (cause: unknown) =>
  cause instanceof AwsError ? cause.reason : cause instanceof Error ? cause.message : String(cause)

/** A DynamoDB number for ms values: fixed-point, never exponent notation. */
const num = (value: number): AttributeValue => ({ N: value.toFixed(3) })

const tatOf = (item: Record<string, AttributeValue> | undefined): number | undefined => {
  const n = item?.tat?.N
  return n === undefined ? undefined : Number(n)
}

/**
 * The offset of DynamoDB's clock from ours, as far as its `Date` headers (whole seconds) tell: a
 * response stamped D, to a request sent at s and answered at r (local), puts the offset in
 * [D − r, D + 1000 − s]; the intervals of successive calls are intersected.
 */
class ServerClock {
  private lo = Number.NEGATIVE_INFINITY
  private hi = Number.POSITIVE_INFINITY
  private at = Number.NEGATIVE_INFINITY
  observe(sentAt: number, receivedAt: number, date: number) {
    const lo = date - receivedAt
    const hi = date + 1000 - sentAt
    const slack = Number.isFinite(this.at) ? Math.max(0, receivedAt - this.at) * DRIFT : 0
    const oldLo = this.lo - slack
    const oldHi = this.hi + slack
    this.at = receivedAt
    if (lo > oldHi || hi < oldLo) {
      // A clock was stepped: only the new answer holds.
      this.lo = lo
      this.hi = hi
    } else {
      this.lo = Math.max(lo, oldLo)
      this.hi = Math.min(hi, oldHi)
    }
  }
  /**
   * The smallest correction consistent with every answer, or none while our clock is within
   * `CLOCK_MARGIN_MS` of them (NTP does better than whole-second headers, which a busy server may
   * also stamp a little late).
   */
  correction(): number {
    if (this.lo > CLOCK_MARGIN_MS) return this.lo
    if (this.hi < -CLOCK_MARGIN_MS) return this.hi
    return 0
  }
}

/**
 * Quotas by tenant (`rateOf` gives messages per second, or undefined for none) shared through the
 * DynamoDB table `config.table` with every process that uses the same table; the client is closed
 * and leases under way are abandoned with the scope.
 */
export const make = (
  config: DynamoQuotaConfig,
  rateOf: (tenantId: string) => number | undefined,
  options: Options = {},
): Effect.Effect<DynamoQuotas, QuotaTableUnavailable, Scope.Scope> =>
  Effect.gen(function* () {
    const localNow = options.now ?? Date.now
    const leaseMs = options.leaseMs ?? 40
    const creditMs = options.creditMs ?? 10
    const leaseTimeoutMs = options.leaseTimeoutMs ?? 500
    const retryMs = options.retryMs ?? 1000
    const serverClock = new ServerClock()
    const syncClock = options.syncClock ?? true
    const now = syncClock ? () => localNow() + serverClock.correction() : localNow
    const TableName = config.table
    const run = yield* FiberSet.makeRuntime<never>()

    const client = yield* Effect.acquireRelease(
      Effect.sync(() => {
        // One retry inside the SDK; a lease that still fails falls back rather than waiting longer.
        const client = new DynamoDBClient({ ...awsClientOptions(config), maxAttempts: 2 })
        if (syncClock) {
          // Innermost (after the SDK's retries and deserializer): one HTTP exchange per sample.
          client.middlewareStack.add(
            (next) => async (args) => {
              const sentAt = localNow()
              const result = await next(args)
              const date = (result.response as { headers?: Record<string, string> } | undefined)?.headers
                ?.date
              const parsed = date === undefined ? Number.NaN : Date.parse(date)
              if (!Number.isNaN(parsed)) serverClock.observe(sentAt, localNow(), parsed)
              return result
            },
            { step: "deserialize", name: "sluiceQuotaServerClock" },
          )
        }
        return client
      }),
      (client) => Effect.sync(() => client.destroy()),
    )

    /** One SDK call; interruption (and the timeout) abort it. */
    const send = <A>(request: (abortSignal: AbortSignal) => Promise<A>, timeoutMs = leaseTimeoutMs) =>
      Effect.tryPromise({
        try: request,
        catch: (cause) => {
          const error = cause as { name?: unknown; Item?: Record<string, AttributeValue> }
          return error?.name === "ConditionalCheckFailedException"
            ? new ConditionFailed({ tat: tatOf(error.Item) })
            : toAwsError(cause)
        },
      }).pipe(
        Effect.timeoutFail({
          duration: timeoutMs,
          onTimeout: () =>
            new AwsError({
              name: "TimeoutError",
              message: `no answer within ${timeoutMs} ms`,
              fault: "network",
            }),
        }),
      )

    /** Connects to the table, creating it if missing and waiting until it is ACTIVE. */
    const ensureTable = DynamoTable.ensureTable(client, {
      table: TableName,
      key: "tenant_id",
      activeTimeoutMs: config.activeTimeoutMs,
      callTimeoutMs: START_CALL_TIMEOUT_MS,
    })

    const runLog = (effect: Effect.Effect<void>) => void run(effect)
    const fallback = Quota.make(rateOf, now)
    let fallbackUntil = Number.NEGATIVE_INFINITY
    let failing = false
    let tableReady = false
    let leases = 0
    let refusedLeases = 0
    let fallbacks = 0
    let inFlight = 0
    /** How long a lease takes, ms (moving average): what a caller refused for its sake is told. */
    let leaseRttMs = 10

    const fail = (reason: string) => {
      fallbackUntil = now() + retryMs
      if (failing) return
      failing = true
      fallbacks += 1
      runLog(
        Effect.logWarning(
          `quota table ${TableName} failed (${reason}): each ingress process enforces the quotas alone, ` +
            `so a tenant may get up to one quota per process, until the table answers again`,
        ),
      )
    }

    yield* ensureTable.pipe(
      Effect.tap(() => {
        tableReady = true
      }),
      Effect.catchAll((error) =>
        error.fault === "client" && !isThrottling(error.name)
          ? Effect.fail(new QuotaTableUnavailable({ reason: `${TableName}: ${error.reason}` }))
          : Effect.sync(() => fail(error.reason)),
      ),
      Effect.withSpan("DynamoQuota.start"),
    )

    /** One UpdateItem: taken (tat after it), or the condition failed (tat when DynamoDB told). */
    const update = (
      tenantId: string,
      expression: string,
      condition: string,
      values: Record<string, AttributeValue>,
    ) =>
      send((abortSignal) =>
        client.send(
          new UpdateItemCommand({
            TableName,
            Key: { tenant_id: { S: tenantId } },
            UpdateExpression: expression,
            ConditionExpression: condition,
            ExpressionAttributeNames: { "#tat": "tat" },
            ExpressionAttributeValues: values,
            ReturnValues: "ALL_NEW",
            ReturnValuesOnConditionCheckFailure: "ALL_OLD",
          }),
          { abortSignal },
        ),
      ).pipe(
        Effect.map((out): { taken: true; tat: number } => {
          const tat = tatOf(out.Attributes)
          if (tat === undefined) throw new Error(`quota item without tat: ${JSON.stringify(out.Attributes)}`)
          return { taken: true, tat }
        }),
        Effect.catchTag("ConditionFailed", (e) => Effect.succeed({ taken: false as const, tat: e.tat })),
      )

    /**
     * The item's tat, read consistently: only where a failed condition did not return the item
     * (emulators; DynamoDB does, with ReturnValuesOnConditionCheckFailure). Undefined: no item.
     */
    const read = (tenantId: string) =>
      send((abortSignal) =>
        client.send(
          new GetItemCommand({ TableName, Key: { tenant_id: { S: tenantId } }, ConsistentRead: true }),
          { abortSignal },
        ),
      ).pipe(Effect.map((out) => tatOf(out.Item)))

    /**
     * Takes `span` ms of tokens (n × 1000 / rate) at local time `t` if they are all due by the time
     * `limit` allows (tat ≤ limit before them; Infinity: unconditionally, to charge credit).
     * `knownAtLeastNow`: the process knows tat ≥ t (tat only grows), so the deficit case applies.
     */
    const take = (tenantId: string, t: number, span: number, limit: number, knownAtLeastNow: boolean) =>
      Effect.gen(function* () {
        const full = update(tenantId, "SET #tat = :tat", "attribute_not_exists(#tat) OR #tat < :now", {
          ":tat": num(t + span),
          ":now": num(t),
        })
        const deficit =
          limit === Number.POSITIVE_INFINITY
            ? update(tenantId, "SET #tat = #tat + :span", "#tat >= :now", {
                ":span": num(span),
                ":now": num(t),
              })
            : update(tenantId, "SET #tat = #tat + :span", "#tat BETWEEN :now AND :limit", {
                ":span": num(span),
                ":now": num(t),
                ":limit": num(limit),
              })
        let isFull = !knownAtLeastNow
        for (let attempt = 0; attempt < 3; attempt++) {
          const outcome = yield* isFull ? full : deficit
          if (outcome.taken) return outcome as Outcome
          const tat = outcome.tat ?? (yield* read(tenantId))
          if (tat === undefined) {
            isFull = true
            continue
          }
          if (tat > limit) return { taken: false, tat } satisfies Outcome
          // Another process moved it between our guess and our write: the other case.
          isFull = tat < t
        }
        return { taken: false, tat: t } satisfies Outcome
      })

    const hands = new Map<string, Hand>()
    const handOf = (tenantId: string, t: number) => {
      let hand = hands.get(tenantId)
      if (hand === undefined) {
        hand = {
          segments: [],
          inHand: 0,
          debt: 0,
          knownTat: Number.NEGATIVE_INFINITY,
          refusedAheadMs: -1,
          leasing: false,
          leaseStartedAt: t,
          retryAt: Number.NEGATIVE_INFINITY,
          waitNow: 0,
          waitPrev: 0,
          waitSince: t,
        }
        hands.set(tenantId, hand)
      }
      return hand
    }
    const chunkOf = (rate: number) => Math.max(1, Math.floor((rate * leaseMs) / 1000))
    const creditOf = (rate: number) => Math.max(1, Math.floor((rate * creditMs) / 1000))
    const wantedAhead = (hand: Hand) => Math.max(hand.waitNow, hand.waitPrev)

    /** The lease of one tenant: charges its credit and tops its hand up to a chunk. */
    const lease = (tenantId: string, hand: Hand, rate: number) =>
      Effect.gen(function* () {
        // Not on the caller's stack: `reserve` only forks.
        yield* Effect.yieldNow()
        if (!tableReady) {
          // Start-up could not reach the table: the fallback holds until it is there.
          fallbackUntil = Number.POSITIVE_INFINITY
          yield* ensureTable
          tableReady = true
          fallbackUntil = Number.NEGATIVE_INFINITY
        }
        const t = now()
        const interval = 1000 / rate
        const owed = hand.debt
        const topUp = Math.max(0, chunkOf(rate) - hand.inHand)
        if (owed + topUp === 0) return
        const span = (owed + topUp) * interval
        // Tokens due within what callers may wait, and at least two chunks' span, so that a process
        // can lease its next chunk before the one in hand is due. The same for every process
        // whatever it holds: a process with tokens in hand has no head start on one without.
        const aheadMs = Math.max(wantedAhead(hand), 2 * chunkOf(rate) * interval, span)
        // The credit was spent: it is charged whatever the balance; only the top-up must fit.
        const limit = topUp === 0 ? Number.POSITIVE_INFINITY : t + BURST_MS + aheadMs - span
        const outcome = yield* take(tenantId, t, span, limit, hand.knownTat >= t)
        if (failing) {
          failing = false
          runLog(
            Effect.logInfo(`quota table ${TableName} answers again: ingest quotas hold across the fleet`),
          )
        }
        hand.knownTat = Math.max(hand.knownTat, outcome.tat)
        if (outcome.taken) {
          leases += 1
          hand.debt -= owed
          if (topUp > 0) {
            hand.segments.push({ left: topUp, nextDue: outcome.tat - topUp * interval + interval - BURST_MS })
            hand.inHand += topUp
          }
          hand.refusedAheadMs = -1
          hand.retryAt = Number.NEGATIVE_INFINITY
          return
        }
        refusedLeases += 1
        hand.refusedAheadMs = aheadMs
        // Not before the tokens would fit, if nobody else takes any.
        hand.retryAt = Math.max(t + MIN_RETRY_MS, outcome.tat - (limit - t))
        if (owed > 0) {
          const charged = yield* take(
            tenantId,
            t,
            owed * interval,
            Number.POSITIVE_INFINITY,
            hand.knownTat >= t,
          )
          if (charged.taken) {
            leases += 1
            hand.debt -= owed
            hand.knownTat = Math.max(hand.knownTat, charged.tat)
          }
        }
      }).pipe(
        Effect.catchAll((error) => Effect.sync(() => fail(reasonOf(error)))),
        Effect.ensuring(
          Effect.sync(() => {
            const t = now()
            leaseRttMs = 0.8 * leaseRttMs + 0.2 * Math.max(1, t - hand.leaseStartedAt)
            hand.leasing = false
            inFlight -= 1
            // Credit granted while this lease was under way is charged without waiting for demand.
            if (hand.debt > 0) kick(tenantId, hand, rate, t)
          }),
        ),
        Effect.withSpan("DynamoQuota.lease"),
      )

    /** Starts the tenant's lease if it is due and none is under way. */
    const kick = (tenantId: string, hand: Hand, rate: number, t: number) => {
      if (hand.leasing || t < fallbackUntil) return
      if (hand.debt === 0 && hand.inHand > Math.floor(chunkOf(rate) / 2)) return
      // After a refusal, back off, unless callers now wait longer than the refused lease asked.
      if (t < hand.retryAt && wantedAhead(hand) <= hand.refusedAheadMs) return
      hand.leasing = true
      hand.leaseStartedAt = t
      inFlight += 1
      run(lease(tenantId, hand, rate))
    }

    const quotas: DynamoQuotas = {
      reserve: (tenantId, maxWaitMs) => {
        const rate = rateOf(tenantId)
        if (rate === undefined) return NOW
        const t = now()
        if (t < fallbackUntil) return fallback.reserve(tenantId, maxWaitMs)
        const hand = handOf(tenantId, t)
        if (t - hand.waitSince >= 1000) {
          hand.waitPrev = t - hand.waitSince >= 2000 ? 0 : hand.waitNow
          hand.waitNow = 0
          hand.waitSince = t
        }
        if (maxWaitMs > hand.waitNow) hand.waitNow = maxWaitMs
        const interval = 1000 / rate
        const front = hand.segments[0]
        if (front !== undefined) {
          const waitMs = Math.ceil(Math.max(0, front.nextDue - t))
          // The next leased token is the earliest this process can get: the table's are all later.
          if (waitMs > maxWaitMs) return { granted: false, waitMs }
          front.left -= 1
          front.nextDue += interval
          hand.inHand -= 1
          if (front.left === 0) hand.segments.shift()
          kick(tenantId, hand, rate, t)
          return waitMs === 0 ? NOW : { granted: true, waitMs }
        }
        kick(tenantId, hand, rate, t)
        // Nothing in hand: the earliest the table can have a token, as far as this process knows.
        const knownWait = Math.ceil(Math.max(0, hand.knownTat + (hand.debt + 1) * interval - BURST_MS - t))
        if (knownWait > maxWaitMs) return { granted: false, waitMs: knownWait }
        if (maxWaitMs > hand.refusedAheadMs && hand.debt < creditOf(rate)) {
          hand.debt += 1
          kick(tenantId, hand, rate, t)
          return knownWait === 0 ? NOW : { granted: true, waitMs: knownWait }
        }
        // The table refused this much, or the credit is spent: wait for the lease's answer.
        const answerIn = hand.leasing ? hand.leaseStartedAt + leaseRttMs - t : hand.retryAt - t
        return { granted: false, waitMs: Math.max(1, knownWait, Math.ceil(answerIn)) }
      },
      stats: () => ({
        leases,
        refusedLeases,
        fallbacks,
        inFlight,
        clockCorrectionMs: syncClock ? serverClock.correction() : 0,
      }),
    }
    return quotas
  })
