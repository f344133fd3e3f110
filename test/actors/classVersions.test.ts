/**
 * Device class versions, end to end through the processor: a new version applied to the registry
 * while the processor runs decodes the next message; rows already stored keep the version that
 * decoded them. Real parts: the SQLite registry, the Tenancy following it, the embedded log, chDB.
 */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as LiveFeed from "../../src/actors/LiveFeed.js"
import * as Processor from "../../src/actors/Processor.js"
import * as ProcessorConfig from "../../src/actors/ProcessorConfig.js"
import * as Metrics from "../../src/observability/Metrics.js"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import { TelemetryStore } from "../../src/storage/TelemetryStore.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { StreamLog } from "../../src/stream/StreamLog.js"
import * as Apply from "../../src/tenancy/Apply.js"
import { encodeEnvelope, partitionKeyOf } from "../../src/tenancy/Envelope.js"
import type { PlatformConfig } from "../../src/tenancy/PlatformConfig.js"
import * as SqliteRegistry from "../../src/tenancy/SqliteRegistry.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"
import { embeddedLeases } from "../support/leases.js"
import { polling } from "../support/polling.js"

const T0 = Date.UTC(2026, 0, 1)
const config = (scale: number): PlatformConfig => ({
  tenants: [{ id: "acme", api_keys: ["acme-api-key-0123456789"] }],
  device_classes: [{ name: "meter", fields: { power: { type: "number", scale } }, message_id_field: "id" }],
  devices: [{ id: "m-1", tenant: "acme", class: "meter", credential: "m-1-secret-value" }],
})
const record = (i: number) => ({
  partitionKey: partitionKeyOf("acme", "m-1"),
  data: encodeEnvelope(
    { tenantId: "acme", deviceId: "m-1", deviceClass: "meter", receivedAt: T0 + i },
    Buffer.from(JSON.stringify({ id: `r${i}`, power: 10 })),
  ),
})
const eventually = polling({ timeoutMs: 20_000, intervalMs: 50 })

describe("device class versions", () => {
  it.scopedLive(
    "a new version decodes the next message; stored rows keep the version that decoded them",
    () => {
      const dir = mkdtempSync(join(tmpdir(), "sluice-versions-"))
      const registry = SqliteRegistry.layerWith({ dataDir: dir, fsync: false })
      const layers = Processor.layerWith({
        ...ProcessorConfig.defaults,
        flushIntervalMs: 20,
        checkpointIntervalMs: 50,
        dataDir: dir,
      }).pipe(
        Layer.provideMerge(
          Layer.mergeAll(
            SqliteStreamLog.layerWith({ ...SqliteStreamLog.defaults(dir), fsync: false }),
            ClickHouseTelemetryStore.layerWith(ClickHouseTelemetryStore.embedded(join(dir, "chdb"))),
            Layer.scoped(Tenancy.Tenancy, Tenancy.live({ pollMs: 50 })).pipe(Layer.provide(registry)),
            LiveFeed.layer,
            Metrics.layer,
          ),
        ),
        Layer.provideMerge(embeddedLeases(dir)),
        Layer.provideMerge(registry),
      )
      return Effect.gen(function* () {
        const log = yield* StreamLog
        const store = yield* TelemetryStore
        const tenancy = yield* Tenancy.Tenancy
        const rows = () =>
          Effect.map(store.history("acme", "m-1", { from: T0 - 1, to: T0 + 10_000 }, { limit: 100 }), (p) =>
            p.rows.map((r) => [r.msgId, r.values.power, r.classVersion]),
          )
        const applyAndFollow = (scale: number) =>
          Effect.gen(function* () {
            const applied = yield* Apply.apply(config(scale))
            while (tenancy.revision() < applied.revision) yield* Effect.sleep("20 millis")
          })

        yield* applyAndFollow(1)
        yield* log.append([record(0)])
        expect(yield* eventually(rows(), (r) => r.length >= 1)).toEqual([["r0", 10, 1]])

        // Version 2 (a scale of 1000: watts to milliwatts), live, no restart.
        yield* applyAndFollow(1000)
        yield* log.append([record(1)])
        expect(yield* eventually(rows(), (r) => r.length >= 2)).toEqual([
          ["r0", 10, 1],
          ["r1", 10_000, 2],
        ])
      }).pipe(Effect.provide(layers))
    },
  )
})
