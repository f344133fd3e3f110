/**
 * Shard lease store configuration (SLUICE_LEASES_*), read with Effect `Config` like the stream's
 * own settings. The DynamoDB lease table lives in the stream's account and region, so region and
 * credentials are the Kinesis backend's (SLUICE_KINESIS_REGION, _ACCESS_KEY_ID, ...).
 */
import { Config, Option, type Redacted } from "effect"
import * as StreamConfig from "./StreamConfig.js"

export interface DynamoLeasesConfig {
  /** Lease table (SLUICE_LEASES_TABLE). Default `sluice-leases-<SLUICE_PROCESSOR_CONSUMER>`. */
  readonly table: string
  /** Endpoint override, e.g. dynalite (SLUICE_LEASES_ENDPOINT). Unset = AWS. */
  readonly endpoint?: string | undefined
  /** Region and static credentials: the stream's (SLUICE_KINESIS_REGION, _ACCESS_KEY_ID, ...). */
  readonly region: string
  readonly accessKeyId?: string | undefined
  readonly secretAccessKey?: Redacted.Redacted | undefined
  /** How long start-up waits for a new table to become ACTIVE. Default 120 s. */
  readonly activeTimeoutMs?: number | undefined
  /** Items per Scan page of `list`. Default: DynamoDB's 1 MB pages; tests lower it to page. */
  readonly scanPageItems?: number | undefined
}

const optional = (c: Config.Config<Option.Option<string>>) => Config.map(c, Option.getOrUndefined)
const leasesKey = <A>(c: Config.Config<A>) => c.pipe(Config.nested("leases"), Config.nested("sluice"))
/**
 * Read here rather than from the actors' ProcessorConfig, which the stream tier does not import:
 * the same key, so a fleet's table follows its consumer name unless named explicitly.
 */
const consumer = Config.string("consumer").pipe(
  Config.withDefault("processor"),
  Config.nested("processor"),
  Config.nested("sluice"),
)

/** The lease table's settings (SLUICE_LEASES_*), in the stream's account and region. */
export const dynamo: Config.Config<DynamoLeasesConfig> = Config.all({
  table: leasesKey(Config.option(Config.string("table"))),
  consumer,
  endpoint: optional(leasesKey(Config.option(Config.string("endpoint")))),
  kinesis: StreamConfig.kinesis,
}).pipe(
  Config.map(({ table, consumer, endpoint, kinesis }) => ({
    table: Option.getOrElse(table, () => `sluice-leases-${consumer}`),
    endpoint,
    region: kinesis.region,
    accessKeyId: kinesis.accessKeyId,
    secretAccessKey: kinesis.secretAccessKey,
  })),
)
