/**
 * `sluice migrate --rebuild-rollups`, run as the real command in its own process against a
 * ClickHouse server (chDB behind ClickHouse's HTTP interface in a separate process: a test peer,
 * not clickhouse-server): a replay under another token makes the rollups count readings twice,
 * so reads fall back to raw; the rebuild recounts them from the stored readings, and reads come
 * from the rollups again.
 */
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Logger, LogLevel } from "effect"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import type { ClickHouseConfig } from "../../src/storage/StorageConfig.js"
import { TelemetryStore } from "../../src/storage/TelemetryStore.js"
import { peerForFile } from "../support/clickhouseHttpPeer.js"
import { reading, t0 } from "./fixtures.js"

const root = fileURLToPath(new URL("../..", import.meta.url))

const peer = peerForFile()

const database = "rebuild"
const onServer = (): ClickHouseConfig => ({
  target: { _tag: "Server", url: peer().url, user: undefined, password: undefined },
  database,
  fsync: true,
})

const sluice = (...args: Array<string>) =>
  promisify(execFile)(process.execPath, ["--import", "tsx", "src/main.ts", ...args], {
    cwd: root,
    env: { ...process.env, SLUICE_CLICKHOUSE_URL: peer().url, SLUICE_CLICKHOUSE_DATABASE: database },
    timeout: 60_000,
  })

describe("sluice migrate --rebuild-rollups (against a ClickHouse HTTP test peer, not clickhouse-server)", () => {
  it.scoped(
    "recounts the rollups from the stored readings: a replay's double count is gone",
    () =>
      Effect.gen(function* () {
        const warnings: Array<unknown> = []
        const recordWarnings = Logger.replace(
          Logger.defaultLogger,
          Logger.make(({ logLevel, message }) => {
            if (LogLevel.greaterThanEqual(logLevel, LogLevel.Warning)) warnings.push(message)
          }),
        )
        const rows = Array.from({ length: 120 }, (_, i) => reading(t0 + i * 30_000, { values: { x: i } }))
        const q = {
          intervalMs: 3_600_000,
          fields: ["x"],
          fns: ["count", "sum"] as const,
          source: "rollup" as const,
        }
        const range = { from: t0, to: t0 + 2 * 3_600_000 }
        const answer = (store: typeof TelemetryStore.Service) =>
          store.aggregate("acme", "d1", range, q).pipe(Effect.provide(recordWarnings))
        const expected = [{ start: t0, values: { count_x: 120, sum_x: (119 * 120) / 2 } }]

        yield* Effect.gen(function* () {
          const store = yield* TelemetryStore
          yield* store.insert(rows, "shard-1:1-120")
          // The same readings re-cut into another batch (a crash before the checkpoint): stored
          // again under another token, hidden by FINAL, counted again by the rollups.
          yield* store.insert(rows.slice(0, 60), "shard-1:1-60")
          expect(yield* answer(store)).toEqual(expected)
          expect(warnings).toHaveLength(1) // the rollup's count did not match: answered from raw
        }).pipe(Effect.provide(ClickHouseTelemetryStore.layerWith(onServer())))

        const { stdout } = yield* Effect.promise(() => sluice("migrate", "--rebuild-rollups"))
        expect(stdout).toMatch(/schema of .* is current \(migration \d+\)/)
        expect(stdout).toMatch(
          /rollups of .* recounted from the stored readings \(1 tenant-months\) in [\d.]+ s/,
        )

        yield* Effect.gen(function* () {
          const store = yield* TelemetryStore
          warnings.length = 0
          expect(yield* answer(store)).toEqual(expected)
          expect(warnings).toEqual([]) // answered by the rollup
        }).pipe(Effect.provide(ClickHouseTelemetryStore.layerWith(onServer())))
      }),
    120_000,
  )
})
