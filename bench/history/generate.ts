/**
 * Generates `devices × perDevice` readings straight into the store's `telemetry` table with one
 * INSERT … SELECT FROM numbers() per chunk of devices, without the pipeline's cost; then the
 * chunk's latest states and rollups, which the store's insert writes, from the chunk's stored
 * readings by the backfills' own SQL (`Latest.states`, `Rollups.states`). Device `dev-00042`
 * reads every `stepMs` up to `end`; values are exact in binary (multiples of 1/8).
 */
import type { ClickHouseClient } from "@clickhouse/client"
import * as Latest from "../../src/storage/Latest.js"
import * as Rollups from "../../src/storage/Rollups.js"

export interface Fleet {
  readonly tenant: string
  readonly devices: number
  readonly perDevice: number
  /** Device time of every device's newest reading, epoch ms. */
  readonly end: number
  readonly stepMs: number
}

/** The id of device `i`: zero-padded so that id order is numeric order. */
export const deviceId = (i: number) => `dev-${String(i).padStart(5, "0")}`

export const generate = async (
  client: ClickHouseClient,
  db: string,
  fleet: Fleet,
  onChunk: (devicesDone: number, seconds: number) => void,
) => {
  const chunk = Math.max(1, Math.floor(5_000_000 / fleet.perDevice))
  const started = performance.now()
  for (let first = 0; first < fleet.devices; first += chunk) {
    const count = Math.min(chunk, fleet.devices - first)
    await client.command({
      query: `INSERT INTO ${db}.telemetry
          (tenant_id, device_id, device_class, msg_id, ts, received_at, num, str, bool_fields, class_version)
        SELECT {tenant:String},
          concat('dev-', leftPad(toString(intDiv(number, {per:UInt64})), 5, '0')),
          'thermo',
          concat('m-', toString(number % {per:UInt64})),
          fromUnixTimestamp64Milli(toInt64({end:Int64}) - toInt64({per:UInt64} - 1 - number % {per:UInt64}) * {step:Int64}, 'UTC'),
          fromUnixTimestamp64Milli(toInt64({end:Int64}) - toInt64({per:UInt64} - 1 - number % {per:UInt64}) * {step:Int64} + 250, 'UTC'),
          map('temperature', 15 + (number % 97) / 8, 'humidity', toFloat64(30 + number % 41), 'battery', toFloat64(100 - number % 100)),
          map(), [], 1
        FROM numbers({start:UInt64}, {count:UInt64})`,
      query_params: {
        tenant: fleet.tenant,
        per: fleet.perDevice,
        end: fleet.end,
        step: fleet.stepMs,
        start: first * fleet.perDevice,
        count: count * fleet.perDevice,
      },
      clickhouse_settings: { insert_deduplication_token: `bench-history-${first}` },
    })
    const chunkRows = (final: string) =>
      `(SELECT * FROM ${db}.telemetry ${final}
        WHERE tenant_id = {tenant:String} AND device_id BETWEEN {first:String} AND {last:String})`
    const params = { tenant: fleet.tenant, first: deviceId(first), last: deviceId(first + count - 1) }
    await client.command({
      query: `INSERT INTO ${db}.device_latest (tenant_id, device_id, latest, last_seen)
        ${Latest.states(chunkRows(""))}`,
      query_params: params,
      clickhouse_settings: { insert_deduplication_token: `bench-history-${first}/latest` },
    })
    await client.command({
      query: `INSERT INTO ${db}.telemetry_rollup (${Rollups.columns.join(", ")})
        ${Rollups.states(chunkRows("FINAL"))}
        SETTINGS do_not_merge_across_partitions_select_final = 1`,
      query_params: params,
      clickhouse_settings: { insert_deduplication_token: `bench-history-${first}/rollup` },
    })
    onChunk(first + count, (performance.now() - started) / 1000)
  }
}
