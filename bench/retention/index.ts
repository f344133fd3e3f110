/**
 * What expiring a tenant's oldest readings costs under each partitioning of `telemetry`, on
 * embedded chDB: the time of the expiry and the bytes of the tenant's data it rewrites.
 * Usage: npx tsx bench/retention/index.ts [--rows 10000000] [--days 60] [--devices 1000]
 *
 * One tenant, `rows` readings spread evenly over `days` days from 2026-01-01, merged (OPTIMIZE
 * FINAL: old data in a long-lived table is merged into big parts). Each variant gets its own copy
 * of the same rows and expires the oldest ones:
 * - PARTITION BY tenant_id: `ALTER TABLE … DELETE` (a mutation), a lightweight `DELETE FROM`
 *   (a mutation writing the `_row_exists` mask), a row TTL (`MODIFY TTL`, materialized);
 * - PARTITION BY (tenant_id, toMonday(ts)) and (tenant_id, toYYYYMM(ts)): `DROP PARTITION` of
 *   the partitions wholly before the cutoff.
 * "Rewritten" is the size of the active parts after the expiry that were not active before it
 * (system.part_log is off in chDB); "untouched" counts parts that survived with the same name.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { openClient } from "../../src/storage/ClickHouseTelemetryStore.js"

const { values: args } = parseArgs({
  options: {
    rows: { type: "string", default: "10000000" },
    days: { type: "string", default: "60" },
    devices: { type: "string", default: "1000" },
  },
})
const rows = Number(args.rows)
const days = Number(args.days)
const devices = Number(args.devices)
const day = 86_400_000
const start = Date.UTC(2026, 0, 1)
const db = "bench"
const dir = mkdtempSync(join(tmpdir(), "sluice-retention-bench-"))
const client = openClient({ _tag: "Embedded", path: dir })

const command = (query: string) => client.command({ query })
const select = async <A>(query: string) => (await client.query({ query, format: "JSONEachRow" })).json<A>()

const columns = `tenant_id LowCardinality(String), device_id String, device_class LowCardinality(String),
  msg_id String, ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)), received_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
  num Map(LowCardinality(String), Float64), str Map(LowCardinality(String), String),
  bool_fields Array(LowCardinality(String)), class_version UInt32`

const createTable = (name: string, partitionBy: string) =>
  command(`CREATE TABLE ${db}.${name} (${columns}) ENGINE = ReplacingMergeTree
           PARTITION BY ${partitionBy} ORDER BY (tenant_id, device_id, ts, msg_id)`)

interface Part {
  readonly name: string
  readonly partition: string
  readonly bytes: string
  readonly rows: string
}
const parts = (table: string) =>
  select<Part>(
    `SELECT name, partition, toString(bytes_on_disk) AS bytes, toString(rows) AS rows FROM system.parts
     WHERE database = '${db}' AND table = '${table}' AND active ORDER BY name`,
  )
const sum = (ps: ReadonlyArray<Part>, key: "bytes" | "rows") => ps.reduce((n, p) => n + Number(p[key]), 0)
const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`

const ms = (t: number) => `fromUnixTimestamp64Milli(toInt64(${t}), 'UTC')`

/** The rows once, inserted as 20 chronological batches (a live tenant's history), then merged. */
const fill = async () => {
  await createTable("source", "tenant_id")
  const chunks = 20
  for (let c = 0; c < chunks; c++) {
    const from = Math.floor((rows * c) / chunks)
    const to = Math.floor((rows * (c + 1)) / chunks)
    await command(
      `INSERT INTO ${db}.source SELECT 'acme', concat('dev-', toString(number % ${devices})), 'thermo',
         concat('m-', toString(number)), ${ms(start)} + toIntervalMillisecond(intDiv(number * ${days * day}, ${rows})),
         ${ms(start)} + toIntervalMillisecond(intDiv(number * ${days * day}, ${rows}) + 50),
         map('temperature', 20 + (number % 70) / 10, 'humidity', toFloat64(40 + number % 11)), map(), [], 1
       FROM numbers(${from}, ${to - from})`,
    )
  }
}

/** A copy of the source under `partitionBy`, merged as far as its partitions allow. */
const copy = async (name: string, partitionBy: string) => {
  await createTable(name, partitionBy)
  await command(`INSERT INTO ${db}.${name} SELECT * FROM ${db}.source`)
  await command(`OPTIMIZE TABLE ${db}.${name} FINAL`)
}

interface Outcome {
  readonly variant: string
  readonly cutoffDays: number
  readonly seconds: number
  readonly rewritten: number
  readonly untouched: string
  readonly removed: number
  readonly lateRows: number
  readonly partitions: number
}
const results: Array<Outcome> = []

