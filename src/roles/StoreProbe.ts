/** The readiness probe of the roles that use ClickHouse: the store answers a query. */
import { Effect } from "effect"
import { TelemetryStore } from "../storage/TelemetryStore.js"

/** A tenant id no real tenant can have (ids start with a letter or digit): the probe reads nothing. */
const probeTenant = "__readyz__"

/** Succeeds when the store answers; fails with the store's reason otherwise. */
export const storeProbe = Effect.map(TelemetryStore, (store) =>
  store.activity(probeTenant).pipe(
    Effect.asVoid,
    Effect.mapError((error) => `store: ${error.message}`),
  ),
)
