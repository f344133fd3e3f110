/**
 * Prepares (or tops up) the console benchmark's data directory, in a process of its own: chDB
 * lets one process open a data directory, so this one generates, closes and exits before the
 * platform starts on the same directory.
 *
 * - `config.json`: a tenant with one admin key, a class `thermo` and a fleet of `--devices`
 *   devices `dev-1` … `dev-N` (the platform applies it to the registry at start, `--config`).
 * - On a fresh directory: `--readings` readings of `dev-1` (one per second up to now) and ten
 *   readings of every other device (one a minute), generated straight into `sluice.telemetry`
 *   with INSERT … SELECT FROM numbers(), each also into `latest_input` (so `device_latest` is
 *   kept as by the processor's inserts); the rollups recounted from the readings at the end of
 *   every run (`Rollups.rebuild`).
 * - Every run (fresh or kept): `dev-1` topped up from its newest reading to now, one a second, so
 *   its page's default range (the last 15 minutes) has data however old the directory is, and
 *   every even-numbered device one reading now, so half the fleet is online (5-minute window).
 *
 * Usage (from bench/console/index.ts): tsx bench/console/prepare.ts --dir DIR [--devices 100000]
 *   [--readings 10000000]. Prints one JSON line with what it did as its last line.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { Effect } from "effect"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import * as Rollups from "../../src/storage/Rollups.js"
import { TelemetryStore } from "../../src/storage/TelemetryStore.js"

const { values: args } = parseArgs({
  options: {
    dir: { type: "string" },
    devices: { type: "string", default: "100000" },
    readings: { type: "string", default: "10000000" },
  },
})
if (args.dir === undefined) throw new Error("--dir is required")
const dir = args.dir
const devices = Number(args.devices)
const readings = Number(args.readings)
const TENANT = "bench"
const db = "sluice"
const markerPath = join(dir, "prepared.json")

interface Marker {
  readonly devices: number
  readonly readings: number
  readonly generatedAt: number
}

const marker: Marker | undefined = existsSync(markerPath)
  ? (JSON.parse(readFileSync(markerPath, "utf8")) as Marker)
  : undefined
if (marker !== undefined && (marker.devices !== devices || marker.readings !== readings))
  throw new Error(
    `${dir} was prepared with --devices ${marker.devices} --readings ${marker.readings}: use another --dir`,
  )

const columns =
  "tenant_id, device_id, device_class, msg_id, ts, received_at, num, str, bool_fields, class_version"
// Values exact in binary (multiples of 1/8), received 250 ms after the device time.
const values = (n: string) =>
  `map('temperature', 15 + (${n} % 97) / 8, 'humidity', toFloat64(30 + ${n} % 41), 'battery', toFloat64(100 - ${n} % 100)),
   map(), [], 1`

const program = Effect.gen(function* () {
  // Opening the store creates the database and runs the migrations, as the platform's start does.
  yield* TelemetryStore
  const client = ClickHouseTelemetryStore.openClient({ _tag: "Embedded", path: join(dir, "chdb") })
  const done: Record<string, unknown> = {}
  yield* Effect.promise(async () => {
    // Every insert here writes `telemetry`; the same rows then go to `latest_input`, whose view
    // keeps `device_latest` as the store's insert does (all rows, not only each device's newest:
    // the same states). The rollups are recounted once at the end (`Rollups.rebuild`).
    const command = async (query: string, params: Record<string, unknown>, token: string) => {
      await client.command({
        query,
        query_params: params,
        clickhouse_settings: { insert_deduplication_token: token },
      })
      await client.command({
        query: query.replace(`INSERT INTO ${db}.telemetry (`, `INSERT INTO ${db}.latest_input (`),
        query_params: params,
      })
    }
    const rows = async <A>(query: string, params: Record<string, unknown> = {}) =>
      (await client.query({ query, query_params: params, format: "JSONEachRow" })).json<A>()

    const now = Date.now()
    if (marker === undefined) {
      // dev-1: `readings` readings, one a second, the newest one second ago.
      const started = performance.now()
      const first = now - readings * 1000
      const chunk = 2_000_000
      for (let from = 0; from < readings; from += chunk) {
        const count = Math.min(chunk, readings - from)
        await command(
          `INSERT INTO ${db}.telemetry (${columns})
           SELECT {tenant:String}, 'dev-1', 'thermo', concat('h-', toString(number)),
             fromUnixTimestamp64Milli(toInt64({first:Int64} + number * 1000), 'UTC'),
             fromUnixTimestamp64Milli(toInt64({first:Int64} + number * 1000 + 250), 'UTC'),
             ${values("number")}
           FROM numbers({from:UInt64}, {count:UInt64})`,
          { tenant: TENANT, first, from, count },
          `bench-console-heavy-${now}-${from}`,
        )
        console.log(
          `  dev-1: ${from + count} readings, ${((performance.now() - started) / 1000).toFixed(0)} s`,
        )
      }
      done.heavySeconds = (performance.now() - started) / 1000
      // Every other device: ten readings, one a minute, the newest 1-10 minutes ago (offline).
      const others = performance.now()
      await command(
        `INSERT INTO ${db}.telemetry (${columns})
         SELECT {tenant:String}, concat('dev-', toString(2 + intDiv(number, 10))), 'thermo',
           concat('o-', toString(number % 10)),
           fromUnixTimestamp64Milli(toInt64({now:Int64} - 60000 - (intDiv(number, 10) % 9) * 60000
             - (9 - number % 10) * 60000), 'UTC'),
           fromUnixTimestamp64Milli(toInt64({now:Int64} - 60000 - (intDiv(number, 10) % 9) * 60000
             - (9 - number % 10) * 60000 + 250), 'UTC'),
           ${values("number")}
         FROM numbers({count:UInt64})`,
        { tenant: TENANT, now: now - 600_000, count: (devices - 1) * 10 },
        `bench-console-others-${now}`,
      )
      done.othersSeconds = (performance.now() - others) / 1000
    }

    // Top-up: dev-1 from its newest reading to now (bounded to 30 days of seconds).
    const [newest] = await rows<{ ms: number | string }>(
      `SELECT toUnixTimestamp64Milli(max(ts)) AS ms FROM ${db}.telemetry
       WHERE tenant_id = {tenant:String} AND device_id = 'dev-1'`,
      { tenant: TENANT },
    )
    const from = Math.max(Number(newest?.ms ?? 0) + 1000, now - 30 * 86_400_000)
    const gap = Math.max(0, Math.floor((now - from) / 1000))
    if (gap > 0)
      await command(
        `INSERT INTO ${db}.telemetry (${columns})
         SELECT {tenant:String}, 'dev-1', 'thermo', concat('t-', toString({from:Int64} + number * 1000)),
           fromUnixTimestamp64Milli(toInt64({from:Int64} + number * 1000), 'UTC'),
           fromUnixTimestamp64Milli(toInt64({from:Int64} + number * 1000 + 250), 'UTC'),
           ${values("number")}
         FROM numbers({count:UInt64})`,
        { tenant: TENANT, from, count: gap },
        `bench-console-topup-${now}`,
      )
    done.heavyToppedUp = gap
    // Half the fleet online: every even-numbered device, one reading within the last minute.
    await command(
      `INSERT INTO ${db}.telemetry (${columns})
       SELECT {tenant:String}, concat('dev-', toString(2 + number * 2)), 'thermo',
         concat('n-', toString({now:Int64})),
         fromUnixTimestamp64Milli(toInt64({now:Int64} - number % 60000), 'UTC'),
         fromUnixTimestamp64Milli(toInt64({now:Int64} - number % 60000 + 250), 'UTC'),
         ${values("number")}
       FROM numbers({count:UInt64})`,
      { tenant: TENANT, now, count: Math.floor(devices / 2) },
      `bench-console-online-${now}`,
    )
    done.online = Math.floor(devices / 2)

    const rebuild = performance.now()
    await Effect.runPromise(Rollups.rebuild(Rollups.sqlOf(client, "rebuild telemetry_rollup"), db))
    done.rollupRebuildSeconds = (performance.now() - rebuild) / 1000

    // Let background merges settle here rather than in the measured platform (bounded: 2 min).
    const settle = performance.now()
    for (;;) {
      const [m] = await rows<{ n: number | string }>(
        `SELECT count() AS n FROM system.merges WHERE database = {db:String}`,
        { db },
      )
      if (Number(m?.n ?? 0) === 0 || performance.now() - settle > 120_000) break
      await new Promise((r) => setTimeout(r, 500))
    }
    done.mergeWaitSeconds = (performance.now() - settle) / 1000
    const [stored] = await rows<Record<string, number | string>>(
      `SELECT
         (SELECT count() FROM ${db}.telemetry WHERE tenant_id = {tenant:String} AND device_id = 'dev-1') AS heavyReadings,
         (SELECT count() FROM ${db}.telemetry WHERE tenant_id = {tenant:String}) AS tenantReadings,
         (SELECT uniqExact(device_id) FROM ${db}.device_latest WHERE tenant_id = {tenant:String}) AS devicesWithReadings,
         (SELECT count() FROM system.parts WHERE database = {db:String} AND table = 'telemetry' AND active) AS telemetryParts,
         (SELECT formatReadableSize(sum(bytes_on_disk)) FROM system.parts WHERE database = {db:String} AND active) AS onDisk`,
      { tenant: TENANT, db },
    )
    Object.assign(done, stored)
    await client.close()
  })
  return done
})

const writeConfig = () => {
  const config = {
    tenants: [{ id: TENANT, api_keys: ["bench-console-key-0123456789"] }],
    device_classes: [
      {
        name: "thermo",
        fields: {
          temperature: { type: "number", unit: "°C" },
          humidity: { type: "number", unit: "%" },
          battery: { type: "number", unit: "%" },
        },
      },
    ],
    devices: [],
    fleets: [
      {
        prefix: "dev-",
        count: devices,
        tenant: TENANT,
        class: "thermo",
        secret: "bench-console-fleet-0123456789",
      },
    ],
  }
  writeFileSync(join(dir, "config.json"), JSON.stringify(config, null, 2))
}

const started = performance.now()
writeConfig()
const done = await Effect.runPromise(
  Effect.scoped(program).pipe(
    Effect.provide(
      ClickHouseTelemetryStore.layerWith(ClickHouseTelemetryStore.embedded(join(dir, "chdb"), db)),
    ),
  ),
)
if (marker === undefined)
  writeFileSync(markerPath, JSON.stringify({ devices, readings, generatedAt: Date.now() } satisfies Marker))
console.log(
  JSON.stringify({ fresh: marker === undefined, seconds: (performance.now() - started) / 1000, ...done }),
)
