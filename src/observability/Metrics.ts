/**
 * The platform's Prometheus metrics (prom-client), one registry per process. Tiers record into
 * these; serving exposes them at /metrics. Names follow Prometheus conventions (unit suffixes).
 */
import { Context, Effect, Layer } from "effect"
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client"

export interface MetricsApi {
  readonly registry: Registry
  /** Messages accepted by ingress (durably appended), by transport. */
  readonly ingested: Counter<"transport">
  /** Messages refused by ingress, by transport and reason (auth, forbidden, malformed, too_large, pushback, unavailable). */
  readonly refused: Counter<"transport" | "reason">
  /**
   * Connections a listener closed at accept, by listener (mqtt, http, …) and reason (limit,
   * fd_exhausted, accept_error); see `src/ingress/ConnectionLimit.ts`.
   */
  readonly refusedConnections: Counter<"listener" | "reason">
  /** Messages held back (MQTT: PUBACK delayed) because their tenant is over its ingest quota. */
  readonly throttled: Counter<"transport">
  /** How far each shard's consumer is behind the newest record, ms. */
  readonly streamLagMs: Gauge<"shard">
  /** Device actors currently alive. */
  readonly liveActors: Gauge
  /** Shard leases this processor holds now, and acquisitions and losses (change=acquired|lost). */
  readonly leasesHeld: Gauge
  readonly leaseChanges: Counter<"change">
  /** Readings stored, and readings sent to the dead-letter table. */
  readonly stored: Counter
  readonly deadLetters: Counter
  /** Readings and dead letters parked in the spill because their tenant's inserts kept failing. */
  readonly spilled: Counter
  /** Time from calling insert to ClickHouse's acknowledgement, seconds. */
  readonly insertLatency: Histogram
  /** Live WebSocket subscribers. */
  readonly liveSubscribers: Gauge
  /** Uses of provisioning claims (`POST /v1/provision`), by outcome (provisioned, or why refused). */
  readonly provisioning: Counter<"outcome">
}

export class Metrics extends Context.Tag("sluice/Metrics")<Metrics, MetricsApi>() {}

/**
 * A registry whose every series carries `labels` (a process carries its roles, e.g.
 * `role="processor+serving"`, so the series of the processes of one machine stay apart).
 */
export const make = (labels: Record<string, string> = {}): MetricsApi => {
  const registry = new Registry()
  registry.setDefaultLabels(labels)
  // Process metrics too: CPU, memory, GC, and event-loop lag (the first suspect for latency).
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 10 })
  const registers = [registry]
  return {
    registry,
    ingested: new Counter({
      name: "sluice_ingested_messages_total",
      help: "Messages durably appended to the stream by ingress",
      labelNames: ["transport"],
      registers,
    }),
    refused: new Counter({
      name: "sluice_refused_messages_total",
      help: "Messages refused by ingress",
      labelNames: ["transport", "reason"],
      registers,
    }),
    refusedConnections: new Counter({
      name: "sluice_refused_connections_total",
      help: "Connections a listener closed at accept: at its connection limit, or on accept errors",
      labelNames: ["listener", "reason"],
      registers,
    }),
    throttled: new Counter({
      name: "sluice_throttled_messages_total",
      help: "Messages held back because their tenant is over its ingest quota",
      labelNames: ["transport"],
      registers,
    }),
    streamLagMs: new Gauge({
      name: "sluice_stream_lag_milliseconds",
      help: "How far the processor is behind the newest record, per shard",
      labelNames: ["shard"],
      registers,
    }),
    liveActors: new Gauge({ name: "sluice_device_actors", help: "Device actors alive", registers }),
    leasesHeld: new Gauge({
      name: "sluice_shard_leases_held",
      help: "Shard leases this processor holds",
      registers,
    }),
    leaseChanges: new Counter({
      name: "sluice_shard_lease_changes_total",
      help: "Shard leases acquired and lost by this processor",
      labelNames: ["change"],
      registers,
    }),
    stored: new Counter({
      name: "sluice_stored_readings_total",
      help: "Readings stored in ClickHouse",
      registers,
    }),
    deadLetters: new Counter({
      name: "sluice_dead_letters_total",
      help: "Readings that failed their device class and went to the dead-letter table",
      registers,
    }),
    spilled: new Counter({
      name: "sluice_spilled_readings_total",
      help: "Readings parked in the spill because their tenant's inserts kept failing",
      registers,
    }),
    insertLatency: new Histogram({
      name: "sluice_insert_latency_seconds",
      help: "ClickHouse insert latency, call to acknowledgement",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    liveSubscribers: new Gauge({
      name: "sluice_live_subscribers",
      help: "Live WebSocket subscribers",
      registers,
    }),
    provisioning: new Counter({
      name: "sluice_provisioning_total",
      help: "Devices provisioning themselves with a claim token, by outcome (provisioned, or why refused)",
      labelNames: ["outcome"],
      registers,
    }),
  }
}

/** A fresh registry per layer build, so tests and restarts never share counters. */
export const layer = Layer.sync(Metrics, () => make())

/** The registry of a process running `roles`: every series labelled `role="a+b"`. */
export const layerForRoles = (roles: ReadonlyArray<string>) =>
  Layer.sync(Metrics, () => make({ role: roles.join("+") }))

/** The Prometheus exposition text. */
export const render = Effect.flatMap(Metrics, (m) => Effect.promise(() => m.registry.metrics()))
