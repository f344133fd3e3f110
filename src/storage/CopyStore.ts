/**
 * `sluice --copy-store-to URL`: copies the embedded store (chDB in `$SLUICE_DATA_DIR/chdb`) into a
 * ClickHouse server, the storage step of growing from one machine to the distributed shape
 * (docs/deploy.md). Run it with the platform stopped: chDB's directory is one process's.
 *
 * It first opens the store on the server, which creates the database and tables exactly as a
 * processor would, then has chDB — a full ClickHouse engine — stream each table to the server's
 * HTTP interface with the `url` table function (`INSERT … FORMAT TabSeparated`, which carries
 * every value, NaN and infinities included, and passes through any HTTP proxy). Nothing goes
 * through Node's memory. The credentials travel in headers, and the statement is not written to
 * chDB's query log. Running it twice leaves the rows counted once: every read uses FINAL on the
 * rows' identity. The server's latest readings and rollups, which the store's insert writes, are
 * then rebuilt from its readings (`Latest.backfill`, `Rollups.rebuild`).
 */
import { join } from "node:path"
import { Effect, Redacted } from "effect"
import { dataDir } from "../platform/DataDir.js"
import { openClient, make as openStore } from "./ClickHouseTelemetryStore.js"
import * as Latest from "./Latest.js"
import * as Rollups from "./Rollups.js"
import type { ClickHouseConfig } from "./StorageConfig.js"
import * as StorageConfig from "./StorageConfig.js"
import { StorageUnavailable } from "./TelemetryStore.js"

const TABLES = ["telemetry", "dead_letters"] as const

export interface Copied {
  readonly table: string
  /** Distinct rows (FINAL) in chDB, and on the server after the copy. */
  readonly source: number
  readonly target: number
}

const sqlString = (text: string) => `'${text.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`

/** Copies every table of `database` from chDB at `chdbPath` to the server `to`. */
export const copy = (chdbPath: string, to: ClickHouseConfig) =>
  Effect.gen(function* () {
    if (to.target._tag !== "Server") {
      return yield* new StorageUnavailable({ operation: "copy", reason: "the target must be a server URL" })
    }
    const server = to.target
    const db = to.database
    // The server's schema, as a processor creates it.
    yield* openStore(to)
    const source = yield* Effect.acquireRelease(
      Effect.sync(() => openClient({ _tag: "Embedded", path: chdbPath })),
      (client) => Effect.promise(() => client.close()),
    )
    const target = yield* Effect.acquireRelease(
      Effect.sync(() => openClient(server)),
      (client) => Effect.promise(() => client.close()),
    )
    const count = (client: typeof source, table: string) =>
      Effect.tryPromise({
        try: async () => {
          const result = await client.query({
            query: `SELECT count() AS n FROM ${db}.${table} FINAL`,
            format: "JSONEachRow",
          })
          return Number((await result.json<{ n: string }>())[0]?.n ?? 0)
        },
        catch: (cause) =>
          new StorageUnavailable({
            operation: `count ${table}`,
            reason: String((cause as Error).message ?? cause),
          }),
      })
    const headers = [
      ...(server.user === undefined ? [] : [`'X-ClickHouse-User'=${sqlString(server.user)}`]),
      ...(server.password === undefined
        ? []
        : [`'X-ClickHouse-Key'=${sqlString(Redacted.value(server.password))}`]),
    ]
    const copied: Array<Copied> = []
    for (const table of TABLES) {
      const url = new URL(server.url)
      url.searchParams.set("query", `INSERT INTO ${db}.${table} FORMAT TabSeparated`)
      const statement =
        `INSERT INTO FUNCTION url(${sqlString(url.toString())}, 'TabSeparated'` +
        `${headers.length === 0 ? "" : `, headers(${headers.join(", ")})`}) ` +
        `SELECT * FROM ${db}.${table} SETTINGS log_queries = 0`
      yield* Effect.tryPromise({
        try: () => source.command({ query: statement }),
        catch: (cause) =>
          new StorageUnavailable({
            operation: `copy ${table}`,
            reason: String((cause as Error).message ?? cause),
          }),
      })
      copied.push({ table, source: yield* count(source, table), target: yield* count(target, table) })
    }
    // The latest readings and the rollups are written by the store's insert, which the copy
    // bypasses: add the latest states of the server's readings (duplicates change nothing), and
    // recount its rollups (each reading once, FINAL), so a second copy counts nothing twice.
    const sql = Rollups.sqlOf(target, "rebuild device_latest and telemetry_rollup")
    yield* sql.command(Latest.backfill(db))
    yield* Rollups.rebuild(sql, db)
    return copied
  }).pipe(Effect.scoped)

/**
 * The command: chDB in SLUICE_DATA_DIR, the server at `url` with SLUICE_CLICKHOUSE_USER,
 * _PASSWORD, _DATABASE and _FSYNC (as a processor pointed at it would use).
 */
export const command = (url: string) =>
  Effect.gen(function* () {
    const settings = yield* StorageConfig.clickhouse
    const credentials = yield* StorageConfig.credentials
    const path = join(yield* dataDir, "chdb")
    const copied = yield* copy(path, { ...settings, target: { _tag: "Server", url, ...credentials } })
    for (const c of copied) {
      console.log(`${c.table}: ${c.source} rows in ${path}, ${c.target} on ${url} after the copy`)
    }
    return copied
  })