const expire = async (
  variant: string,
  table: string,
  partitionBy: string,
  cutoffDays: number,
  run: (cutoff: number) => Promise<unknown>,
) => {
  await copy(table, partitionBy)
  const before = await parts(table)
  const cutoff = start + cutoffDays * day
  const t = performance.now()
  await run(cutoff)
  const seconds = (performance.now() - t) / 1000
  const after = await parts(table)
  const was = new Set(before.map((p) => p.name))
  const fresh = after.filter((p) => !was.has(p.name))
  const [late] = await select<{ n: string }>(
    `SELECT toString(count()) AS n FROM ${db}.${table} WHERE ts < ${ms(cutoff)}`,
  )
  results.push({
    variant,
    cutoffDays,
    seconds,
    rewritten: sum(fresh, "bytes"),
    untouched: `${after.length - fresh.length}/${before.length}`,
    removed: sum(before, "rows") - sum(after, "rows"),
    lateRows: Number(late?.n ?? 0),
    partitions: new Set(before.map((p) => p.partition)).size,
  })
  console.log(
    `${variant}: ${seconds.toFixed(2)} s, rewrote ${mb(sum(fresh, "bytes"))} of ${mb(sum(before, "bytes"))}`,
  )
  await command(`DROP TABLE ${db}.${table} SYNC`)
}

/** The partitions whose (tenant, period) lies wholly before the cutoff, as Retention.ts finds them. */
const dropWhollyBefore = async (table: string, periodEnd: (period: string) => number, cutoff: number) => {
  const ps = await parts(table)
  for (const partition of new Set(ps.map((p) => p.partition))) {
    const period = /,'?([0-9-]+)'?\)$/.exec(partition)?.[1]
    if (period !== undefined && periodEnd(period) <= cutoff) {
      await command(`ALTER TABLE ${db}.${table} DROP PARTITION ${partition}`)
    }
  }
}

const main = async () => {
  console.log(`${rows} rows, ${days} days, ${devices} devices, one tenant; chDB in ${dir}`)
  await command(`CREATE DATABASE ${db}`)
  let t = performance.now()
  await fill()
  console.log(`generated in ${((performance.now() - t) / 1000).toFixed(1)} s`)
  t = performance.now()
  await copy("probe", "tenant_id")
  console.log(`one copy + OPTIMIZE FINAL: ${((performance.now() - t) / 1000).toFixed(1)} s`)
  await command(`DROP TABLE ${db}.probe SYNC`)

  const where = (cutoff: number) => `tenant_id = 'acme' AND ts < ${ms(cutoff)}`
  await expire("tenant_id: ALTER TABLE DELETE", "t_delete", "tenant_id", 7, (c) =>
    command(`ALTER TABLE ${db}.t_delete DELETE WHERE ${where(c)} SETTINGS mutations_sync = 2`),
  )
  await expire("tenant_id: lightweight DELETE", "t_lwd", "tenant_id", 7, (c) =>
    command(`DELETE FROM ${db}.t_lwd WHERE ${where(c)} SETTINGS lightweight_deletes_sync = 2`),
  )
  await expire("tenant_id: row TTL (MODIFY TTL)", "t_ttl", "tenant_id", 7, (c) =>
    command(
      `ALTER TABLE ${db}.t_ttl MODIFY TTL toDateTime(ts) + INTERVAL ${Math.round((Date.now() - c) / day)} DAY
       SETTINGS mutations_sync = 2`,
    ),
  )
  const mondayEnd = (d: string) => Date.parse(`${d}T00:00:00Z`) + 7 * day
  await expire("(tenant_id, toMonday(ts)): DROP PARTITION", "t_week", "(tenant_id, toMonday(ts))", 7, (c) =>
    dropWhollyBefore("t_week", mondayEnd, c),
  )
  const monthEnd = (m: string) => Date.UTC(Number(m.slice(0, 4)), Number(m.slice(4)), 1)
  await expire("(tenant_id, toYYYYMM(ts)): DROP PARTITION", "t_month", "(tenant_id, toYYYYMM(ts))", 31, (c) =>
    dropWhollyBefore("t_month", monthEnd, c),
  )

  console.log(
    "\n| variant | cutoff (days in) | partitions | time | rewritten | parts untouched | rows removed | rows past cutoff kept |",
  )
  console.log("| --- | --: | --: | --: | --: | --: | --: | --: |")
  for (const r of results) {
    console.log(
      `| ${r.variant} | ${r.cutoffDays} | ${r.partitions} | ${r.seconds.toFixed(2)} s | ${mb(r.rewritten)} | ` +
        `${r.untouched} | ${r.removed.toLocaleString("en")} | ${r.lateRows.toLocaleString("en")} |`,
    )
  }
}

main()
  .catch((e) => {
    console.error(e)
    process.exitCode = 1
  })
  .finally(async () => {
    await client.close()
    rmSync(dir, { recursive: true, force: true })
  })
