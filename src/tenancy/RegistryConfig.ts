/** Device registry settings (SLUICE_REGISTRY_*), read with Effect `Config`. */
import { Config } from "effect"

/**
 * How often every process looks at the registry's revision (SLUICE_REGISTRY_POLL_MS, default
 * 1,000): a change made through the admin API or `sluice apply` is live within this, plus the time
 * to fetch what changed.
 */
export const pollMs = Config.integer("poll_ms").pipe(
  Config.withDefault(1_000),
  Config.validate({ message: "must be at least 50", validation: (n) => n >= 50 }),
  Config.nested("registry"),
  Config.nested("sluice"),
)
