/** Device registry settings (SLUICE_REGISTRY_*), read with Effect `Config`. */
import { Config, Option, type Redacted } from "effect"
import * as StreamConfig from "../stream/StreamConfig.js"

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

/**
 * Where the registry lives. Unset (the default): `SqliteRegistry.ts`, `registry.sqlite` in the
 * data directory, shared by the processes of one machine. With SLUICE_REGISTRY_TABLE:
 * `DynamoRegistry.ts`, one DynamoDB table shared by every process on every node, so a change made
 * through any node's admin API (or `sluice apply` anywhere) reaches all of them. The table lives
 * in the stream's account and region, as the shard lease and quota tables do, so region and
 * credentials are the Kinesis backend's (SLUICE_KINESIS_REGION, _ACCESS_KEY_ID, ...).
 *
 * Reading these settings must not load the AWS SDK (a laptop run never needs it).
 */
export interface DynamoRegistryConfig {
  /** The registry table (SLUICE_REGISTRY_TABLE), created on demand (keys pk and sk, both S). */
  readonly table: string
  /** Endpoint override, e.g. dynalite (SLUICE_REGISTRY_ENDPOINT). Unset = AWS. */
  readonly endpoint?: string | undefined
  /** Region and static credentials: the stream's (SLUICE_KINESIS_REGION, _ACCESS_KEY_ID, ...). */
  readonly region: string
  readonly accessKeyId?: string | undefined
  readonly secretAccessKey?: Redacted.Redacted | undefined
  /** How long start-up waits for a new table to become ACTIVE. Default 120 s. */
  readonly activeTimeoutMs?: number | undefined
  /** Items per Scan page. Default: DynamoDB's 1 MB pages; tests lower it to page. */
  readonly scanPageItems?: number | undefined
  /** Parallel segments of every Scan (`load`, `changesSince`, compaction). Default 4. */
  readonly scanSegments?: number | undefined
  /** BatchWriteItem calls a commit keeps in flight. Default 8. */
  readonly writeConcurrency?: number | undefined
  /**
   * Compaction: a writer whose commit lands on a multiple of this revision compacts the table in
   * the background (default 32; 0 = never).
   */
  readonly compactEvery?: number | undefined
  /**
   * A row version is deleted only once a newer committed version of its row is at least this many
   * revisions behind the head (default 32) ...
   */
  readonly keepRevisions?: number | undefined
  /** ... and was committed at least this long ago, ms (default 600,000: 10 minutes). */
  readonly keepMs?: number | undefined
  /** Items one compaction pass deletes at most (default 10,000). */
  readonly compactMaxDeletes?: number | undefined
}

const registryKey = <A>(c: Config.Config<A>) => c.pipe(Config.nested("registry"), Config.nested("sluice"))
/** A setting that may be unset or empty (`SLUICE_REGISTRY_TABLE=` in an env file means "not set"). */
const optional = (name: string) =>
  registryKey(Config.option(Config.string(name))).pipe(
    Config.map(Option.filter((value) => value.trim() !== "")),
  )

/**
 * The DynamoDB registry table's settings, or none when SLUICE_REGISTRY_TABLE is unset (each
 * machine's processes share `registry.sqlite` in the data directory instead).
 */
export const dynamo: Config.Config<Option.Option<DynamoRegistryConfig>> = Config.all({
  table: optional("table"),
  endpoint: optional("endpoint"),
  kinesis: StreamConfig.kinesis,
}).pipe(
  Config.map(({ table, endpoint, kinesis }) =>
    Option.map(
      table,
      (table): DynamoRegistryConfig => ({
        table,
        endpoint: Option.getOrUndefined(endpoint),
        region: kinesis.region,
        accessKeyId: kinesis.accessKeyId,
        secretAccessKey: kinesis.secretAccessKey,
      }),
    ),
  ),
)
