/**
 * The device list and the dead-letter list at fleet scale, over real HTTP: a tenant of 100,000
 * devices created through the admin API (a SQLite registry followed by a live Tenancy) with
 * readings stored in chDB for some of them. Pages are checked against a model of the fleet: the
 * first page field by field, and filtered queries followed through nextCursor to the end.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import * as DeadLetterCursor from "../../src/serving/deadletters/DeadLetterCursor.js"
import * as DeviceCursor from "../../src/serving/devices/DeviceCursor.js"
import * as DeviceList from "../../src/serving/devices/DeviceList.js"
import { type DeadLetter, type TelemetryRow, TelemetryStore } from "../../src/storage/TelemetryStore.js"
import type { PlatformConfig } from "../../src/tenancy/PlatformConfig.js"
import { Tenancy } from "../../src/tenancy/Tenancy.js"
import { polling } from "../support/polling.js"
import { adminServer, call } from "./adminHarness.js"

const OPERATOR = "operator-key-0123456789"
const ADMIN_A = "tenant-a-admin-0123456789"
const READ_A = "tenant-a-read-0123456789"
const ADMIN_B = "tenant-b-admin-0123456789"
const READ_C = "tenant-c-read-0123456789"

const config: PlatformConfig = {
  operator_keys: [OPERATOR],
  tenants: [
    { id: "tenant-a", api_keys: [ADMIN_A], read_keys: [READ_A] },
    { id: "tenant-b", api_keys: [ADMIN_B] },
    { id: "tenant-c", api_keys: [], read_keys: [READ_C] },
  ],
  device_classes: [
    { name: "climate", fields: { temperature: { type: "number" } } },
    { name: "meter", fields: { kwh: { type: "number" } } },
  ],
  devices: [],
}

const dataDir = mkdtempSync(join(tmpdir(), "sluice-devices-registry-"))
const storeDir = mkdtempSync(join(tmpdir(), "sluice-devices-store-"))
afterAll(() => {
  rmSync(dataDir, { recursive: true, force: true })
  rmSync(storeDir, { recursive: true, force: true })
})

// --- the fleet's model ------------------------------------------------------------------------

const FLEET = 100_000
const WINDOW = 300_000
const id = (i: number) => `dev-${String(i).padStart(6, "0")}`
const classOf = (i: number) => (i % 3 === 0 ? "meter" : "climate")
/** A device registered nowhere, with a recent reading stored: never listed. */
const GHOST = "dev-050000-ghost"
const DISABLED = 1
/** Devices [RUN_START, RUN_END) are all online: more than `DeviceList.scanBudget` in a row. */
const RUN_START = 60_000
const RUN_END = RUN_START + DeviceList.scanBudget + 5_000

interface Listed {
  readonly deviceId: string
  readonly deviceClass: string
  readonly enabled: boolean
  readonly lastSeen: number | null
  readonly online: boolean
}

/** The fleet as the list must show it, by index; `now` is when the readings were stored. */
const model = (now: number): ReadonlyArray<Listed> =>
  Array.from({ length: FLEET }, (_, i) => {
    // Every 97th device and a run longer than a request's scan budget were heard from within the
    // window; every 89th of the others an hour ago.
    const online = i % 97 === 0 || (i >= RUN_START && i < RUN_END)
    const lastSeen = online ? now - 60_000 - i : i % 89 === 0 ? now - 3_600_000 - i : null
    return { deviceId: id(i), deviceClass: classOf(i), enabled: i !== DISABLED, lastSeen, online }
  })

const reading = (deviceId: string, receivedAt: number, n: number): TelemetryRow => ({
  tenantId: "tenant-a",
  deviceId,
  deviceClass: "climate",
  msgId: `m-${n}`,
  ts: receivedAt - 5,
  receivedAt,
  values: { temperature: 20 },
})

const eventually = polling({ timeoutMs: 30_000, intervalMs: 100 })

