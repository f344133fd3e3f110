/**
 * What the store's tests share, whatever ClickHouse they run against (chDB in-process, or the
 * HTTP peer): readings, the time window, a history reader, and raw SQL that bypasses FINAL.
 */
import type { createClient } from "@clickhouse/client"
import { Effect } from "effect"
import type { TelemetryRow, TelemetryStoreApi } from "../../src/storage/TelemetryStore.js"

export const t0 = Date.UTC(2025, 0, 1)

/** A reading of acme's d1 at `ts`, unless overridden. */
export const reading = (ts: number, over: Partial<TelemetryRow> = {}): TelemetryRow => ({
  tenantId: "acme",
  deviceId: "d1",
  deviceClass: "thermo",
  msgId: `m-${ts}`,
  ts,
  receivedAt: ts + 50,
  values: { t: ts - t0 },
  ...over,
})

export const all = { from: t0 - 3_600_000, to: t0 + 3_600_000 }

export const historyOf = (store: TelemetryStoreApi, tenant = "acme", device = "d1") =>
  Effect.map(store.history(tenant, device, all, { limit: 10_000 }), (page) => page.rows)

/** Every kind of value a reading may hold, the awkward ones included. */
export const everyValueType = {
  temp: 21.5,
  count: 3,
  zero: 0,
  negative: -0.25,
  huge: 1e300,
  on: true,
  off: false,
  label: "kitchen",
  empty: "",
  quoted: `it's "é" — \\ \n\ttab`,
  notANumber: Number.NaN,
  up: Number.POSITIVE_INFINITY,
  down: Number.NEGATIVE_INFINITY,
}

/** Raw SQL through a client of its own (from `connect`), bypassing the store and FINAL. */
export const rawSql = (connect: () => ReturnType<typeof createClient>) => {
  const raw = (query: string) =>
    Effect.acquireUseRelease(
      Effect.sync(connect),
      (client) =>
        Effect.promise(async () => {
          if (!/^(SELECT|SHOW)/.test(query)) {
            await client.command({ query })
            return []
          }
          const result = await client.query({ query, format: "JSONEachRow" })
          return result.json<Record<string, unknown>>()
        }),
      (client) => Effect.promise(() => client.close()),
    )
  const rawCount = (database: string, table = "telemetry") =>
    Effect.map(raw(`SELECT count() AS n FROM ${database}.${table}`), (rows) => Number(rows[0]!.n))
  return { raw, rawCount }
}
