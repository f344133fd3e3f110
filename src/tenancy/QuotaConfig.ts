/**
 * Where ingress keeps its per-tenant quota buckets (SLUICE_QUOTA_*), read with Effect `Config`.
 *
 * Unset (the default): `SharedQuota.ts`, a SQLite file in the data directory, shared by the ingress
 * processes of one machine. With `SLUICE_QUOTA_TABLE`: `DynamoQuota.ts`, a DynamoDB table shared by
 * every ingress process on every node, so a tenant's quota holds across the whole fleet. The table
 * lives in the stream's account and region, as the shard lease table does, so region and
 * credentials are the Kinesis backend's (SLUICE_KINESIS_REGION, _ACCESS_KEY_ID, ...).
 *
 * This module only reads settings: it must not load the AWS SDK (a laptop run never needs it).
 */
import { Config, Option, type Redacted } from "effect"
import * as StreamConfig from "../stream/StreamConfig.js"

export interface DynamoQuotaConfig {
  /** The quota table (SLUICE_QUOTA_TABLE): one item per tenant, created on demand. */
  readonly table: string
  /** Endpoint override, e.g. dynalite (SLUICE_QUOTA_ENDPOINT). Unset = AWS. */
  readonly endpoint?: string | undefined
  /** Region and static credentials: the stream's (SLUICE_KINESIS_REGION, _ACCESS_KEY_ID, ...). */
  readonly region: string
  readonly accessKeyId?: string | undefined
  readonly secretAccessKey?: Redacted.Redacted | undefined
  /** How long start-up waits for a new table to become ACTIVE. Default 120 s. */
  readonly activeTimeoutMs?: number | undefined
}

const quotaKey = <A>(c: Config.Config<A>) => c.pipe(Config.nested("quota"), Config.nested("sluice"))
/** A setting that may be unset or empty (`SLUICE_QUOTA_TABLE=` in an env file means "not set"). */
const optional = (name: string) =>
  quotaKey(Config.option(Config.string(name))).pipe(Config.map(Option.filter((value) => value.trim() !== "")))

/**
 * The DynamoDB quota table's settings, or none when SLUICE_QUOTA_TABLE is unset (each machine's
 * ingress processes share `quotas.sqlite` instead).
 */
export const dynamo: Config.Config<Option.Option<DynamoQuotaConfig>> = Config.all({
  table: optional("table"),
  endpoint: optional("endpoint"),
  kinesis: StreamConfig.kinesis,
}).pipe(
  Config.map(({ table, endpoint, kinesis }) =>
    Option.map(
      table,
      (table): DynamoQuotaConfig => ({
        table,
        endpoint: Option.getOrUndefined(endpoint),
        region: kinesis.region,
        accessKeyId: kinesis.accessKeyId,
        secretAccessKey: kinesis.secretAccessKey,
      }),
    ),
  ),
)
