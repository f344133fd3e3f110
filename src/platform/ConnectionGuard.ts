/**
 * Limits on a listener's connections that are never silent: `guard` sets a `net.Server`'s
 * `maxConnections` and logs and counts every refused connection; `refusals` does the counting and
 * logging for a listener that refuses connections itself (MQTT over WebSocket);
 * `fileDescriptorLimit` and `openFileDescriptors` read what the process may still open. Every
 * listener of every role uses it (MQTT, MQTTS, HTTP ingest, the serving API); the MQTT limit is
 * derived from these in `src/ingress/ConnectionLimit.ts`.
 */
import { readdirSync, readFileSync } from "node:fs"
import http from "node:http"
import https from "node:https"
import type net from "node:net"
import tls from "node:tls"
import { HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer, Runtime, type Scope } from "effect"
import { Metrics } from "../observability/Metrics.js"
import type { ServerTls } from "./Tls.js"

/** At most one refusal line per listener this often; the line carries the count since the last. */
export const LOG_INTERVAL_MS = 10_000

/**
 * The process's soft RLIMIT_NOFILE, from `/proc/self/limits` ("Max open files"); undefined where
 * there is no such file (not Linux) or the limit is unlimited. Node raises the soft limit to the
 * hard one at start, so this is what `ulimit -n` allowed.
 */
export const fileDescriptorLimit = (): number | undefined => {
  try {
    const match = /^Max open files\s+(\d+)\s/m.exec(readFileSync("/proc/self/limits", "utf8"))
    return match === null ? undefined : Number(match[1])
  } catch {
    return undefined
  }
}

/** Descriptors the process holds now, from `/proc/self/fd`; undefined where there is none. */
export const openFileDescriptors = (): number | undefined => {
  try {
    // Listing the directory opens it: that descriptor is gone again once this returns.
    return readdirSync("/proc/self/fd").length - 1
  } catch {
    return undefined
  }
}

/**
 * Why a listener refused a connection (the `reason` label of `sluice_refused_connections_total`):
 * at its limit, out of file descriptors, another accept error, or a TLS handshake that failed (a
 * client that does not trust the certificate, speaks plain TCP to a TLS port, or gives up).
 */
export type RefusalReason = "limit" | "fd_exhausted" | "accept_error" | "tls_handshake"

const REASONS: ReadonlyArray<RefusalReason> = ["limit", "fd_exhausted", "accept_error", "tls_handshake"]

export interface GuardOptions {
  /** The `listener` label and the name in log lines: `mqtt`, `http`, … */
  readonly listener: string
  /** Connections the server holds at once; the next ones are closed at accept. At least 1. */
  readonly maxConnections: number
  /** Shortest time between two refusal lines of this listener. Default `LOG_INTERVAL_MS`. */
  readonly logIntervalMs?: number
}

/** Counts and logs a listener's refused connections; see `guard`. */
export interface Refusals {
  /** One refused connection: counted now, logged with the next line (rate-limited). */
  readonly refused: (
    reason: RefusalReason,
    detail?: { readonly remoteAddress?: string | undefined; readonly error?: string | undefined },
  ) => void
}

/**
 * The counting and logging of `guard`, for a listener that refuses connections itself: each one
 * counts in `sluice_refused_connections_total{listener, reason}`, and the log gets at most one line
 * per `logIntervalMs` with the count since the previous line (a flood must not become a log flood).
 */
export const refusals = (options: GuardOptions): Effect.Effect<Refusals, never, Metrics | Scope.Scope> =>
  Effect.gen(function* () {
    const metrics = yield* Metrics
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const { listener, maxConnections } = options
    const interval = options.logIntervalMs ?? LOG_INTERVAL_MS
    // prom-client hashes label objects on every inc; bound children do not.
    const counters = Object.fromEntries(
      REASONS.map((reason) => [reason, metrics.refusedConnections.labels({ listener, reason })]),
    ) as Record<RefusalReason, { inc: () => void }>

    const pending: Record<RefusalReason, number> = {
      limit: 0,
      fd_exhausted: 0,
      accept_error: 0,
      tls_handshake: 0,
    }
    let lastRemoteAddress: string | undefined
    let lastError: string | undefined
    let lastLineAt = Number.NEGATIVE_INFINITY
    let timer: NodeJS.Timeout | undefined
    let closed = false

    const flush = () => {
      timer = undefined
      const total = REASONS.reduce((sum, reason) => sum + pending[reason], 0)
      if (total === 0) return
      lastLineAt = Date.now()
      const parts = [
        pending.limit > 0 ? `${pending.limit} at its limit of ${maxConnections}` : undefined,
        pending.fd_exhausted > 0 ? `${pending.fd_exhausted} out of file descriptors` : undefined,
        pending.accept_error > 0 ? `${pending.accept_error} on accept errors` : undefined,
        pending.tls_handshake > 0 ? `${pending.tls_handshake} in the TLS handshake` : undefined,
      ].filter((part) => part !== undefined)
      const annotations = {
        listener,
        maxConnections,
        ...pending,
        lastRemoteAddress: lastRemoteAddress ?? null,
        lastError: lastError ?? null,
      }
      for (const reason of REASONS) pending[reason] = 0
      runFork(
        Effect.logWarning(`${listener} listener refused ${total} connection(s): ${parts.join(", ")}`).pipe(
          Effect.annotateLogs(annotations),
        ),
      )
    }

    const refused: Refusals["refused"] = (reason, detail) => {
      counters[reason].inc()
      if (closed) return
      if (detail?.remoteAddress !== undefined) lastRemoteAddress = detail.remoteAddress
      if (detail?.error !== undefined) lastError = detail.error
      pending[reason] += 1
      if (timer !== undefined) return
      const wait = lastLineAt + interval - Date.now()
      if (wait <= 0) return flush()
      timer = setTimeout(flush, wait)
      // A pending log line must not keep the process alive.
      timer.unref()
    }

    // Refusals after the scope closed are still counted. The waiting line is written now rather
    // than never, and no timer outlives the scope.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        clearTimeout(timer)
        flush()
      }),
    )
    return { refused }
  })

