/**
 * What an insert costs by batch size, in one process on a fresh chDB directory: CPU per stored
 * reading (the process's user + system time, chDB's threads included, background merges too) of
 * `TelemetryStore.insert` — the readings, each device's latest (`latest_input`) and the rollups,
 * three tables — beside the readings alone (the same rows and settings into the `telemetry` of
 * another database, so neither's merges run in the other's time).
 * 200 devices, 3 numeric fields, one tenant, parts fsynced, as `bench:e2e` sends them.
 *
 *   npm run bench:storage:batches [-- --readings 120000]
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { Effect } from "effect"
import { encodeRow, telemetryColumns } from "../../src/storage/ClickHouseTables.js"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import { type TelemetryRow, TelemetryStore } from "../../src/storage/TelemetryStore.js"

const { values: args } = parseArgs({ options: { readings: { type: "string", default: "120000" } } })
const readings = Number(args.readings)
const t0 = Date.UTC(2025, 0, 1)
let n = 0
const batch = (size: number): Array<TelemetryRow> =>
  Array.from({ length: size }, (_, i) => {
    n++
    return {
      tenantId: "acme",
      deviceId: `d${i % 200}`,
      deviceClass: "thermo",
      msgId: `m-${n}`,
      ts: t0 + n * 5,
      receivedAt: t0 + n * 5 + 50,
      values: { temperature: 20 + (i % 7) * 0.5, humidity: 40 + (i % 11), pressure: 1013.25 - (i % 5) },
    }
  })

/** CPU µs per reading of `insert` over `readings` readings in batches of `size`, after a warm-up. */
const measure = async (size: number, insert: (rows: Array<TelemetryRow>, token: string) => Promise<void>) => {
  for (let i = 0; i < 3; i++) await insert(batch(size), `warm-${size}-${i}`)
  const batches = Array.from({ length: Math.max(1, Math.round(readings / size)) }, () => batch(size))
  const cpu = process.cpuUsage()
  for (const [i, rows] of batches.entries()) await insert(rows, `b-${size}-${i}`)
  const used = process.cpuUsage(cpu)
  return (used.user + used.system) / (batches.length * size)
}

const dir = mkdtempSync(join(tmpdir(), "sluice-bench-batches-"))
console.log(`CPU µs per stored reading, ${readings} readings per line, 200 devices, 3 numeric fields\n`)
console.log("batch     readings only   TelemetryStore.insert (3 tables)   difference")
await Effect.runPromise(
  Effect.gen(function* () {
    const store = yield* TelemetryStore
    yield* ClickHouseTelemetryStore.make(ClickHouseTelemetryStore.embedded(dir, "alone")) // its schema
    const client = ClickHouseTelemetryStore.openClient({ _tag: "Embedded", path: dir })
    const readingsOnly = (rows: Array<TelemetryRow>, token: string) =>
      client
        .insert({
          table: "alone.telemetry",
          columns: [...telemetryColumns],
          values: rows.map(encodeRow).map((row) => telemetryColumns.map((c) => row[c])),
          format: "JSONCompactEachRow",
          clickhouse_settings: { insert_deduplication_token: token, max_partitions_per_insert_block: "0" },
        })
        .then(() => undefined)
    const all = (rows: Array<TelemetryRow>, token: string) => Effect.runPromise(store.insert(rows, token))
    for (const size of [1_000, 3_000, 10_000]) {
      const alone = yield* Effect.promise(() => measure(size, readingsOnly))
      const three = yield* Effect.promise(() => measure(size, all))
      console.log(
        `${String(size).padStart(6)}   ${alone.toFixed(1).padStart(10)} µs   ${three.toFixed(1).padStart(20)} µs` +
          `   ${`+${(three - alone).toFixed(1)} µs (${(((three - alone) * size) / 1000).toFixed(1)} ms per insert)`.padStart(32)}`,
      )
    }
    yield* Effect.promise(() => client.close())
  }).pipe(
    Effect.scoped,
    Effect.provide(ClickHouseTelemetryStore.layerWith(ClickHouseTelemetryStore.embedded(dir))),
  ),
)
rmSync(dir, { recursive: true, force: true })
