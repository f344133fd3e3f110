/**
 * Serving tier configuration, read with Effect `Config`. Keys are snake_case under `sluice.http`;
 * from the environment they are upper-cased, e.g. `SLUICE_HTTP_PORT`. The stream tail's keys
 * (`SLUICE_LIVE_TAIL_*`) are in `live/LiveTailConfig.ts`.
 */
import { Config } from "effect"

export interface HttpServingConfig {
  /** Interface to bind (SLUICE_HTTP_HOST). Default `0.0.0.0`: every interface. */
  readonly host: string
  /** TCP port of the REST API, WebSocket live feed, metrics and health (SLUICE_HTTP_PORT). Default 8080; 0 = any free port. */
  readonly port: number
  /**
   * Most connections the API listener holds at once (SLUICE_HTTP_MAX_CONNECTIONS); more are
   * refused at accept, logged and counted. Default 1024.
   */
  readonly maxConnections: number
}

const key = <A>(c: Config.Config<A>) => c.pipe(Config.nested("http"), Config.nested("sluice"))

/** The HTTP server's settings (SLUICE_HTTP_*). */
export const http: Config.Config<HttpServingConfig> = Config.all({
  host: key(Config.string("host").pipe(Config.withDefault("0.0.0.0"))),
  port: key(
    Config.integer("port").pipe(
      Config.withDefault(8080),
      Config.validate({ message: "must be between 0 and 65535", validation: (n) => n >= 0 && n <= 65535 }),
    ),
  ),
  maxConnections: key(
    Config.integer("max_connections").pipe(
      Config.withDefault(1024),
      Config.validate({ message: "must be at least 1", validation: (n) => n >= 1 }),
    ),
  ),
})