/** Creates the fleet once per file (whichever test asks first) and returns its model. */
let seeded: ReadonlyArray<Listed> | undefined
const fleet = Effect.suspend(() => (seeded === undefined ? seed : Effect.succeed(seeded)))

const seed = Effect.gen(function* () {
  // Created newest id first, in two requests, so the list's order is the index's doing.
  const ids = Array.from({ length: FLEET }, (_, i) => FLEET - 1 - i)
  for (const half of [ids.slice(0, FLEET / 2), ids.slice(FLEET / 2)]) {
    const created = yield* call("POST", "/v1/devices/bulk", {
      key: ADMIN_A,
      json: half.map((i) => ({ id: id(i), class: classOf(i) })),
    })
    expect(created.status, created.text.slice(0, 300)).toBe(201)
  }
  for (const b of ["b-001", "b-002", "b-003"]) {
    expect(
      (yield* call("POST", "/v1/devices", { key: ADMIN_B, json: { id: b, class: "meter" } })).status,
    ).toBe(201)
  }
  expect((yield* call("POST", `/v1/devices/${id(DISABLED)}/disable`, { key: ADMIN_A })).status).toBe(200)
  const tenancy = yield* Tenancy
  yield* eventually(
    Effect.sync(() => tenancy.deviceIndex("tenant-a").all),
    (all) => all.length === FLEET && all[DISABLED]?.enabled === false,
  )

  const now = Date.now()
  const fleetModel = model(now)
  const rows = fleetModel.flatMap((d, i) => (d.lastSeen === null ? [] : [reading(d.deviceId, d.lastSeen, i)]))
  // An older reading of an online device changes nothing: last seen is the newest arrival.
  rows.push(reading(id(0), now - 7_200_000, -1), reading(GHOST, now - 1_000, -2))
  rows.push({ ...reading("b-001", now - 1_000, -3), tenantId: "tenant-b" })
  const store = yield* TelemetryStore
  yield* store.insert(rows, "devices-test-fleet")
  seeded = fleetModel
  return fleetModel
})

/** GET as tenant A's read key; the body as JSON. */
const list = (query: string, key = READ_A) => call("GET", `/v1/devices${query}`, { key })

/** Every page of a query, following nextCursor; the devices in order and the pages' totals. */
const everyPage = (query: string) =>
  Effect.gen(function* () {
    const devices: Array<Listed> = []
    const totals = new Set<number>()
    let cursor: string | undefined
    let pages = 0
    do {
      const sep = query === "" ? "?" : "&"
      const res = yield* list(cursor === undefined ? `?${query}` : `?${query}${sep}cursor=${cursor}`)
      expect(res.status, res.text.slice(0, 300)).toBe(200)
      devices.push(...res.json.devices)
      totals.add(res.json.total)
      cursor = res.json.nextCursor
      pages++
      expect(pages).toBeLessThan(1_000)
    } while (cursor !== undefined)
    return { devices, totals, pages }
  })

const median = (samples: Array<number>) => samples.sort((a, b) => a - b)[samples.length >> 1]!

const timed = (query: string) =>
  Effect.gen(function* () {
    for (let i = 0; i < 3; i++) yield* list(query)
    const samples: Array<number> = []
    for (let i = 0; i < 20; i++) {
      const start = performance.now()
      expect((yield* list(query)).status).toBe(200)
      samples.push(performance.now() - start)
    }
    return median(samples)
  })

// --- dead letters ---------------------------------------------------------------------------------

const t0 = Date.UTC(2025, 0, 1)

/** 300 letters: arrivals shared by six each, three shards, sequence numbers of 3 and 7 digits. */
const letters: ReadonlyArray<DeadLetter> = Array.from({ length: 300 }, (_, k) => ({
  tenantId: "tenant-a",
  deviceId: id(k % 4),
  receivedAt: t0 + (k % 50) * 1_000,
  shardId: `shardId-00000000000${k % 3}`,
  sequenceNumber: String(k % 2 === 0 ? 100 + k : 1_000_000 + k),
  reason: k % 5 === 0 ? `Temperature: expected a NUMBER (letter ${k})` : `humidity: above max (letter ${k})`,
  raw: `{"n":${k}}`,
}))

