/**
 * The real chDB store with its inserts behind a switch or a gate the test controls: fault
 * injection on our own contract (`TelemetryStore`), not a stand-in for ClickHouse. Everything but
 * `insert` is the real store's.
 */
import { Effect, Layer } from "effect"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import {
  StorageUnavailable,
  TelemetryStore,
  type TelemetryStoreApi,
} from "../../src/storage/TelemetryStore.js"

type Insert = TelemetryStoreApi["insert"]

/** The embedded chDB store in `chdb`, its `insert` replaced by `wrap` of the real one. */
export const wrapInserts = (chdb: string, wrap: (insert: Insert) => Insert) =>
  Layer.effect(
    TelemetryStore,
    Effect.map(TelemetryStore, (store) => TelemetryStore.of({ ...store, insert: wrap(store.insert) })),
  ).pipe(Layer.provide(ClickHouseTelemetryStore.layerWith(ClickHouseTelemetryStore.embedded(chdb))))

/**
 * The embedded chDB store in `chdb` behind a switch that makes inserts fail (StorageUnavailable)
 * for the tenants in `failing` — every tenant, or one — while they are in it.
 */
export const switchableStore = (chdb: string, failing: ReadonlySet<string>) =>
  wrapInserts(
    chdb,
    (insert) => (rows, token) =>
      // Decided per attempt: a retry of the same effect must see the store come back.
      Effect.suspend(() =>
        rows.some((r) => failing.has(r.tenantId))
          ? Effect.fail(new StorageUnavailable({ operation: "insert", reason: "storage is down (test)" }))
          : insert(rows, token),
      ),
  )
