/**
 * Connection limits for the process's listeners, so that MQTT devices can never take the file
 * descriptors the HTTP listeners (`/metrics`, `/readyz`, ingest) and the rest of the process need.
 *
 * Every accepted connection is a file descriptor. Past the process's RLIMIT_NOFILE, accept fails
 * with EMFILE and libuv hides it: it keeps one spare descriptor, and at EMFILE frees it, accepts
 * and closes every pending connection on that listener, and reopens the spare — no event at all.
 * Every listener of the process is then deaf, the HTTP ones included. So the MQTT limit is derived
 * to stay below the fd limit by a reserve (`derive`), and every listener gets `guard`
 * (`src/platform/ConnectionGuard.ts`): a `maxConnections` refusal is the one Node reports
 * (`'drop'`), so it can be logged and counted. MQTT over TCP, TLS and WebSocket share one limit
 * (`ConnectionBudget`), so TLS and WebSocket listeners add nothing to the reserve: a WebSocket
 * connection is given back to the HTTP listener's own limit while it is an MQTT connection.
 */
import { Effect } from "effect"
import { fileDescriptorLimit, openFileDescriptors } from "../platform/ConnectionGuard.js"
import type { IngressConfig } from "./IngressConfig.js"

/**
 * Descriptors kept for what the process opens after the limit is derived: outbound sockets (the
 * Kinesis and ClickHouse HTTP agents, DNS), SQLite files opened lazily (spill, checkpoints, WAL
 * and shm files), log files, the listeners themselves, libuv's spare and its threadpool.
 */
export const BASE_RESERVE_FDS = 128

export interface LimitInputs {
  /** `mqtt_max_connections`: for the machine, every ingress worker together. */
  readonly machineMaxConnections: number
  /** Ingress worker processes sharing the MQTT port on this machine. */
  readonly workers: number
  /** One worker's soft fd limit; undefined = none known. */
  readonly fdLimit: number | undefined
  /** The sum of the `maxConnections` of this process's HTTP listeners. */
  readonly httpMaxConnections: number
  /** Descriptors already open when the limit is derived (stream, spill, store files); undefined = unknown. */
  readonly openFileDescriptors: number | undefined
}

export interface DerivedLimit extends LimitInputs {
  /** MQTT connections one worker accepts at once; at least 1. */
  readonly perWorker: number
  /** Descriptors kept from MQTT: `httpMaxConnections + openFileDescriptors + BASE_RESERVE_FDS`. */
  readonly reserve: number
  /** Whether the fd limit, rather than `mqtt_max_connections`, set `perWorker`. */
  readonly fdBound: boolean
}

/**
 * The MQTT connection limit of one ingress worker:
 *
 *     perWorker = max(1, min(floor(machineMaxConnections / workers), fdLimit − reserve))
 *     reserve   = httpMaxConnections + openFileDescriptors + BASE_RESERVE_FDS
 *
 * The machine's limit is split evenly (rounded down, so the workers together never exceed it); the
 * fd limit is per process, so it bounds each worker on its own. The reserve lets every HTTP
 * listener reach its own limit, keeps what is already open, and leaves `BASE_RESERVE_FDS` for what
 * opens later — with MQTT at its limit and HTTP at its, the process still has descriptors left.
 * At least 1, so a misconfigured machine refuses loudly rather than listening for nobody.
 */
export const derive = (inputs: LimitInputs): DerivedLimit => {
  const share = Math.floor(inputs.machineMaxConnections / inputs.workers)
  const reserve = inputs.httpMaxConnections + (inputs.openFileDescriptors ?? 0) + BASE_RESERVE_FDS
  const fdRoom = inputs.fdLimit === undefined ? Number.POSITIVE_INFINITY : inputs.fdLimit - reserve
  return {
    ...inputs,
    perWorker: Math.max(1, Math.min(share, fdRoom)),
    reserve,
    fdBound: fdRoom < share,
  }
}

/**
 * This worker's MQTT connection limit for the ingress settings and this process's fd limit, logged
 * with its inputs (a warning when the fd limit cuts it below the configured share).
 * `otherListenerConnections`: the limits of other HTTP listeners in this process (the serving
 * API's, when serving runs here too), reserved like the ingest listener's.
 */
export const mqttConnectionLimit = (
  config: IngressConfig,
  otherListenerConnections = 0,
): Effect.Effect<number> =>
  Effect.gen(function* () {
    const limit = derive({
      machineMaxConnections: config.mqttMaxConnections,
      workers: config.workers,
      fdLimit: fileDescriptorLimit(),
      httpMaxConnections: config.httpMaxConnections + otherListenerConnections,
      openFileDescriptors: openFileDescriptors(),
    })
    const annotations = {
      perWorker: limit.perWorker,
      mqttMaxConnections: limit.machineMaxConnections,
      workers: limit.workers,
      fdLimit: limit.fdLimit ?? null,
      reserve: limit.reserve,
      httpMaxConnections: limit.httpMaxConnections,
      openFileDescriptors: limit.openFileDescriptors ?? null,
      baseReserve: BASE_RESERVE_FDS,
    }
    const why = limit.fdBound
      ? `the fd limit ${limit.fdLimit} less a reserve of ${limit.reserve} (HTTP ${limit.httpMaxConnections}, ` +
        `open ${limit.openFileDescriptors ?? "unknown"}, base ${BASE_RESERVE_FDS}) is below the configured ` +
        `${limit.machineMaxConnections} over ${limit.workers} worker(s); raise \`ulimit -n\` or lower ` +
        `SLUICE_INGRESS_HTTP_MAX_CONNECTIONS`
      : `${limit.machineMaxConnections} over ${limit.workers} worker(s); fd limit ${limit.fdLimit ?? "unknown"}, ` +
        `reserve ${limit.reserve}`
    const message = `MQTT connection limit: ${limit.perWorker} per worker (${why})`
    yield* (limit.fdBound ? Effect.logWarning(message) : Effect.logInfo(message)).pipe(
      Effect.annotateLogs(annotations),
    )
    return limit.perWorker
  })

/**
 * The MQTT connection limit shared by every way MQTT arrives in this worker: plain TCP, TLS and
 * WebSocket take from one budget, so `perWorker` bounds them together and the reserve above holds
 * whichever transports devices use. A connection takes its place at accept (before a TLS
 * handshake or a WebSocket upgrade completes: a handshake in progress holds a descriptor too) and
 * gives it back when its socket closes.
 */
export class ConnectionBudget {
  private held = 0

  constructor(readonly limit: number) {}

  /** Connections holding a place now. */
  get inUse() {
    return this.held
  }

  /** Takes a place; false at the limit (the connection is to be refused). */
  take(): boolean {
    if (this.held >= this.limit) return false
    this.held += 1
    return true
  }

  /** Gives a place back; once per successful `take`. */
  release(): void {
    this.held -= 1
  }
}
