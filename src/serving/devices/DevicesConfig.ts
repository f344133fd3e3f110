/** Settings of the device list, under `sluice` (`SLUICE_ONLINE_WINDOW_MS`). */
import { Config } from "effect"

/**
 * How recently a device must have been heard from to count as online, ms
 * (SLUICE_ONLINE_WINDOW_MS). Default 300000 (5 minutes): a few reporting intervals of a typical
 * sensor, so one late message does not flip a device to offline.
 */
export const onlineWindowMs: Config.Config<number> = Config.integer("online_window_ms").pipe(
  Config.withDefault(300_000),
  Config.validate({ message: "must be at least 1 (ms)", validation: (n) => n >= 1 }),
  Config.nested("sluice"),
)
