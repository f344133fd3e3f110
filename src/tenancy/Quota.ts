/**
 * Per-tenant ingest quotas (guarantee 4: a tenant over its quota is throttled without touching
 * the others). One token bucket per tenant, refilled at the quota's rate, holding at most one
 * second's worth. Tokens may be reserved ahead (the balance goes negative): a caller that may wait
 * is told how long, so the tenant's messages queue fairly behind each other, and nobody else's do.
 * These buckets are one process's (tests, a single process); `SharedQuota.ts` keeps the same
 * buckets for all the ingress workers of a machine together.
 */
export interface Reservation {
  /** True: the message may go after `waitMs` (its token is taken). False: refused, nothing taken. */
  readonly granted: boolean
  /** How long until the message's token is there, ms (0: now). */
  readonly waitMs: number
}

export interface Quotas {
  /** Reserves one message for the tenant if it can go within `maxWaitMs`. */
  readonly reserve: (tenantId: string, maxWaitMs: number) => Reservation
}

const NOW: Reservation = { granted: true, waitMs: 0 }

/** Quotas by tenant (`rate` gives messages per second, or undefined for none). */
export const make = (
  rate: (tenantId: string) => number | undefined,
  now: () => number = Date.now,
): Quotas => {
  const buckets = new Map<string, { tokens: number; at: number }>()
  return {
    reserve: (tenantId, maxWaitMs) => {
      const perSecond = rate(tenantId)
      if (perSecond === undefined) return NOW
      const t = now()
      let bucket = buckets.get(tenantId)
      if (bucket === undefined) {
        bucket = { tokens: perSecond, at: t }
        buckets.set(tenantId, bucket)
      }
      bucket.tokens = Math.min(perSecond, bucket.tokens + ((t - bucket.at) * perSecond) / 1000)
      bucket.at = t
      const waitMs = bucket.tokens >= 1 ? 0 : Math.ceil(((1 - bucket.tokens) * 1000) / perSecond)
      if (waitMs > maxWaitMs) return { granted: false, waitMs }
      bucket.tokens -= 1
      return waitMs === 0 ? NOW : { granted: true, waitMs }
    },
  }
}
