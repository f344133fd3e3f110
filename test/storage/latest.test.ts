/**
 * `latest` and `activity` read `device_latest` (Latest.ts: argMax/max states of each batch's rows
 * that can win, kept by the store's insert; backfilled from the rows stored before). Their answers must
 * stay the ones of a scan of the raw table: latest by device time (ties by msg_id), last seen by
 * arrival, duplicates and redeliveries changing nothing, tenants and devices apart. On chDB: one
 * data directory for the file, a database per test.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Option, Schema } from "effect"
import { decodeRow, encodeRow, StoredRows, storedRowSelect } from "../../src/storage/ClickHouseTables.js"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import * as Latest from "../../src/storage/Latest.js"
import * as Migrations from "../../src/storage/Migrations.js"
import {
  type DeviceActivity,
  type TelemetryRow,
  TelemetryStore,
  type TelemetryStoreApi,
} from "../../src/storage/TelemetryStore.js"
import { everyValueType, rawSql, reading, t0 } from "./fixtures.js"

const dataDir = mkdtempSync(join(tmpdir(), "sluice-latest-"))
afterAll(() => rmSync(dataDir, { recursive: true, force: true }))

const config = (database: string) => ClickHouseTelemetryStore.embedded(dataDir, database)

let databases = 0
/** A store in a database of its own; its name is passed to the test for raw SQL. */
const withStore = <A, E>(test: (store: TelemetryStoreApi, database: string) => Effect.Effect<A, E>) => {
  const database = `latest_${++databases}`
  return Effect.flatMap(TelemetryStore, (store) => test(store, database)).pipe(
    Effect.provide(ClickHouseTelemetryStore.layerWith(config(database))),
  )
}

/** Raw SQL on the same chDB directory (a second session on the same path). */
const { raw, rawCount } = rawSql(() => ClickHouseTelemetryStore.openClient(config("unused").target))

const sqlString = (text: string) => `'${text.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`

/** The raw computation: the newest row by (ts, msg_id) of every device of `tenant`, from telemetry FINAL. */
const rawLatest = (database: string, tenant: string) =>
  Effect.gen(function* () {
    const rows = yield* raw(
      `SELECT device_id, ${storedRowSelect} FROM ${database}.telemetry FINAL
       WHERE tenant_id = ${sqlString(tenant)}
       ORDER BY device_id, ts DESC, msg_id DESC
       LIMIT 1 BY device_id
       SETTINGS output_format_json_quote_denormals = 1`,
    )
    const decoded = yield* Schema.decodeUnknown(StoredRows)(rows)
    return new Map(
      decoded.map((row, i) => [
        String(rows[i]!.device_id),
        decodeRow(tenant, String(rows[i]!.device_id), row),
      ]),
    )
  })

/** The raw computation of `activity`: the newest arrival of every device of `tenant`. */
const rawActivity = (database: string, tenant: string) =>
  Effect.map(
    raw(
      `SELECT device_id, toUnixTimestamp64Milli(max(received_at)) AS last_seen FROM ${database}.telemetry FINAL
       WHERE tenant_id = ${sqlString(tenant)} GROUP BY device_id ORDER BY device_id`,
    ),
    (rows): Array<DeviceActivity> =>
      rows.map((r) => ({ deviceId: String(r.device_id), lastSeen: Number(r.last_seen) })),
  )

/** Every device's `latest` and the tenant's `activity` equal the raw computation (and `expected`). */
const matchesRaw = (
  store: TelemetryStoreApi,
  database: string,
  tenant: string,
  devices: ReadonlyArray<string>,
) =>
  Effect.gen(function* () {
    const latest = yield* rawLatest(database, tenant)
    for (const device of devices) {
      expect(yield* store.latest(tenant, device)).toEqual(Option.fromNullable(latest.get(device)))
    }
    expect(yield* store.activity(tenant)).toEqual(yield* rawActivity(database, tenant))
    return latest
  })

/** A small deterministic PRNG (mulberry32), so a failure replays. */
const prng = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

