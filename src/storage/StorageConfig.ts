/**
 * Storage tier configuration, read with Effect `Config`. Keys are snake_case under
 * `sluice.clickhouse`; from the environment they are upper-cased, e.g. `SLUICE_CLICKHOUSE_URL`.
 */
import { join } from "node:path"
import { Config, Option, type Redacted } from "effect"
import { dataDir } from "../platform/DataDir.js"

/** Where a ClickHouseTelemetryStore connects. */
export type ClickHouseTarget =
  /** In-process chDB bound to a data directory (one directory per process, see the store). */
  | { readonly _tag: "Embedded"; readonly path: string }
  /** A ClickHouse server (or a load balancer in front of a cluster) over HTTP(S). */
  | {
      readonly _tag: "Server"
      readonly url: string
      readonly user: string | undefined
      readonly password: Redacted.Redacted | undefined
    }

export interface ClickHouseConfig {
  readonly target: ClickHouseTarget
  /**
   * Database holding the tables; created at start if missing. An identifier (letters, digits,
   * `_`), because it is the one name the store writes into SQL text. Default `sluice`.
   */
  readonly database: string
  /**
   * `true` (default): fsync every inserted part and its directory before acknowledging, so a
   * row the stream has checkpointed past survives power loss, as the stream's own records do.
   * `false`: the OS flushes (survives a process crash, not power loss), about 3 ms less per
   * insert; reasonable on a replicated server.
   */
  readonly fsync: boolean
}

/** What a database name must look like to go into SQL unquoted. */
export const databaseNamePattern = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/

const key = <A>(c: Config.Config<A>) => c.pipe(Config.nested("clickhouse"), Config.nested("sluice"))
const optional = <A>(c: Config.Config<A>) => Config.option(c).pipe(Config.map(Option.getOrUndefined))

/** SLUICE_CLICKHOUSE_USER and _PASSWORD, whether or not SLUICE_CLICKHOUSE_URL is set. */
export const credentials = Config.all({
  user: key(optional(Config.string("user"))),
  password: key(optional(Config.redacted("password"))),
})

/**
 * The store's settings:
 * - SLUICE_CLICKHOUSE_URL: a server, e.g. `http://localhost:8123`; unset = embedded chDB at
 *   `${SLUICE_DATA_DIR}/chdb`.
 * - SLUICE_CLICKHOUSE_USER / SLUICE_CLICKHOUSE_PASSWORD: server credentials; unset = the
 *   client's defaults (user `default`, no password). Ignored by chDB.
 * - SLUICE_CLICKHOUSE_DATABASE: default `sluice`.
 * - SLUICE_CLICKHOUSE_FSYNC: default `true`.
 */
export const clickhouse: Config.Config<ClickHouseConfig> = Config.all({
  url: key(optional(Config.string("url"))),
  user: key(optional(Config.string("user"))),
  password: key(optional(Config.redacted("password"))),
  database: key(
    Config.string("database").pipe(
      Config.withDefault("sluice"),
      Config.validate({
        message: "must be 1-64 letters, digits or '_', not starting with a digit",
        validation: (s) => databaseNamePattern.test(s),
      }),
    ),
  ),
  fsync: key(Config.boolean("fsync").pipe(Config.withDefault(true))),
  dataDir,
}).pipe(
  Config.map(
    ({ url, user, password, database, fsync, dataDir }): ClickHouseConfig => ({
      target:
        url === undefined
          ? { _tag: "Embedded", path: join(dataDir, "chdb") }
          : { _tag: "Server", url, user, password },
      database,
      fsync,
    }),
  ),
)