/**
 * Limits `server` to `maxConnections` and makes every refusal visible (`refusals`):
 *
 * - `limit`: Node's `'drop'` event, emitted when a connection arrives at `maxConnections` (it was
 *   accepted and is closed at once).
 * - `fd_exhausted` / `accept_error`: the `'error'` event Node emits with `syscall: "accept"`
 *   (EMFILE/ENFILE, or anything else). The listener stays open: Node does not close it, and this
 *   handler is what keeps such an error from being an uncaught exception. EMFILE reaches it only
 *   when libuv's spare descriptor is gone (see the module comment), so `fd_exhausted` is a lower
 *   bound — the derived MQTT limit is what keeps it at zero.
 * - `tls_handshake`: a `tls.Server`'s (or `https.Server`'s) `'tlsClientError'`.
 *
 * Works on any `net.Server`, `node:http`'s included. Under node:cluster it needs
 * `cluster.schedulingPolicy = cluster.SCHED_NONE` in the primary: with round-robin, a worker at its
 * limit answers "not accepted" and the primary re-offers the connection to the next worker, in a
 * loop while all are full, holding it open and emitting no `'drop'`. Returns the refusal counter,
 * for refusals the caller decides itself.
 */
export const guard = (
  server: net.Server,
  options: GuardOptions,
): Effect.Effect<Refusals, never, Metrics | Scope.Scope> =>
  Effect.gen(function* () {
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const { refused } = yield* refusals(options)
    const onDrop = (data?: net.DropArgument) => refused("limit", { remoteAddress: data?.remoteAddress })
    const onError = (error: NodeJS.ErrnoException) => {
      if (error.syscall !== "accept") {
        // Listen errors belong to whoever called listen; only say something if nobody listens.
        if (server.listenerCount("error") === 1)
          runFork(Effect.logError(`${options.listener} listener error: ${error.message}`))
        return
      }
      refused(error.code === "EMFILE" || error.code === "ENFILE" ? "fd_exhausted" : "accept_error", {
        error: error.code ?? error.message,
      })
    }
    const onTlsClientError = (error: Error, socket: tls.TLSSocket) =>
      refused("tls_handshake", { remoteAddress: socket.remoteAddress, error: error.message })

    server.maxConnections = options.maxConnections
    // The handlers stay, counting: an accept error after the scope closed must still not be uncaught.
    server.on("drop", onDrop)
    server.on("error", onError)
    if (server instanceof tls.Server) server.on("tlsClientError", onTlsClientError)
    return { refused }
  })

/**
 * A `node:http` server, or with `tls` a `node:https` one whose certificate follows the files
 * (`ServerTls.attach`), that `guard` limits to `maxConnections`, labelled `listener`. Not
 * listening yet.
 */
export const guardedNodeServer = (
  listener: string,
  maxConnections: number,
  tls?: ServerTls | undefined,
): Effect.Effect<http.Server, never, Metrics | Scope.Scope> =>
  Effect.gen(function* () {
    if (tls === undefined) {
      const server = http.createServer()
      yield* guard(server, { listener, maxConnections })
      return server
    }
    const server = https.createServer(tls.serverOptions())
    yield* guard(server, { listener, maxConnections })
    yield* tls.attach(server)
    return server
  })

/**
 * An HTTP server (`@effect/platform`'s `HttpServer`) on a `node:http` server that `guard` limits
 * to `maxConnections`, labelled `listener`; HTTPS with `tls` (`guardedNodeServer`).
 */
export const guardedServer = (
  listener: string,
  maxConnections: number,
  address: { readonly host: string; readonly port: number },
  tls?: ServerTls | undefined,
) =>
  Layer.unwrapScoped(
    Effect.map(guardedNodeServer(listener, maxConnections, tls), (server) =>
      NodeHttpServer.layer(() => server, address),
    ),
  )

/**
 * `HttpServer.withLogAddress`, saying `https://` when the listener is TLS (the platform's own
 * always says `http://`).
 */
export const withLogAddress =
  (secure: boolean) =>
  <A, E, R>(layer: Layer.Layer<A, E, R>): Layer.Layer<A, E, R | Exclude<HttpServer.HttpServer, A>> =>
    Layer.effectDiscard(
      HttpServer.addressFormattedWith((address) =>
        Effect.log(`Listening on ${secure ? address.replace(/^http:/, "https:") : address}`),
      ),
    ).pipe(Layer.provideMerge(layer))
