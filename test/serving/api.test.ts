/** The REST API over real HTTP against chDB: auth, tenant isolation, history, aggregates, latest, dead letters. */
import { expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { TelemetryStore } from "../../src/storage/TelemetryStore.js"
import { baseUrl, get, getAs, keyA, keyB, reading, TestServing, t0 } from "./harness.js"

const insert = (rows: Parameters<TelemetryStore["Type"]["insert"]>[0], token: string) =>
  Effect.flatMap(TelemetryStore, (store) => store.insert(rows, token))

layer(TestServing, { timeout: 120_000 })("serving REST API", (it) => {
  it.effect("refuses a missing or wrong key with 401 JSON, and accepts Bearer or X-Api-Key", () =>
    Effect.gen(function* () {
      const none = yield* get("/v1/devices")
      expect(none.status).toBe(401)
      expect(none.json).toEqual({ _tag: "Unauthorized", message: "missing or invalid API key" })
      const wrong = yield* getAs("not-a-real-key-at-all", "/v1/devices")
      expect(wrong.status).toBe(401)
      expect(wrong.json).toEqual(none.json)
      expect((yield* get("/v1/devices", { authorization: keyA })).status).toBe(401) // no "Bearer "
      expect((yield* getAs(keyA, "/v1/devices")).status).toBe(200)
      expect((yield* get("/v1/devices", { "x-api-key": keyA })).status).toBe(200)
      // A key in the URL is for the WebSocket only.
      expect((yield* get(`/v1/devices?api_key=${keyA}`)).status).toBe(401)
      // Auth comes before anything else: a bad query without a key is still a 401.
      expect((yield* get("/v1/devices/a-hist/telemetry?from=junk")).status).toBe(401)
    }),
  )

  it.effect("lists the tenant's devices only, with last seen from the store (null if never)", () =>
    Effect.gen(function* () {
      yield* insert([reading({ deviceId: "a-1", ts: t0, receivedAt: t0 + 777 })], "devices-1")
      const res = yield* getAs(keyA, "/v1/devices")
      expect(res.status).toBe(200)
      const devices = (res.json as { devices: Array<{ deviceId: string; lastSeen: number | null }> }).devices
      expect(devices.map((d) => d.deviceId).sort()).toEqual([
        "a-1",
        "a-2",
        "a-agg",
        "a-hist",
        "a-idle",
        "a-latest",
      ])
      expect(devices.find((d) => d.deviceId === "a-1")).toEqual({
        deviceId: "a-1",
        deviceClass: "climate",
        enabled: true,
        lastSeen: t0 + 777,
        online: false, // t0 is long past the online window
      })
      expect(devices.find((d) => d.deviceId === "a-idle")?.lastSeen).toBeNull()
      const b = (yield* getAs(keyB, "/v1/devices")).json as { devices: Array<{ deviceId: string }> }
      expect(b.devices.map((d) => d.deviceId)).toEqual(["b-1"])
    }),
  )

  it.effect("answers another tenant's device exactly like a missing one", () =>
    Effect.gen(function* () {
      yield* insert([reading({ tenantId: "tenant-b", deviceId: "b-1", ts: t0 })], "isolation-1")
      for (const suffix of ["telemetry", "aggregates?fn=avg", "latest"]) {
        const foreign = yield* getAs(keyA, `/v1/devices/b-1/${suffix}`)
        const missing = yield* getAs(keyA, `/v1/devices/no-such-device/${suffix}`)
        expect(foreign.status).toBe(404)
        expect(missing.status).toBe(404)
        expect(foreign.text).toBe(missing.text)
        expect(foreign.contentType).toBe(missing.contentType)
        expect(foreign.json).toEqual({ _tag: "DeviceNotFound", message: "device not found" })
        // Same call, owner's key: the device and its data are there.
        expect((yield* getAs(keyB, `/v1/devices/b-1/${suffix}`)).status).toBe(200)
      }
      // Validation does not leak existence either: bad parameters on a foreign device are a 404.
      expect((yield* getAs(keyA, "/v1/devices/b-1/telemetry?limit=0")).status).toBe(404)
    }),
  )

  it.effect("pages history by device time with a cursor, within [from, to)", () =>
    Effect.gen(function* () {
      const base = t0 + 86_400_000
      // Inserted newest first: the order of the answer is the store's, by device time.
      const rows = Array.from({ length: 25 }, (_, i) =>
        reading({ deviceId: "a-hist", ts: base + i * 1000, msgId: `h-${String(i).padStart(2, "0")}` }),
      ).reverse()
      yield* insert(rows, "history-1")
      const seen: Array<string> = []
      let cursor: string | undefined
      let pages = 0
      do {
        const query =
          `from=${new Date(base).toISOString()}&to=${base + 25_000}&limit=10` +
          (cursor === undefined ? "" : `&cursor=${encodeURIComponent(cursor)}`)
        const res = yield* getAs(keyA, `/v1/devices/a-hist/telemetry?${query}`)
        expect(res.status).toBe(200)
        const page = res.json as { readings: Array<{ msgId: string; ts: number }>; nextCursor?: string }
        expect(page.readings.length).toBe(pages < 2 ? 10 : 5)
        seen.push(...page.readings.map((r) => r.msgId))
        cursor = page.nextCursor
        pages++
      } while (cursor !== undefined && pages < 10)
      expect(pages).toBe(3)
      expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => `h-${String(i).padStart(2, "0")}`))

      // `to` is exclusive and `from` inclusive; epoch ms and ISO mean the same instant.
      const window = yield* getAs(
        keyA,
        `/v1/devices/a-hist/telemetry?from=${base + 5000}&to=${new Date(base + 8000).toISOString()}`,
      )
      const readings = (window.json as { readings: Array<{ msgId: string; values: unknown }> }).readings
      expect(readings.map((r) => r.msgId)).toEqual(["h-05", "h-06", "h-07"])
      expect(readings[0]).toEqual({
        deviceId: "a-hist",
        deviceClass: "climate",
        msgId: "h-05",
        ts: base + 5000,
        receivedAt: base + 5100,
        values: { temperature: 20, humidity: 50, door_open: false, label: "hall" },
      })
      // Defaults: the whole history, 100 per page.
      const all = (yield* getAs(keyA, "/v1/devices/a-hist/telemetry")).json as { readings: Array<unknown> }
      expect(all.readings.length).toBe(25)
    }),
  )

  it.effect("refuses bad history parameters with 400 and a message naming the parameter", () =>
    Effect.gen(function* () {
      const cases: Array<[string, string]> = [
        ["from=yesterday", "from: expected ISO-8601"],
        ["to=2025-01-01T10:00:00", "to: expected ISO-8601 with a time zone"],
        [`from=${t0 + 10}&to=${t0}`, "from must be before to"],
        [`from=${t0}&to=${t0}`, "from must be before to"],
        ["from=99999999999999999", "from: "],
        ["limit=0", "limit: expected an integer between 1 and 1000, got '0'"],
        ["limit=1001", "limit: expected an integer between 1 and 1000"],
        ["limit=ten", "limit: "],
        ["cursor=not-a-cursor", "cursor: "],
        ["cursor=h1.AAAA", "cursor: "],
      ]
      for (const [query, message] of cases) {
        const res = yield* getAs(keyA, `/v1/devices/a-hist/telemetry?${query}`)
        expect(res.status, query).toBe(400)
        expect((res.json as { _tag: string })._tag, query).toBe("BadRequest")
        expect((res.json as { message: string }).message, query).toContain(message)
      }
    }),
  )

  it.effect("aggregates buckets of the chosen functions and fields", () =>
    Effect.gen(function* () {
      const base = t0 + 2 * 86_400_000 // a whole minute boundary
      const at = (offset: number, temperature: number, humidity: number, door_open: boolean) =>
        reading({
          deviceId: "a-agg",
          ts: base + offset,
          values: { temperature, humidity, door_open, label: "x" },
        })
      yield* insert(
        [
          at(0, 10, 40, true),
          at(20_000, 20, 50, false),
          at(40_000, 30, 60, false),
          at(60_000, 40, 70, true),
          at(185_000, -5, 30, true),
        ],
        "aggregates-1",
      )
      const res = yield* getAs(
        keyA,
        `/v1/devices/a-agg/aggregates?from=${base}&to=${base + 300_000}&interval=1m&fn=avg,max,count&fields=temperature,humidity`,
      )
      expect(res.status).toBe(200)
      expect(res.json).toEqual({
        from: base,
        to: base + 300_000,
        intervalMs: 60_000,
        buckets: [
          {
            start: base,
            values: {
              avg_temperature: 20,
              avg_humidity: 50,
              max_temperature: 30,
              max_humidity: 60,
              count_temperature: 3,
              count_humidity: 3,
            },
          },
          {
            start: base + 60_000,
            values: {
              avg_temperature: 40,
              avg_humidity: 70,
              max_temperature: 40,
              max_humidity: 70,
              count_temperature: 1,
              count_humidity: 1,
            },
          },
          {
            start: base + 180_000,
            values: {
              avg_temperature: -5,
              avg_humidity: 30,
              max_temperature: -5,
              max_humidity: 30,
              count_temperature: 1,
              count_humidity: 1,
            },
          },
        ],
      })
      // Millisecond intervals, defaults (fn avg; every aggregatable field), booleans as 0/1.
      const wide = yield* getAs(
        keyA,
        `/v1/devices/a-agg/aggregates?from=${base}&to=${new Date(base + 300_000).toISOString()}&interval=300000`,
      )
      expect(wide.status).toBe(200)
      expect((wide.json as { buckets: unknown }).buckets).toEqual([
        { start: base, values: { avg_temperature: 19, avg_humidity: 50, avg_door_open: 0.6 } },
      ])
    }),
  )

  it.effect("refuses bad aggregate parameters with 400 and a specific message", () =>
    Effect.gen(function* () {
      const cases: Array<[string, string]> = [
        ["fields=pressure", "fields: 'pressure' is not a field of device class 'climate'"],
        ["fields=label", "fields: 'label' is a string field"],
        ["fn=median", "fn: expected a comma-separated list of avg, min, max, sum, count, got 'median'"],
        ["interval=fortnight", "interval: expected a positive duration"],
        ["interval=0s", "interval: expected a positive duration"],
        [`from=${t0}&to=${t0 + 86_400_000}&interval=1s`, "86400 buckets, more than 10000"],
        [`from=${t0}&to=${t0 - 1}`, "from must be before to"],
      ]
      for (const [query, message] of cases) {
        const res = yield* getAs(keyA, `/v1/devices/a-agg/aggregates?${query}`)
        expect(res.status, query).toBe(400)
        expect((res.json as { message: string }).message, query).toContain(message)
      }
      // 10,000 buckets exactly is allowed.
      const edge = yield* getAs(
        keyA,
        `/v1/devices/a-agg/aggregates?from=${t0}&to=${t0 + 10_000_000}&interval=1s`,
      )
      expect(edge.status).toBe(200)
    }),
  )

  it.effect("answers latest by device time, not by arrival; 404 when the device has none", () =>
    Effect.gen(function* () {
      const base = t0 + 3 * 86_400_000
      // The newer reading (by device time) arrives first and the older one after it.
      yield* insert(
        [reading({ deviceId: "a-latest", ts: base + 5000, receivedAt: base + 6000, msgId: "new" })],
        "l-1",
      )
      yield* insert(
        [reading({ deviceId: "a-latest", ts: base + 1000, receivedAt: base + 9000, msgId: "old" })],
        "l-2",
      )
      const res = yield* getAs(keyA, "/v1/devices/a-latest/latest")
      expect(res.status).toBe(200)
      expect(res.json).toMatchObject({ deviceId: "a-latest", msgId: "new", ts: base + 5000 })
      const none = yield* getAs(keyA, "/v1/devices/a-idle/latest")
      expect(none.status).toBe(404)
      expect(none.json).toEqual({ _tag: "NoReadings", message: "the device has no stored reading" })
    }),
  )

  it.effect("lists the tenant's own dead letters, newest first, with a limit", () =>
    Effect.gen(function* () {
      const store = yield* TelemetryStore
      const letter = (tenantId: string, n: number) => ({
        tenantId,
        deviceId: tenantId === "tenant-a" ? "a-1" : "b-1",
        receivedAt: t0 + n * 1000,
        shardId: "shard-0",
        sequenceNumber: String(100 + n),
        reason: `temperature: expected a number (letter ${n})`,
        raw: `{"temperature":"hot-${n}"}`,
      })
      yield* store.insertDeadLetters(
        [letter("tenant-a", 1), letter("tenant-a", 2), letter("tenant-b", 3)],
        "dl-1",
      )
      const res = yield* getAs(keyA, "/v1/dead-letters")
      expect(res.status).toBe(200)
      expect(res.json).toEqual({
        deadLetters: [2, 1].map((n) => {
          const { tenantId: _, ...rest } = letter("tenant-a", n)
          return rest
        }),
      })
      const one = (yield* getAs(keyA, "/v1/dead-letters?limit=1")).json as {
        deadLetters: Array<{ reason: string }>
      }
      expect(one.deadLetters.map((d) => d.reason)).toEqual(["temperature: expected a number (letter 2)"])
      const b = (yield* getAs(keyB, "/v1/dead-letters")).json as { deadLetters: Array<{ deviceId: string }> }
      expect(b.deadLetters.map((d) => d.deviceId)).toEqual(["b-1"])
      const bad = yield* getAs(keyA, "/v1/dead-letters?limit=-3")
      expect(bad.status).toBe(400)
      expect((bad.json as { message: string }).message).toContain("limit: ")
    }),
  )

  it.effect("does not serve device ingest: that is the ingress role's listener", () =>
    Effect.gen(function* () {
      const url = (yield* baseUrl) + "/v1/telemetry"
      const status = yield* Effect.promise(() =>
        fetch(url, {
          method: "POST",
          headers: { authorization: "Bearer a-1-secret", "content-type": "application/json" },
          body: JSON.stringify({ temperature: 21.5 }),
        }).then((r) => r.status),
      )
      expect(status).toBe(404)
    }),
  )
})
