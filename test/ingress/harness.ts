/**
 * Ingress on a real stack for tests: the embedded log (SQLite) in a fresh temporary directory, an
 * in-memory Tenancy of two tenants and three devices, and fresh metrics. Servers bind 127.0.0.1 on
 * a free port.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Layer, type Scope } from "effect"
import * as IngressConfig from "../../src/ingress/IngressConfig.js"
import * as Metrics from "../../src/observability/Metrics.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { Position, StreamLog, type StreamRecord } from "../../src/stream/StreamLog.js"
import { decodeEnvelope, type Envelope } from "../../src/tenancy/Envelope.js"
import type { PlatformConfig } from "../../src/tenancy/PlatformConfig.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"

export const platform: PlatformConfig = {
  tenants: [
    { id: "acme", api_keys: ["acme-api-key-0123456789"] },
    { id: "globex", api_keys: ["globex-api-key-0123456789"] },
  ],
  device_classes: [{ name: "climate", fields: { temperature: { type: "number" } } }],
  devices: [
    { id: "thermo-1", tenant: "acme", class: "climate", credential: "thermo-1-secret" },
    { id: "thermo-2", tenant: "acme", class: "climate", credential: "thermo-2-secret" },
    { id: "meter-9", tenant: "globex", class: "climate", credential: "meter-9-secret" },
  ],
}

export const device1 = { id: "thermo-1", tenant: "acme", class: "climate", credential: "thermo-1-secret" }
export const device2 = { id: "thermo-2", tenant: "acme", class: "climate", credential: "thermo-2-secret" }
export const device3 = { id: "meter-9", tenant: "globex", class: "climate", credential: "meter-9-secret" }

/** Small payload limit, so oversize tests stay cheap. */
export const MAX_PAYLOAD_BYTES = 2048

export const ingressConfig: IngressConfig.IngressConfig = {
  ...IngressConfig.defaults,
  mqttHost: "127.0.0.1",
  mqttPort: 0,
  maxPayloadBytes: MAX_PAYLOAD_BYTES,
}

/**
 * StreamLog (embedded, in a temporary directory removed afterwards), Tenancy and Metrics.
 * `streamMaxBytes` is the log's disk budget: tiny values make appends fail with StreamFull.
 */
export const dependencies = (
  options: { readonly streamMaxBytes?: number; readonly platform?: PlatformConfig } = {},
) =>
  Layer.mergeAll(
    Layer.unwrapScoped(
      Effect.map(
        Effect.acquireRelease(
          Effect.sync(() => mkdtempSync(join(tmpdir(), "sluice-ingress-"))),
          (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true })),
        ),
        (dir) =>
          SqliteStreamLog.layerWith({
            ...SqliteStreamLog.defaults(dir),
            fsync: false,
            ...(options.streamMaxBytes === undefined ? {} : { maxBytes: options.streamMaxBytes }),
          }),
      ),
    ),
    Tenancy.layer(options.platform ?? platform),
    Metrics.layer,
  )

/** Every record in the stream, all shards, in shard then sequence order. */
export const allRecords: Effect.Effect<
  ReadonlyArray<StreamRecord>,
  unknown,
  StreamLog | Scope.Scope
> = Effect.gen(function* () {
  const log = yield* StreamLog
  const out: Array<StreamRecord> = []
  for (const shard of yield* log.listShards) {
    const reader = yield* log.reader(shard.shardId, Position.TrimHorizon())
    for (;;) {
      const batch = yield* reader.pull()
      if (batch.records.length === 0) break
      out.push(...batch.records)
    }
  }
  return out
})

/** A record's envelope, or a test failure. */
export const envelopeOf = (record: StreamRecord): Envelope => {
  const decoded = decodeEnvelope(record.data)
  if (decoded._tag === "Left") throw new Error(decoded.left)
  return decoded.right
}

/** A counter's value for some labels, from the metrics registry. */
export const counter = (name: string, labels: Record<string, string>) =>
  Effect.gen(function* () {
    const metrics = yield* Metrics.Metrics
    const metric = metrics.registry.getSingleMetric(name)
    if (metric === undefined) return 0
    const { values } = yield* Effect.promise(async () => metric.get())
    const match = values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))
    return match?.value ?? 0
  })
