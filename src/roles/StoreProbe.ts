/** The readiness of the roles that use ClickHouse: up, and the store answers a query. */
import { Effect, Layer } from "effect"
import * as Health from "../observability/Health.js"
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

/** Marks `role` ready while it is up, probed by the store answering. Requires TelemetryStore, Health. */
export const readyWithStore = (role: Health.Role) =>
  Layer.unwrapEffect(Effect.map(storeProbe, (probe) => Health.readyWhileAlive(role, probe)))
