/** The storage settings as the environment gives them (SLUICE_CLICKHOUSE_*, constant case). */
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, Redacted } from "effect"
import * as StorageConfig from "../../src/storage/StorageConfig.js"

const fromEnv = (env: Record<string, string>) =>
  Effect.withConfigProvider(
    ConfigProvider.fromMap(new Map(Object.entries(env)), { pathDelim: "_" }).pipe(
      ConfigProvider.constantCase,
    ),
  )

describe("StorageConfig", () => {
  it.effect("without a URL, runs chDB under the data directory, database sluice, fsync on", () =>
    Effect.gen(function* () {
      const config = yield* StorageConfig.clickhouse.pipe(fromEnv({ SLUICE_DATA_DIR: "/var/sluice" }))
      expect(config).toEqual({
        target: { _tag: "Embedded", path: join("/var/sluice", "chdb") },
        database: "sluice",
        fsync: true,
      })
    }),
  )

  it.effect("with a URL, connects to the server with the credentials, the password redacted", () =>
    Effect.gen(function* () {
      const config = yield* StorageConfig.clickhouse.pipe(
        fromEnv({
          SLUICE_CLICKHOUSE_URL: "http://ch:8123",
          SLUICE_CLICKHOUSE_USER: "ingest",
          SLUICE_CLICKHOUSE_PASSWORD: "s3cret",
          SLUICE_CLICKHOUSE_DATABASE: "telemetry_prod",
          SLUICE_CLICKHOUSE_FSYNC: "false",
        }),
      )
      expect(config.database).toBe("telemetry_prod")
      expect(config.fsync).toBe(false)
      expect(config.target._tag).toBe("Server")
      if (config.target._tag === "Server") {
        expect(config.target.url).toBe("http://ch:8123")
        expect(config.target.user).toBe("ingest")
        expect(String(config.target.password)).not.toContain("s3cret")
        expect(config.target.password && Redacted.value(config.target.password)).toBe("s3cret")
      }
    }),
  )

  it.effect("refuses a database name that is not an identifier", () =>
    Effect.gen(function* () {
      const result = yield* Effect.either(
        StorageConfig.clickhouse.pipe(fromEnv({ SLUICE_CLICKHOUSE_DATABASE: "x; DROP TABLE y" })),
      )
      expect(Either.isLeft(result)).toBe(true)
    }),
  )
})
