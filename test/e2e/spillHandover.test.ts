/**
 * A processor lost for good while one tenant's storage fails: the AWS shape on one machine —
 * Kinesis (kinesalite), leases in DynamoDB (dynalite), the tenant spill in S3 (s3rver), one
 * ClickHouse (chDB behind ClickHouse's HTTP interface in a separate process: a test peer, not
 * clickhouse-server) — and two `--role processor` processes, each with a data directory of its
 * own. Tenant "other" cannot store (a CHECK constraint on the real table refuses its rows), so its
 * batches go to S3 while the shards' checkpoints move on. The first processor is SIGKILLed and its
 * directory deleted, as a machine that is gone; when "other"'s storage returns, its data lands
 * exactly once through the second processor.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { PutRecordsCommand } from "@aws-sdk/client-kinesis"
import { CreateBucketCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { encodeEnvelope, partitionKeyOf } from "../../src/tenancy/Envelope.js"
import { type ClickHouseHttpPeer, startClickHouseHttpPeer } from "../support/clickhouseHttpPeer.js"
import {
  type DynamoEmulator,
  type KinesisEmulator,
  kinesisClientFor,
  type S3Emulator,
  S3RVER_CREDENTIALS,
  startDynalite,
  startKinesalite,
  startS3rver,
} from "../support/emulators.js"
import { eventually, freePort } from "./platform.js"
import { query, type RoleProcess, ready, startRole, stop } from "./roleProcess.js"

const STREAM = "sluice-spill-handover"
const BUCKET = "sluice-spill"
const T0 = Date.UTC(2026, 0, 1)

describe("a processor lost for good while a tenant's storage fails (Kinesis, DynamoDB leases, S3 spill, ClickHouse HTTP peer)", () => {
  let kinesis: KinesisEmulator | undefined
  let dynamo: DynamoEmulator | undefined
  let s3: S3Emulator | undefined
  let peer: ClickHouseHttpPeer | undefined
  const processors: Array<RoleProcess & { readonly dataDir: string }> = []
  const outputs = () => processors.map((p) => `--- ${p.name}\n${p.output()}`).join("\n")

  const start = async (name: string) => {
    const dataDir = mkdtempSync(join(tmpdir(), `sluice-${name}-`))
    const port = await freePort()
    const role = {
      ...startRole(
        name,
        ["--role", "processor", "--http-port", String(port)],
        {
          SLUICE_DATA_DIR: dataDir,
          SLUICE_CLICKHOUSE_URL: peer!.url,
          SLUICE_STREAM_BACKEND: "kinesis",
          SLUICE_KINESIS_ENDPOINT: kinesis!.endpoint,
          SLUICE_KINESIS_STREAM_NAME: STREAM,
          SLUICE_KINESIS_REGION: "us-east-1",
          // s3rver knows one account; the emulators of Kinesis and DynamoDB take any.
          SLUICE_KINESIS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
          SLUICE_KINESIS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
          SLUICE_KINESIS_SHARD_COUNT: "2",
          SLUICE_LEASES_ENDPOINT: dynamo!.endpoint,
          SLUICE_SPILL_BUCKET: BUCKET,
          SLUICE_SPILL_ENDPOINT: s3!.endpoint,
          SLUICE_PROCESSOR_WORKER_ID: name,
          SLUICE_PROCESSOR_FAILOVER_MS: "2000",
          SLUICE_PROCESSOR_SPILL_AFTER_MS: "500",
          SLUICE_PROCESSOR_SPILL_SCAN_MS: "1000",
        },
        { outputChars: 30_000 },
      ),
      dataDir,
    }
    processors.push(role)
    expect(await ready(`http://127.0.0.1:${port}`), outputs()).toBe(true)
    return role
  }

  const spilled = async () => {
    const client = new S3Client({
      endpoint: s3!.endpoint,
      region: "us-east-1",
      forcePathStyle: true,
      credentials: S3RVER_CREDENTIALS,
    })
    const listed = await client.send(new ListObjectsV2Command({ Bucket: BUCKET }))
    client.destroy()
    return listed.KeyCount ?? 0
  }

  beforeAll(async () => {
    ;[kinesis, dynamo, s3, peer] = await Promise.all([
      startKinesalite(),
      startDynalite(),
      startS3rver(),
      startClickHouseHttpPeer(),
    ])
    const client = new S3Client({
      endpoint: s3.endpoint,
      region: "us-east-1",
      forcePathStyle: true,
      credentials: S3RVER_CREDENTIALS,
    })
    await client.send(new CreateBucketCommand({ Bucket: BUCKET }))
    client.destroy()
  }, 60_000)

  afterAll(async () => {
    for (const p of processors) {
      await stop(p, { killAfterMs: 20_000 })
      rmSync(p.dataDir, { recursive: true, force: true })
    }
    await Promise.all([kinesis?.stop(), dynamo?.stop(), s3?.stop(), peer?.stop()])
  }, 60_000)

  it("lands the failing tenant's data exactly once through the other processor", {
    timeout: 120_000,
  }, async () => {
    const first = await start("processor-1")
    // Tenant "other" cannot store: a constraint on the real table refuses its rows.
    await query(
      peer!.url,
      "ALTER TABLE sluice.telemetry ADD CONSTRAINT other_is_down CHECK tenant_id != 'other'",
    )

    // Ingress's records, written as ingress writes them; PutRecords' success is the acknowledgement.
    const kinesisClient = kinesisClientFor(kinesis!.endpoint)
    const record = (tenantId: string, deviceId: string, i: number) => ({
      PartitionKey: partitionKeyOf(tenantId, deviceId),
      Data: encodeEnvelope(
        { tenantId, deviceId, deviceClass: "thermostat", receivedAt: T0 + i },
        Buffer.from(JSON.stringify({ id: `m${i}`, ts: T0 + i * 1000, temp_f: 70, humidity: 40 })),
      ),
    })
    const put = await kinesisClient.send(
      new PutRecordsCommand({
        StreamName: STREAM,
        Records: Array.from({ length: 40 }, (_, i) => [
          record("demo", "thermo-1", i),
          record("other", "other-thermo-1", i),
        ]).flat(),
      }),
    )
    kinesisClient.destroy()
    expect(put.FailedRecordCount ?? 0).toBe(0)

    // "demo" is stored; "other"'s batches are parked in S3, so the checkpoints move past them.
    const count = async (tenant: string, final: boolean) =>
      Number(
        (
          await query<{ n: string }>(
            peer!.url,
            `SELECT count() AS n FROM sluice.telemetry ${final ? "FINAL" : ""} WHERE tenant_id = '${tenant}'`,
          )
        )[0]!.n,
      )
    expect(
      await eventually(
        () => count("demo", true),
        (n) => n >= 40,
      ),
      outputs(),
    ).toBe(40)
    expect(await eventually(spilled, (n) => n > 0), outputs()).toBeGreaterThan(0)
    await new Promise((r) => setTimeout(r, 1_500))
    expect(await count("other", true)).toBe(0)

    // Another processor joins; then the first one's machine is gone: SIGKILL, directory deleted.
    await start("processor-2")
    first.child.kill("SIGKILL")
    await new Promise((r) => first.child.once("exit", r))
    rmSync(first.dataDir, { recursive: true, force: true })

    // Storage for "other" returns: its data lands through processor-2, exactly once.
    await query(peer!.url, "ALTER TABLE sluice.telemetry DROP CONSTRAINT other_is_down")
    expect(
      await eventually(
        () => count("other", true),
        (n) => n >= 40,
      ),
      outputs(),
    ).toBe(40)
    const distinct = await query<{ n: string }>(
      peer!.url,
      "SELECT uniqExact(msg_id) AS n FROM sluice.telemetry FINAL WHERE tenant_id = 'other'",
    )
    expect(Number(distinct[0]!.n)).toBe(40)
    expect(await eventually(spilled, (n) => n === 0), outputs()).toBe(0)
    expect(await count("demo", true)).toBe(40)
  })
})
