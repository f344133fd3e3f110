import { describe, expect, it } from "vitest"
import * as Quota from "../../src/tenancy/Quota.js"

describe("ingest quotas", () => {
  it("lets a burst of one second's worth through, then spaces messages at the rate", () => {
    let now = 0
    const quotas = Quota.make(
      (t) => (t === "limited" ? 10 : undefined),
      () => now,
    )
    for (let i = 0; i < 10; i++) expect(quotas.reserve("limited", 0)).toEqual({ granted: true, waitMs: 0 })
    // The 11th must wait 100 ms: refused when it may not wait, granted and queued when it may.
    expect(quotas.reserve("limited", 0)).toEqual({ granted: false, waitMs: 100 })
    expect(quotas.reserve("limited", 1000)).toEqual({ granted: true, waitMs: 100 })
    expect(quotas.reserve("limited", 1000)).toEqual({ granted: true, waitMs: 200 })
    now = 1000
    // A second later the reservations are paid off and 8 tokens are back (10 - 2 queued).
    for (let i = 0; i < 8; i++) expect(quotas.reserve("limited", 0).granted).toBe(true)
    expect(quotas.reserve("limited", 0).granted).toBe(false)
  })

  it("never touches a tenant without a quota, or another tenant's bucket", () => {
    const quotas = Quota.make(
      (t) => (t === "limited" ? 1 : undefined),
      () => 0,
    )
    expect(quotas.reserve("limited", 0).granted).toBe(true)
    expect(quotas.reserve("limited", 0).granted).toBe(false)
    for (let i = 0; i < 1000; i++) expect(quotas.reserve("free", 0)).toEqual({ granted: true, waitMs: 0 })
  })
})