describe("latest and last seen from device_latest", () => {
  it.scoped("latest is by device time with out-of-order arrivals; last seen by arrival", () =>
    withStore((store, database) =>
      Effect.gen(function* () {
        const newest = reading(t0 + 3000, { receivedAt: t0 + 3100, values: everyValueType })
        yield* store.insert([newest], "1")
        // A buffered reading: older device time, arrives later. Not latest; last seen moves.
        const late = reading(t0 + 1000, { receivedAt: t0 + 9000 })
        yield* store.insert([late], "2")
        expect(yield* store.latest("acme", "d1")).toEqual(Option.some(newest))
        expect(yield* store.activity("acme")).toEqual([{ deviceId: "d1", lastSeen: t0 + 9000 }])
        // Same device time, greater msg_id: the tie goes to it, as `ORDER BY ts DESC, msg_id DESC` did.
        const tie = reading(t0 + 3000, { msgId: "z", receivedAt: t0 + 8000, values: { t: 1 } })
        const tieLow = reading(t0 + 3000, { msgId: "a", receivedAt: t0 + 8500, values: { t: 2 } })
        yield* store.insert([tie, tieLow], "3")
        expect(yield* store.latest("acme", "d1")).toEqual(Option.some(tie))
        expect(yield* store.activity("acme")).toEqual([{ deviceId: "d1", lastSeen: t0 + 9000 }])
        // A newer device time arriving earlier than the last seen still becomes latest.
        const newer = reading(t0 + 5000, { receivedAt: t0 + 5001 })
        yield* store.insert([newer], "4")
        expect(yield* store.latest("acme", "d1")).toEqual(Option.some(newer))
        expect(yield* store.activity("acme")).toEqual([{ deviceId: "d1", lastSeen: t0 + 9000 }])
        yield* matchesRaw(store, database, "acme", ["d1"])
        expect(yield* store.latest("acme", "nope")).toEqual(Option.none())
      }),
    ),
  )

  it.scoped(
    "a tie on device time in one batch goes to the msg_id greatest in UTF-8, as ClickHouse orders it",
    () =>
      withStore((store, database) =>
        Effect.gen(function* () {
          // In UTF-16 (JavaScript's <) U+FF61 sorts after U+1F600's surrogates; in UTF-8 bytes before.
          const bmp = reading(t0, { msgId: "\uFF61", values: { t: 1 } })
          const astral = reading(t0, { msgId: "\u{1F600}", values: { t: 2 } })
          const early = reading(t0 - 1, {
            msgId: "\u{1F600}\u{1F600}",
            receivedAt: t0 + 900,
            values: { t: 3 },
          })
          for (const [i, batch] of [
            [bmp, astral, early],
            [astral, bmp, early],
            [early, bmp, astral],
          ].entries()) {
            yield* store.insert(batch, `tie-${i}`)
            expect(yield* store.latest("acme", "d1")).toEqual(Option.some(astral))
            expect(yield* store.activity("acme")).toEqual([{ deviceId: "d1", lastSeen: t0 + 900 }])
          }
          yield* matchesRaw(store, database, "acme", ["d1"])
        }),
      ),
  )

  it.scoped("a redelivered batch (same token, or replayed under another) changes nothing", () =>
    withStore((store, database) =>
      Effect.gen(function* () {
        // No merge may fold the duplicates away: the reads must answer right with them on disk.
        yield* raw(`SYSTEM STOP MERGES ${database}.telemetry`)
        yield* raw(`SYSTEM STOP MERGES ${database}.device_latest`)
        const first = [reading(t0 + 10, { receivedAt: t0 + 20 }), reading(t0 + 20, { deviceId: "d2" })]
        const second = [reading(t0 + 30, { receivedAt: t0 + 40 }), reading(t0 + 5, { deviceId: "d2" })]
        yield* store.insert(first, "shard:1-2")
        yield* store.insert(second, "shard:3-4")
        const latest = yield* store.latest("acme", "d1")
        const latest2 = yield* store.latest("acme", "d2")
        const activity = yield* store.activity("acme")
        expect(latest).toEqual(Option.some(second[0]))
        expect(latest2).toEqual(Option.some(first[1]))
        yield* store.insert(first, "shard:1-2")
        yield* store.insert(second, "shard:3-4")
        yield* store.insert([...first, ...second], "replay:1-4")
        expect(yield* rawCount(database)).toBe(8)
        // The replay's states are on disk beside the first ones. The same-token redelivery, dropped
        // from telemetry, may reach the view or not (on chDB 3.4 it does: 10 states here).
        expect(yield* rawCount(database, "device_latest")).toBeGreaterThanOrEqual(6)
        expect(yield* store.latest("acme", "d1")).toEqual(latest)
        expect(yield* store.latest("acme", "d2")).toEqual(latest2)
        expect(yield* store.activity("acme")).toEqual(activity)
        yield* matchesRaw(store, database, "acme", ["d1", "d2"])
      }),
    ),
  )

  it.scoped("two devices and two tenants stay apart", () =>
    withStore((store, database) =>
      Effect.gen(function* () {
        const rows = [
          reading(t0 + 100, { tenantId: "a", deviceId: "d1", receivedAt: t0 + 1, values: { t: 1 } }),
          reading(t0 + 200, { tenantId: "a", deviceId: "d2", receivedAt: t0 + 2, values: { t: 2 } }),
          reading(t0 + 300, { tenantId: "b", deviceId: "d1", receivedAt: t0 + 3, values: { t: 3 } }),
          reading(t0 + 50, { tenantId: "b", deviceId: "d2", receivedAt: t0 + 4, values: { t: 4 } }),
        ]
        yield* store.insert(rows, "mixed")
        expect(yield* store.latest("a", "d1")).toEqual(Option.some(rows[0]))
        expect(yield* store.latest("a", "d2")).toEqual(Option.some(rows[1]))
        expect(yield* store.latest("b", "d1")).toEqual(Option.some(rows[2]))
        expect(yield* store.latest("b", "d2")).toEqual(Option.some(rows[3]))
        expect(yield* store.activity("a")).toEqual([
          { deviceId: "d1", lastSeen: t0 + 1 },
          { deviceId: "d2", lastSeen: t0 + 2 },
        ])
        expect(yield* store.activity("b")).toEqual([
          { deviceId: "d1", lastSeen: t0 + 3 },
          { deviceId: "d2", lastSeen: t0 + 4 },
        ])
        for (const tenant of ["c", "A", "", "a' OR '1'='1"]) {
          expect(yield* store.latest(tenant, "d1")).toEqual(Option.none())
          expect(yield* store.activity(tenant)).toEqual([])
        }
        yield* matchesRaw(store, database, "a", ["d1", "d2"])
        yield* matchesRaw(store, database, "b", ["d1", "d2"])
      }),
    ),
  )

  it.scoped("equal the raw computation on random readings inserted in random order and batches", () =>
    withStore((store, database) =>
      Effect.gen(function* () {
        const random = prng(20_250_101)
        const int = (n: number) => Math.floor(random() * n)
        const tenants = ["a", "b"]
        const devices = ["d0", "d1", "d2", "d3", "d4", "d5"]
        // Device times on a coarse grid so ties on ts are common (msg_id decides); arrivals
        // independent of device time, so arrival order is not device-time order.
        const rows: Array<TelemetryRow> = Array.from({ length: 3000 }, (_, i) =>
          reading(t0 + int(400) * 10, {
            tenantId: tenants[int(tenants.length)]!,
            deviceId: devices[int(devices.length)]!,
            msgId: `m${int(1_000_000)}-${i}`,
            receivedAt: t0 + int(1_000_000),
            values:
              int(10) === 0
                ? everyValueType
                : { t: random() * 100, on: random() < 0.5, label: `l${int(5)}`, [`f${int(3)}`]: int(9) },
          }),
        )
        // Shuffled, cut into random batches; some batches redelivered with their token, some
        // replayed under another (different boundaries): FINAL counts them once, argMax/max too.
        for (let i = rows.length - 1; i > 0; i--) {
          const j = int(i + 1)
          ;[rows[i], rows[j]] = [rows[j]!, rows[i]!]
        }
        let at = 0
        let batch = 0
        while (at < rows.length) {
          const size = 1 + int(250)
          const slice = rows.slice(at, at + size)
          yield* store.insert(slice, `batch-${batch}`)
          if (int(4) === 0) yield* store.insert(slice, `batch-${batch}`)
          if (int(6) === 0) yield* store.insert(slice.slice(int(slice.length)), `replay-${batch}`)
          at += size
          batch++
          if (batch === 5) {
            for (const tenant of tenants) yield* matchesRaw(store, database, tenant, devices)
          }
        }
        for (const tenant of tenants) {
          const latest = yield* matchesRaw(store, database, tenant, devices)
          // And the raw computation is the intended one, computed here from the readings.
          for (const device of devices) {
            const mine = rows.filter((r) => r.tenantId === tenant && r.deviceId === device)
            const newest = mine.reduce((a, b) =>
              b.ts > a.ts || (b.ts === a.ts && b.msgId > a.msgId) ? b : a,
            )
            expect(latest.get(device)?.msgId).toBe(newest.msgId)
            const lastSeen = Math.max(...mine.map((r) => r.receivedAt))
            expect((yield* store.activity(tenant)).find((a) => a.deviceId === device)?.lastSeen).toBe(
              lastSeen,
            )
          }
        }
      }),
    ),
  )

  it.scoped("an installation at migration 2 with rows upgrades: latest answers from the backfill", () =>
    Effect.gen(function* () {
      const database = "at_migration_2"
      const client = yield* Effect.acquireRelease(
        Effect.sync(() => ClickHouseTelemetryStore.openClient(config(database).target)),
        (c) => Effect.promise(() => c.close()),
      )
      yield* Migrations.migrate(client, database, { migrations: Migrations.migrations.slice(0, 2) })
      const rows = [
        reading(t0 + 3000, { receivedAt: t0 + 3100, values: everyValueType, classVersion: 2 }),
        reading(t0 + 1000, { receivedAt: t0 + 9000 }),
        reading(t0 + 500, { deviceId: "d2", receivedAt: t0 + 600 }),
        reading(t0 + 700, { tenantId: "other", receivedAt: t0 + 800 }),
      ]
      yield* Effect.promise(() =>
        client.insert({
          table: `${database}.telemetry`,
          values: rows.map(encodeRow),
          format: "JSONEachRow",
          clickhouse_settings: { insert_deduplication_token: "before-3" },
        }),
      )
      expect((yield* raw(`SHOW TABLES FROM ${database}`)).map((r) => r.name)).not.toContain("device_latest")

      yield* Effect.gen(function* () {
        const store = yield* TelemetryStore
        // Backfilled: one state per device, read instead of telemetry.
        expect(yield* rawCount(database, "device_latest")).toBe(3)
        expect(yield* store.latest("acme", "d1")).toEqual(Option.some(rows[0]))
        expect(yield* store.latest("acme", "d2")).toEqual(Option.some(rows[2]))
        expect(yield* store.latest("other", "d1")).toEqual(Option.some(rows[3]))
        expect(yield* store.activity("acme")).toEqual([
          { deviceId: "d1", lastSeen: t0 + 9000 },
          { deviceId: "d2", lastSeen: t0 + 600 },
        ])
        // The store's insert took over: a new reading reaches latest.
        const after = reading(t0 + 4000, { receivedAt: t0 + 4001 })
        yield* store.insert([after], "after-3")
        expect(yield* store.latest("acme", "d1")).toEqual(Option.some(after))
        // The backfill run again (a copy into a server does so): it adds duplicate states only,
        // which merge to the same answers.
        yield* raw(`SYSTEM STOP MERGES ${database}.device_latest`)
        yield* raw(Latest.backfill(database))
        expect(yield* rawCount(database, "device_latest")).toBeGreaterThan(3)
        expect(yield* store.latest("acme", "d1")).toEqual(Option.some(after))
        yield* matchesRaw(store, database, "acme", ["d1", "d2"])
        yield* matchesRaw(store, database, "other", ["d1"])
      }).pipe(Effect.provide(ClickHouseTelemetryStore.layerWith(config(database))))
    }),
  )
})
