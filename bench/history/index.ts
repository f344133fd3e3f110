/**
 * History reads at scale: 100 million readings (10,000 devices × 10,000, one every 5 minutes, so
 * ~35 days per device) generated straight into the embedded store, then p50 and p99 of each read
 * the API serves, beside the raw-scan path it replaced, in the same run.
 *
 * Usage: npx tsx bench/history/index.ts [--devices 10000] [--per-device 10000] [--runs 50]
 *          [--raw-runs 5] [--dense 2000000] [--dir DIR]
 * Besides the fleet, one device of another tenant reads every second (`--dense` readings, 23
 * days at 2,000,000): the aggregates are measured on it too, where raw has many rows to read.
 * With --dir the data is kept there and reused by the next run with the same --dir (generation
 * takes minutes); without it a temporary directory is used and removed.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { Effect } from "effect"
import { page } from "../../src/serving/devices/DeviceList.js"
import { storedRowSelect } from "../../src/storage/ClickHouseTables.js"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import { TelemetryStore, type TelemetryStoreApi } from "../../src/storage/TelemetryStore.js"
import type { DeviceIndex, IndexedDevice } from "../../src/tenancy/Tenancy.js"
import { deviceId, type Fleet, generate } from "./generate.js"

const { values: args } = parseArgs({
  options: {
    devices: { type: "string", default: "10000" },
    "per-device": { type: "string", default: "10000" },
    runs: { type: "string", default: "50" },
    "raw-runs": { type: "string", default: "5" },
    dense: { type: "string", default: "2000000" },
    dir: { type: "string" },
  },
})
const runs = Number(args.runs)
const rawRuns = Number(args["raw-runs"])
const day = 86_400_000
const db = "bench"
// A fixed end (not now) so a kept directory answers the same queries in every run.
const fleet: Fleet = {
  tenant: "acme",
  devices: Number(args.devices),
  perDevice: Number(args["per-device"]),
  end: Date.UTC(2026, 10, 1),
  stepMs: 300_000,
}
/** One device (`dev-00000` of tenant "dense") reading every second up to `fleet.end`. */
const dense: Fleet = {
  tenant: "dense",
  devices: 1,
  perDevice: Number(args.dense),
  end: fleet.end,
  stepMs: 1_000,
}
const dir = args.dir ?? mkdtempSync(join(tmpdir(), "sluice-bench-history-"))
const fresh = !existsSync(join(dir, "generated"))

// A deterministic sequence, so two runs ask the same questions.
let seed = 42
const random = () => {
  seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648
  return seed / 2_147_483_648
}
const anyDevice = () => deviceId(Math.floor(random() * fleet.devices))
/** A range of `span` ms ending at a random (unaligned) instant of the data's last 35 days. */
const anyRange = (span: number) => {
  const to = fleet.end - Math.floor(random() * 5 * day)
  return { from: to - span, to }
}

const quantile = (sorted: ReadonlyArray<number>, q: number) =>
  sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? Number.NaN

/** Runs `query` `n` times after one warm-up; prints p50/p99 in ms and returns the p50. */
const measure = async (label: string, n: number, query: () => Promise<unknown>) => {
  await query()
  const times: Array<number> = []
  for (let i = 0; i < n; i++) {
    const started = performance.now()
    await query()
    times.push(performance.now() - started)
  }
  times.sort((a, b) => a - b)
  const [p50, p99] = [quantile(times, 0.5), quantile(times, 0.99)]
  console.log(
    `${label.padEnd(58)} p50 ${p50.toFixed(1).padStart(8)} ms   p99 ${p99.toFixed(1).padStart(8)} ms   (n=${n})`,
  )
  return p50
}