/** Newest first: arrival, shard, then sequence number as a decimal, all descending. */
const newestFirst = (a: DeadLetter, b: DeadLetter) =>
  b.receivedAt - a.receivedAt ||
  (a.shardId < b.shardId ? 1 : a.shardId > b.shardId ? -1 : 0) ||
  b.sequenceNumber.length - a.sequenceNumber.length ||
  (a.sequenceNumber < b.sequenceNumber ? 1 : a.sequenceNumber > b.sequenceNumber ? -1 : 0)

const shown = ({ tenantId: _, ...letter }: DeadLetter) => letter

const everyLetter = (query: string) =>
  Effect.gen(function* () {
    const all: Array<unknown> = []
    let cursor: string | undefined
    let pages = 0
    do {
      const res = yield* call(
        "GET",
        `/v1/dead-letters?${query}${cursor === undefined ? "" : `&cursor=${cursor}`}`,
        {
          key: READ_A,
        },
      )
      expect(res.status, res.text.slice(0, 300)).toBe(200)
      all.push(...res.json.deadLetters)
      cursor = res.json.nextCursor
      pages++
    } while (cursor !== undefined && pages < 200)
    return { all, pages }
  })

let lettersStored = false
const storeLetters = Effect.gen(function* () {
  if (lettersStored) return
  const store = yield* TelemetryStore
  yield* store.insertDeadLetters(letters, "devices-test-letters")
  yield* store.insertDeadLetters(
    [{ ...letters[0]!, tenantId: "tenant-b", deviceId: "b-001" }],
    "devices-test-b",
  )
  lettersStored = true
})

