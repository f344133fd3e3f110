/**
 * Insert throughput of the ClickHouse TelemetryStore on embedded chDB, and where the time goes.
 * Usage: npx tsx bench/storage/index.ts [--batches 10] [--rows 10000]
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { createClient } from "@clickhouse/client"
import { createChdbConnection } from "chdb/connection"
import { Effect } from "effect"
import { encodeRow } from "../../src/storage/ClickHouseTables.js"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import { type TelemetryRow, TelemetryStore } from "../../src/storage/TelemetryStore.js"

const { values: args } = parseArgs({
  options: { batches: { type: "string", default: "10" }, rows: { type: "string", default: "10000" } },
})
const batches = Number(args.batches)
const rows = Number(args.rows)
const t0 = Date.UTC(2025, 0, 1)

/** One insert call's worth: 100 devices, 3 numeric fields, device times in order. */
const batch = (b: number): Array<TelemetryRow> =>
  Array.from({ length: rows }, (_, i) => ({
    tenantId: "acme",
    deviceId: `d${i % 100}`,
    deviceClass: "thermo",
    msgId: `m-${b}-${i}`,
    ts: t0 + b * rows + i,
    receivedAt: t0 + b * rows + i + 50,
    values: { temperature: 20 + (i % 7) * 0.5, humidity: 40 + (i % 11), pressure: 1013.25 - (i % 5) },
  }))

const report = (label: string, seconds: number) =>
  console.log(
    `${label.padEnd(52)} ${String(Math.round((batches * rows) / seconds)).padStart(9)} rows/s` +
      `  ${((seconds * 1000) / batches).toFixed(1).padStart(7)} ms/insert`,
  )

/** Runs `insert` once to warm up, then `batches` times on fresh data, and reports. */
const measure = async (
  label: string,
  offset: number,
  insert: (data: Array<TelemetryRow>, b: number) => Promise<unknown>,
) => {
  await insert(batch(offset - 1), offset - 1)
  const data = Array.from({ length: batches }, (_, b) => batch(offset + b))
  const started = performance.now()
  for (let b = 0; b < batches; b++) await insert(data[b]!, offset + b)
  report(label, (performance.now() - started) / 1000)
}

const dir = mkdtempSync(join(tmpdir(), "sluice-bench-chdb-"))
await Effect.runPromise(
  Effect.scoped(
    Effect.gen(function* () {
      const store = yield* TelemetryStore
      yield* Effect.promise(() =>
        measure("TelemetryStore.insert (JSONEachRow, token)", 0, (data, b) =>
          Effect.runPromise(store.insert(data, `bench-${b}`)),
        ),
      )
    }).pipe(
      Effect.provide(ClickHouseTelemetryStore.layerWith(ClickHouseTelemetryStore.embedded(dir, "bench"))),
    ),
  ),
)

// The same directory (chDB allows one per process), raw SQL to take pieces away.
const connection = createChdbConnection({ path: dir })
const client = createClient({
  connection: connection as unknown as NonNullable<
    NonNullable<Parameters<typeof createClient>[0]>["connection"]
  >,
})
await client.command({
  query: `CREATE TABLE IF NOT EXISTS bench.columns (tenant_id LowCardinality(String), device_id String,
    ts DateTime64(3, 'UTC'), temperature Float64, humidity Float64, pressure Float64)
    ENGINE = MergeTree PARTITION BY tenant_id ORDER BY (tenant_id, device_id, ts)`,
})
const body = (data: Array<TelemetryRow>) => data.map((row) => JSON.stringify(encodeRow(row))).join("\n")
await measure("  JS side only: encode + JSON.stringify", 1000, async (data) => body(data))
await measure("  chDB SQL, token (no @clickhouse/client)", 2000, (data, b) =>
  connection.chdb.queryAsync(
    `SET insert_deduplication_token = 'raw-${b}'; INSERT INTO bench.telemetry FORMAT JSONEachRow\n${body(data)}`,
  ),
)
await measure("  chDB SQL, insert_deduplicate = 0", 3000, (data) =>
  connection.chdb.queryAsync(
    `INSERT INTO bench.telemetry SETTINGS insert_deduplicate = 0 FORMAT JSONEachRow\n${body(data)}`,
  ),
)
await measure("  chDB SQL, plain Float64 columns, no Maps, no dedup", 4000, (data) =>
  connection.chdb.queryAsync(
    `INSERT INTO bench.columns FORMAT JSONEachRow\n${data
      .map((r) => JSON.stringify({ tenant_id: r.tenantId, device_id: r.deviceId, ts: r.ts, ...r.values }))
      .join("\n")}`,
  ),
)
await client.close()
rmSync(dir, { recursive: true, force: true })
