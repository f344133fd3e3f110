/**
 * `sluice migrate [--dry-run | --rebuild-rollups]`: applies the store's pending schema migrations
 * (`Migrations.ts`) to the configured store — chDB in `$SLUICE_DATA_DIR/chdb`, or the server at
 * SLUICE_CLICKHOUSE_URL (_USER, _PASSWORD, _DATABASE) — and prints each; `--dry-run` lists them
 * and changes nothing; `--rebuild-rollups` then recounts the rollups from the stored readings
 * (`Rollups.rebuild`: after a replay under another token, which makes rollup reads fall back to
 * raw, or readings stored by a Sluice that did not write them), with ingest stopped.
 * Every start migrates too; this runs the upgrade on its own, e.g. before rolling out processors.
 * On chDB run it with the platform stopped: the data directory is one process's.
 */
import { Effect, Logger, LogLevel } from "effect"
import { openClient } from "./ClickHouseTelemetryStore.js"
import * as Migrations from "./Migrations.js"
import * as Rollups from "./Rollups.js"
import * as StorageConfig from "./StorageConfig.js"
import { StorageUnavailable } from "./TelemetryStore.js"

export interface MigrateOptions {
  /** List the pending migrations, change nothing. */
  readonly dryRun: boolean
  /** After migrating, recount the rollups from the stored readings. */
  readonly rebuildRollups: boolean
}

/** Migrates (or lists), then rebuilds if asked; prints what it did; the process's exit code. */
export const run = ({ dryRun, rebuildRollups }: MigrateOptions): Effect.Effect<number> =>
  Effect.gen(function* () {
    const config = yield* StorageConfig.clickhouse
    const where =
      config.target._tag === "Embedded"
        ? `chDB in ${config.target.path}`
        : `${config.target.url}, database ${config.database}`
    const client = yield* Effect.acquireRelease(
      Effect.try({
        try: () => openClient(config.target),
        catch: (cause) => new StorageUnavailable({ operation: "open", reason: String(cause) }),
      }),
      (client) => Effect.promise(() => client.close()),
    )
    // The command prints each migration itself; the migrator's own log line would print it twice.
    const { from, pending } = yield* Migrations.migrate(client, config.database, { dryRun }).pipe(
      Logger.withMinimumLogLevel(LogLevel.Warning),
    )
    const newest = Migrations.migrations.at(-1)?.id ?? 0
    if (pending.length === 0) {
      console.log(`schema of ${where} is current (migration ${from})`)
    } else {
      for (const m of pending) {
        console.log(`${dryRun ? "pending" : "applied"} migration ${m.id}: ${m.name}`)
      }
      console.log(
        dryRun
          ? `${where} is at migration ${from}; \`sluice migrate\` (or any start) brings it to ${newest}`
          : `${where} migrated from ${from} to ${newest}`,
      )
    }
    if (rebuildRollups) {
      const started = performance.now()
      const months = yield* Rollups.rebuild(
        Rollups.sqlOf(client, "rebuild telemetry_rollup"),
        config.database,
      )
      const seconds = ((performance.now() - started) / 1000).toFixed(1)
      console.log(
        `rollups of ${where} recounted from the stored readings (${months} tenant-months) in ${seconds} s`,
      )
    }
    return 0
  }).pipe(
    Effect.scoped,
    Effect.catchAll((error) =>
      Effect.sync(() => {
        console.error(`sluice migrate: ${error.message}`)
        return 1
      }),
    ),
    Effect.catchAllDefect((defect) =>
      Effect.sync(() => {
        console.error(`sluice migrate: ${String(defect)}`)
        return 1
      }),
    ),
  )