const program = Effect.gen(function* () {
  const store: TelemetryStoreApi = yield* TelemetryStore
  const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(effect)
  const client = ClickHouseTelemetryStore.openClient({ _tag: "Embedded", path: join(dir, "chdb") })
  const sql = async (query: string, params: Record<string, unknown> = {}) =>
    (await client.query({ query, query_params: params, format: "JSONEachRow" })).json<
      Record<string, unknown>
    >()

  yield* Effect.promise(async () => {
    if (fresh) {
      console.log(`generating ${fleet.devices} devices × ${fleet.perDevice} readings into ${dir}`)
      let last = 0
      await generate(client, db, fleet, (done, seconds) => {
        if (seconds - last >= 30 || done === fleet.devices) {
          last = seconds
          const rows = done * fleet.perDevice
          console.log(
            `  ${done} devices, ${rows} readings, ${seconds.toFixed(0)} s, ${Math.round(rows / seconds)}/s`,
          )
        }
      })
      if (dense.perDevice > 0) {
        console.log(`generating 1 device × ${dense.perDevice} readings (one a second)`)
        await generate(client, db, dense, (_, seconds) => console.log(`  done, ${seconds.toFixed(0)} s`))
      }
      mkdirSync(join(dir, "generated"))
    }
    const [sizes] = await sql(
      `SELECT sumIf(rows, table = 'telemetry') AS readings,
              formatReadableSize(sumIf(bytes_on_disk, table = 'telemetry')) AS raw,
              formatReadableSize(sumIf(bytes_on_disk, table = 'telemetry_rollup')) AS rollups,
              formatReadableSize(sumIf(bytes_on_disk, table = 'device_latest')) AS latest
       FROM system.parts WHERE database = {db:String} AND active`,
      { db },
    )
    console.log(`stored: ${JSON.stringify(sizes)}`)
    // Measure the steady state, not the minutes after a bulk load while merges catch up.
    const settling = performance.now()
    for (;;) {
      const [busy] = await sql(
        `SELECT (SELECT count() FROM system.merges WHERE database = {db:String}) AS merges,
                (SELECT count() FROM system.parts WHERE database = {db:String} AND active) AS parts`,
        { db },
      )
      const waited = (performance.now() - settling) / 1000
      if (Number(busy?.merges) === 0 || waited > 900) {
        console.log(`merges settled after ${waited.toFixed(0)} s: ${busy?.parts} active parts`)
        break
      }
      await new Promise((resolve) => setTimeout(resolve, 5_000))
    }

    // The registry's sorted index, as the serving role builds it once per registry revision.
    const all: Array<IndexedDevice> = Array.from({ length: fleet.devices }, (_, i) => ({
      tenantId: fleet.tenant,
      deviceId: deviceId(i),
      deviceClass: "thermo",
      enabled: true,
    }))
    const index: DeviceIndex = { all, byClass: new Map([["thermo", all]]) }
    const t = fleet.tenant

    console.log("\nlatest reading of a device")
    await measure("  device_latest (the API)", runs, () => run(store.latest(t, anyDevice())))
    await measure("  raw: telemetry FINAL, newest by ts", rawRuns, () =>
      sql(
        `SELECT ${storedRowSelect} FROM ${db}.telemetry FINAL
         WHERE tenant_id = {t:String} AND device_id = {d:String} ORDER BY ts DESC, msg_id DESC LIMIT 1
         SETTINGS do_not_merge_across_partitions_select_final = 1`,
        { t, d: anyDevice() },
      ),
    )

    console.log("\ndevice list, first page of 100 with last seen")
    const onlineSince = fleet.end - 300_000
    await measure("  registry index + device_latest (the API)", runs, () =>
      run(page(store, t, index, { limit: 100, prefix: "", onlineSince })),
    )
    await measure("  status=online (the API)", runs, () =>
      run(page(store, t, index, { limit: 100, prefix: "", onlineSince, status: "online" })),
    )
    await measure("  raw: GROUP BY over the tenant's telemetry FINAL", rawRuns, () =>
      sql(
        `SELECT device_id, max(received_at) FROM ${db}.telemetry FINAL WHERE tenant_id = {t:String}
         GROUP BY device_id ORDER BY device_id
         SETTINGS do_not_merge_across_partitions_select_final = 1`,
        { t },
      ),
    )

    const fields = ["temperature", "humidity"]
    const fns = ["avg", "min", "max", "count"] as const
    for (const [label, span, intervalMs] of [
      ["1-day aggregate at 1-minute buckets", day, 60_000],
      ["30-day aggregate at 1-hour buckets", 30 * day, 3_600_000],
    ] as const) {
      console.log(`\n${label} (2 fields × avg, min, max, count; unaligned range)`)
      await measure("  the API (raw below 250,000 stored rows, else rollup)", runs, () =>
        run(store.aggregate(t, anyDevice(), anyRange(span), { intervalMs, fields, fns })),
      )
      await measure("  rollup + raw edges, forced", runs, () =>
        run(store.aggregate(t, anyDevice(), anyRange(span), { intervalMs, fields, fns, source: "rollup" })),
      )
      await measure("  raw: telemetry FINAL", rawRuns * 4, () =>
        run(store.aggregate(t, anyDevice(), anyRange(span), { intervalMs, fields, fns, source: "raw" })),
      )
    }

    if (dense.perDevice > 0) {
      const span = Math.min(30 * day, dense.perDevice * dense.stepMs - day)
      for (const [label, range, intervalMs] of [
        ["1-day aggregate at 1-minute buckets", day, 60_000],
        [`${Math.round(span / day)}-day aggregate at 1-hour buckets`, span, 3_600_000],
      ] as const) {
        console.log(`\none device with ${dense.perDevice} readings (1/s): ${label}`)
        const r = () => {
          const to = fleet.end - Math.floor(random() * (dense.perDevice * dense.stepMs - range))
          return { from: to - range, to }
        }
        await measure("  the API", runs, () =>
          run(store.aggregate("dense", deviceId(0), r(), { intervalMs, fields, fns })),
        )
        await measure("  raw: telemetry FINAL", rawRuns * 4, () =>
          run(store.aggregate("dense", deviceId(0), r(), { intervalMs, fields, fns, source: "raw" })),
        )
      }
      await measure("  latest (device_latest)", runs, () => run(store.latest("dense", deviceId(0))))
    }

    console.log("\nhistory page of 1,000 readings (30-day range)")
    await measure("  first page", runs, () =>
      run(store.history(t, anyDevice(), anyRange(30 * day), { limit: 1000 })),
    )
    await measure("  five pages in turn by cursor (total)", runs, async () => {
      const d = anyDevice()
      const range = anyRange(30 * day)
      let cursor: string | undefined
      for (let i = 0; i < 5; i++) {
        const p = await run(store.history(t, d, range, { limit: 1000, cursor }))
        cursor = p.nextCursor
      }
    })
  })
  yield* Effect.promise(() => client.close())
})

try {
  await Effect.runPromise(
    Effect.scoped(program).pipe(
      Effect.provide(
        ClickHouseTelemetryStore.layerWith(ClickHouseTelemetryStore.embedded(join(dir, "chdb"), db)),
      ),
    ),
  )
} finally {
  if (args.dir === undefined) rmSync(dir, { recursive: true, force: true })
}
