/** The process's data directory, shared by every tier that keeps files. */
import { Config } from "effect"

/**
 * Where everything the embedded process keeps on disk lives (SLUICE_DATA_DIR, `--data-dir`):
 * the embedded log (`stream.sqlite`, with its shard leases), the device registry
 * (`registry.sqlite`), the machine's quota buckets
 * (`quotas.sqlite`), the spill (`spill.sqlite`, unless it is in S3), chDB (`chdb/`). Default `./data`.
 */
export const dataDir = Config.string("data_dir").pipe(Config.withDefault("./data"), Config.nested("sluice"))