layer(adminServer(config, { dataDir, storeDir, database: "devices" }), {
  timeout: 120_000,
  excludeTestServices: true,
})("device and dead-letter lists at scale", (it) => {
  it.effect(
    "the first page: the 100 lowest ids with class, enabled, last seen and online; total counts all",
    () =>
      Effect.gen(function* () {
        const expected = yield* fleet
        const first = yield* list("")
        expect(first.status).toBe(200)
        expect(first.json.devices).toEqual(expected.slice(0, 100))
        expect(first.json.total).toBe(FLEET)
        expect(first.json.onlineWindowMs).toBe(WINDOW)
        expect(first.json.devices[0]).toMatchObject({ deviceId: id(0), online: true })
        expect(first.json.devices[DISABLED].enabled).toBe(false)
        const second = yield* list(`?cursor=${first.json.nextCursor}`)
        expect(second.json.devices).toEqual(expected.slice(100, 200))
        // The last page of a range has no cursor.
        const tail = yield* list(`?prefix=dev-0999&limit=60`)
        expect(tail.json.devices).toEqual(expected.slice(99_900, 99_960))
        const end = yield* list(`?prefix=dev-0999&limit=60&cursor=${tail.json.nextCursor}`)
        expect(end.json.devices).toEqual(expected.slice(99_960))
        expect(end.json.nextCursor).toBeUndefined()
        expect(end.json.total).toBe(100)
      }),
  )

  it.effect("status=online followed to the end: exactly the devices heard from within the window", () =>
    Effect.gen(function* () {
      const expected = yield* fleet
      const { devices, totals } = yield* everyPage("status=online&limit=1000")
      expect(devices).toEqual(expected.filter((d) => d.online))
      expect(devices.map((d) => d.deviceId)).not.toContain(GHOST)
      expect([...totals]).toEqual([FLEET])
    }),
  )

  it.effect("prefix, class and status together, followed to the end with an odd page size", () =>
    Effect.gen(function* () {
      const expected = yield* fleet
      const cases = [
        ["prefix=dev-01&class=meter&status=offline&limit=37", "dev-01", "meter", false],
        ["prefix=dev-0&class=climate&status=online&limit=50", "dev-0", "climate", true],
        ["class=meter&status=offline&limit=1000", "", "meter", false],
      ] as const
      for (const [query, prefix, deviceClass, online] of cases) {
        const matching = expected.filter(
          (d) => d.deviceId.startsWith(prefix) && d.deviceClass === deviceClass,
        )
        const { devices, totals } = yield* everyPage(query)
        expect(devices, query).toEqual(matching.filter((d) => d.online === online))
        expect([...totals], query).toEqual([matching.length])
      }
      const none = yield* list("?prefix=nope")
      expect(none.json).toEqual({ devices: [], total: 0, onlineWindowMs: WINDOW })
      expect((yield* list("?class=no-such-class")).json.total).toBe(0)
    }),
  )

  it.effect("a status page stops at the scan budget: short, with a cursor where it stopped", () =>
    Effect.gen(function* () {
      const expected = yield* fleet
      // From just before the run of online devices, offline ones are more than the budget away.
      const from = DeviceCursor.encode(id(RUN_START - 1))
      const short = yield* list(`?status=offline&limit=10&cursor=${from}`)
      expect(short.json.devices).toEqual([])
      expect(short.json.nextCursor).toBe(DeviceCursor.encode(id(RUN_START - 1 + DeviceList.scanBudget)))
      const next = yield* list(`?status=offline&limit=10&cursor=${short.json.nextCursor}`)
      expect(next.json.devices).toEqual(
        expected
          .slice(RUN_END)
          .filter((d) => !d.online)
          .slice(0, 10),
      )
      // Followed from the start, the pages still hold exactly the offline devices.
      const { devices } = yield* everyPage("status=offline&prefix=dev-0&class=climate&limit=1000")
      expect(devices).toEqual(expected.filter((d) => !d.online && d.deviceClass === "climate"))
    }),
  )

  it.effect("the index is built once per registry revision, not per request", () =>
    Effect.gen(function* () {
      yield* fleet
      const tenancy = yield* Tenancy
      const before = tenancy.deviceIndex("tenant-a")
      yield* list("?limit=5")
      expect(tenancy.deviceIndex("tenant-a")).toBe(before)
      expect(
        (yield* call("POST", "/v1/devices", { key: ADMIN_A, json: { id: "zz-new", class: "meter" } })).status,
      ).toBe(201)
      const revision = tenancy.revision()
      yield* eventually(
        Effect.sync(() => tenancy.revision()),
        (r) => r > revision,
      )
      // The first use at a new revision builds the index: sorting the tenant's 100,000 devices.
      const start = performance.now()
      const after = tenancy.deviceIndex("tenant-a")
      console.log(
        `device index of ${after.all.length} devices built in ${(performance.now() - start).toFixed(1)} ms`,
      )
      expect(after).not.toBe(before)
      expect(tenancy.deviceIndex("tenant-a")).toBe(after)
      expect(after.all.at(-1)?.deviceId).toBe("zz-new")
      expect((yield* list("?prefix=zz-")).json.devices.map((d: Listed) => d.deviceId)).toEqual(["zz-new"])
      expect((yield* call("DELETE", "/v1/devices/zz-new", { key: ADMIN_A })).status).toBe(204)
    }),
  )

  it.effect("another tenant sees only its devices; an operator key is refused", () =>
    Effect.gen(function* () {
      yield* fleet
      const b = yield* list("", ADMIN_B)
      expect(b.json.devices.map((d: Listed) => [d.deviceId, d.online])).toEqual([
        ["b-001", true],
        ["b-002", false],
        ["b-003", false],
      ])
      expect(b.json.total).toBe(3)
      expect((yield* list("", OPERATOR)).status).toBe(401)
    }),
  )

  it.effect("a bad limit, cursor, status, class or prefix is a 400 naming the parameter", () =>
    Effect.gen(function* () {
      const badCursor = "cursor: not a cursor this API handed out; pass back nextCursor unchanged"
      const cases: ReadonlyArray<readonly [string, string]> = [
        ["limit=0", "limit: expected an integer between 1 and 1000, got '0'"],
        ["limit=1001", "limit: expected an integer between 1 and 1000, got '1001'"],
        ["limit=ten", "limit: expected an integer between 1 and 1000, got 'ten'"],
        ["cursor=garbage", badCursor],
        ["cursor=d1.%21%21%21", badCursor],
        [`cursor=d1.${Buffer.from(JSON.stringify([42])).toString("base64url")}`, badCursor],
        [`cursor=l1.${Buffer.from(JSON.stringify([1, "s", "1"])).toString("base64url")}`, badCursor],
        ["status=asleep", "status: expected 'online' or 'offline', got 'asleep'"],
        ["class=", "class: expected a device class name, got ''"],
        [`prefix=${"x".repeat(101)}`, "prefix: at most 100 characters (device ids are 1-100), got 101"],
      ]
      for (const [query, message] of cases) {
        const res = yield* list(`?${query}`)
        expect(res.status, query).toBe(400)
        expect(res.json, query).toEqual({ _tag: "BadRequest", message })
      }
    }),
  )

  it.effect("measures the first page (median of 20 after warm-up)", () =>
    Effect.gen(function* () {
      yield* fleet
      const plain = yield* timed("")
      const online = yield* timed("?status=online")
      const offline = yield* timed("?status=offline")
      const filtered = yield* timed("?prefix=dev-05&class=meter&status=online")
      // The worst case: every device examined is online, up to the scan budget.
      const budget = yield* timed(`?status=offline&cursor=${DeviceCursor.encode(id(RUN_START - 1))}`)
      const deep = yield* timed(`?cursor=${DeviceCursor.encode(id(FLEET - 150))}`)
      console.log(
        `GET /v1/devices at ${FLEET} devices, median of 20: first page ${plain.toFixed(1)} ms, ` +
          `status=online ${online.toFixed(1)} ms, status=offline ${offline.toFixed(1)} ms, ` +
          `prefix+class+online ${filtered.toFixed(1)} ms, offline through the whole scan budget ` +
          `${budget.toFixed(1)} ms, a page near the end ${deep.toFixed(1)} ms`,
      )
      expect(plain).toBeGreaterThan(0)
    }),
  )

  it.effect(
    "nextCursor walks every letter once, newest first, ties broken by shard and sequence number",
    () =>
      Effect.gen(function* () {
        yield* storeLetters
        const { all, pages } = yield* everyLetter("limit=7")
        expect(all).toEqual([...letters].sort(newestFirst).map(shown))
        expect(pages).toBe(Math.ceil(300 / 7))
        const b = yield* call("GET", "/v1/dead-letters", { key: ADMIN_B })
        expect(b.json.deadLetters.map((l: { deviceId: string }) => l.deviceId)).toEqual(["b-001"])
        expect(b.json.nextCursor).toBeUndefined()
      }),
  )

  it.effect("filters by device (exact) and reason (substring, any case), across pages", () =>
    Effect.gen(function* () {
      yield* storeLetters
      const sorted = [...letters].sort(newestFirst)
      const byDevice = yield* everyLetter(`deviceId=${id(2)}&limit=9`)
      expect(byDevice.all).toEqual(sorted.filter((l) => l.deviceId === id(2)).map(shown))
      const both = yield* everyLetter(`deviceId=${id(0)}&reason=nUmBeR&limit=4`)
      const expected = sorted.filter((l) => l.deviceId === id(0) && l.reason.includes("NUMBER"))
      expect(expected.length).toBeGreaterThan(4)
      expect(both.all).toEqual(expected.map(shown))
      expect((yield* everyLetter(`deviceId=${id(0)}0`)).all).toEqual([])
    }),
  )

  it.effect("a bad limit, cursor, deviceId or reason is a 400 naming the parameter", () =>
    Effect.gen(function* () {
      const badCursor = "cursor: not a cursor this API handed out; pass back nextCursor unchanged"
      const device = (yield* list("?limit=1")).json.nextCursor as string
      const cases: ReadonlyArray<readonly [string, string]> = [
        ["limit=0", "limit: expected an integer between 1 and 1000, got '0'"],
        ["cursor=junk", badCursor],
        [`cursor=${device}`, badCursor],
        [`cursor=l1.${Buffer.from(JSON.stringify([1, "s", "12a"])).toString("base64url")}`, badCursor],
        ["deviceId=", "deviceId: expected 1 to 100 characters, got 0"],
        [`reason=${"r".repeat(201)}`, "reason: expected 1 to 200 characters, got 201"],
      ]
      for (const [query, message] of cases) {
        const res = yield* call("GET", `/v1/dead-letters?${query}`, { key: READ_A })
        expect(res.status, query).toBe(400)
        expect(res.json, query).toEqual({ _tag: "BadRequest", message })
      }
    }),
  )

  it.effect("dead letters at 100,000: a deep page and filtered pages read like the first", () =>
    Effect.gen(function* () {
      const many: ReadonlyArray<DeadLetter> = Array.from({ length: 100_000 }, (_, k) => ({
        tenantId: "tenant-c",
        deviceId: `c-${k % 1_000}`,
        receivedAt: t0 + k * 10,
        shardId: "shardId-000000000000",
        sequenceNumber: String(1_000_000 + k),
        reason: k % 1_000 === 7 ? `rare: checksum mismatch (${k})` : `temperature: above max (${k})`,
        raw: `{"k":${k}}`,
      }))
      const store = yield* TelemetryStore
      for (let i = 0; i < many.length; i += 25_000) {
        yield* store.insertDeadLetters(many.slice(i, i + 25_000), `devices-test-many-${i}`)
      }
      const sorted = [...many].reverse().map(shown)
      const get = (query: string) => call("GET", `/v1/dead-letters?${query}`, { key: READ_C })
      const deepCursor = DeadLetterCursor.encode(sorted[89_999]!)
      const deep = yield* get(`limit=100&cursor=${deepCursor}`)
      expect(deep.json.deadLetters).toEqual(sorted.slice(90_000, 90_100))
      const rare = yield* get("reason=CHECKSUM&limit=1000")
      expect(rare.json.deadLetters).toEqual(sorted.filter((l) => l.reason.startsWith("rare")))
      const device = yield* get("deviceId=c-42&limit=50")
      expect(device.json.deadLetters).toEqual(sorted.filter((l) => l.deviceId === "c-42").slice(0, 50))

      const timedLetters = (query: string) =>
        Effect.gen(function* () {
          for (let i = 0; i < 3; i++) yield* get(query)
          const samples: Array<number> = []
          for (let i = 0; i < 20; i++) {
            const start = performance.now()
            expect((yield* get(query)).status).toBe(200)
            samples.push(performance.now() - start)
          }
          return median(samples).toFixed(1)
        })
      console.log(
        `GET /v1/dead-letters at 100000 letters, median of 20: first page ${yield* timedLetters("")} ms, ` +
          `at 90000 ${yield* timedLetters(`cursor=${deepCursor}`)} ms, ` +
          `deviceId ${yield* timedLetters("deviceId=c-42")} ms, reason ${yield* timedLetters("reason=checksum")} ms`,
      )
    }),
  )

  it.effect("the OpenAPI document describes the list parameters and the 400", () =>
    Effect.gen(function* () {
      const doc = (yield* call("GET", "/openapi.json")).json
      for (const [path, params] of [
        ["/v1/devices", ["limit", "cursor", "prefix", "class", "status"]],
        ["/v1/dead-letters", ["limit", "cursor", "deviceId", "reason"]],
      ] as const) {
        const op = doc.paths[path].get
        expect(op.parameters.map((p: { name: string }) => p.name).sort(), path).toEqual([...params].sort())
        expect(Object.keys(op.responses), path).toContain("400")
      }
    }),
  )
})
