/**
 * Processors sharing one stream by lease, as separate `--role processor` processes over one
 * store (chDB behind ClickHouse's HTTP interface in a separate process: a test peer, not
 * clickhouse-server): on Kinesis (kinesalite) with the lease table in DynamoDB (dynalite), and on
 * the embedded log with the leases in its own database. Devices post to a `--role ingress`
 * process throughout. Proves: a joining processor gets its fair share, a SIGKILLed one's shards
 * are owned again within the failover time, a split shard's children are processed after their
 * parent, and every acknowledged message is stored exactly once, each device's in publish order.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { DescribeStreamCommand, SplitShardCommand } from "@aws-sdk/client-kinesis"
import { Effect, type Layer, ManagedRuntime, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as DynamoShardLeases from "../../src/stream/DynamoShardLeases.js"
import { type Lease, ShardLeases } from "../../src/stream/ShardLeases.js"
import * as SqliteShardLeases from "../../src/stream/SqliteShardLeases.js"
import { credential } from "../../src/tenancy/Fleet.js"
import { type ClickHouseHttpPeer, startClickHouseHttpPeer } from "../support/clickhouseHttpPeer.js"
import {
  type DynamoEmulator,
  type KinesisEmulator,
  kinesisClientFor,
  startDynalite,
  startKinesalite,
} from "../support/emulators.js"
import { eventually, freePort } from "./platform.js"
import { exited, query, type RoleProcess, ready, startRole, stop } from "./roleProcess.js"

const FLEET_SECRET = "demo-fleet-secret-0123456789"
/** Short, so the test sees failovers in seconds; the default (10 s) is measured in bench/. */
const FAILOVER_MS = 3_000
const DEVICES = 8

/** Devices posting one message at a time each (the next after the previous was answered). */
const startLoad = (ingestUrl: string) => {
  const acked = new Map<string, Array<number>>()
  const sent = new Set<string>()
  let running = true
  const device = async (deviceId: string) => {
    const mine: Array<number> = []
    acked.set(deviceId, mine)
    for (let n = 0; running; n++) {
      const id = `${deviceId}-${n}`
      sent.add(id)
      const status = await fetch(`${ingestUrl}/v1/telemetry`, {
        method: "POST",
        headers: { authorization: `Bearer ${credential(FLEET_SECRET, deviceId)}` },
        body: JSON.stringify({ id, ts: Date.now(), temp_f: 70, humidity: 40 }),
      })
        .then((r) => r.status)
        .catch(() => 0)
      if (status === 202) mine.push(n)
      await new Promise((r) => setTimeout(r, 20))
    }
  }
  const all = Array.from({ length: DEVICES }, (_, i) => device(`sim-thermo-${i + 1}`))
  return {
    acked,
    sent,
    stop: async () => {
      running = false
      await Promise.all(all)
    },
  }
}

interface Shape {
  readonly name: string
  readonly processors: number
  readonly env: () => Record<string, string>
  readonly leases: (dataDir: string) => Layer.Layer<ShardLeases, unknown>
  readonly split?: (shardId: string) => Promise<void>
}

/** Leases a shard worker can work on now: not finished, every parent finished. */
const workable = (all: ReadonlyArray<Lease>) => {
  const byId = new Map(all.map((l) => [l.shardId, l]))
  return all.filter(
    (l) =>
      l.checkpoint._tag !== "ShardEnd" &&
      l.parentShardIds.every((p) => byId.get(p) === undefined || byId.get(p)!.checkpoint._tag === "ShardEnd"),
  )
}

const scenario = (shape: Shape) => {
  const dataDir = mkdtempSync(join(tmpdir(), "sluice-leases-"))
  let peer: ClickHouseHttpPeer | undefined
  let ingress: RoleProcess | undefined
  const processors: Array<RoleProcess> = []
  let runtime: ManagedRuntime.ManagedRuntime<ShardLeases, unknown> | undefined
  let ingestUrl = ""
  const outputs = () =>
    [ingress, ...processors]
      .filter((r) => r !== undefined)
      .map((r) => `--- ${r.name}\n${r.output()}`)
      .join("\n")
  const env = () => ({
    SLUICE_DATA_DIR: dataDir,
    SLUICE_CLICKHOUSE_URL: peer!.url,
    SLUICE_PROCESSOR_FAILOVER_MS: String(FAILOVER_MS),
    ...shape.env(),
  })
  const leases = () => runtime!.runPromise(Effect.flatMap(ShardLeases, (l) => l.list))
  const startProcessor = async (n: number) => {
    const port = await freePort()
    const role = startRole(
      `processor-${n}`,
      ["--role", "processor", "--http-port", String(port)],
      { ...env(), SLUICE_PROCESSOR_WORKER_ID: `processor-${n}` },
      { outputChars: 30_000 },
    )
    processors.push(role)
    expect(await ready(`http://127.0.0.1:${port}`), outputs()).toBe(true)
    return role
  }
  /** How long until `check` holds of the lease table, ms (fails the test past `limitMs`). */
  const timeUntil = async (check: (all: ReadonlyArray<Lease>) => boolean, limitMs: number) => {
    const started = Date.now()
    let last: ReadonlyArray<Lease> = []
    while (Date.now() - started < limitMs) {
      last = await leases().catch(() => [])
      if (check(last)) return Date.now() - started
      await new Promise((r) => setTimeout(r, 100))
    }
    throw new Error(`not within ${limitMs} ms: ${JSON.stringify(last)}\n${outputs()}`)
  }

  beforeAll(async () => {
    peer = await startClickHouseHttpPeer()
    const [mqtt, ingest] = [await freePort(), await freePort()]
    ingestUrl = `http://127.0.0.1:${ingest}`
    ingress = startRole(
      "ingress",
      ["--role", "ingress", "--mqtt-port", String(mqtt), "--ingress-http-port", String(ingest)],
      env(),
      { outputChars: 30_000 },
    )
    expect(await ready(ingestUrl), outputs()).toBe(true)
    runtime = ManagedRuntime.make(shape.leases(dataDir))
  }, 60_000)

  afterAll(async () => {
    for (const role of [ingress, ...processors]) if (role !== undefined) await stop(role)
    await runtime?.dispose()
    await peer?.stop()
    rmSync(dataDir, { recursive: true, force: true })
  }, 90_000)

  it(`${shape.processors} processors: fair shares, a SIGKILLed one's shards taken over, exactly once and in order`, {
    timeout: 150_000,
  }, async () => {
    const first = await startProcessor(1)
    // Alone, it holds every lease.
    await timeUntil((all) => all.length >= 4 && all.every((l) => l.owner === "processor-1"), 30_000)
    const load = startLoad(ingestUrl)
    await new Promise((r) => setTimeout(r, 1_500))

    // The others join: each holds its fair share within 30 s.
    const joinedAt = Date.now()
    for (let n = 2; n <= shape.processors; n++) await startProcessor(n)
    const fair = (all: ReadonlyArray<Lease>) => {
      const open = workable(all)
      const counts = Array.from({ length: shape.processors }, (_, i) =>
        open.reduce((k, l) => k + (l.owner === `processor-${i + 1}` ? 1 : 0), 0),
      )
      const share = Math.floor(open.length / shape.processors)
      return counts.every((c) => c >= share) && counts.reduce((a, b) => a + b, 0) === open.length
    }
    await timeUntil(fair, 30_000)
    console.log(`${shape.name}: fair shares ${Date.now() - joinedAt} ms after the others started`)

    if (shape.split !== undefined) {
      // Split a shard under load: its children start once it is processed to its end.
      const parent = workable(await leases())[0]!.shardId
      await shape.split(parent)
      await timeUntil((all) => {
        const children = all.filter((l) => l.parentShardIds.includes(parent))
        const done = all.find((l) => l.shardId === parent)?.checkpoint._tag === "ShardEnd"
        return done && children.length === 2 && children.every((c) => c.owner !== null)
      }, 30_000)
      await timeUntil(fair, 30_000)
    }

    // SIGKILL one that holds leases: the others own its shards again within the failover time
    // (expiry seen after failover_ms on their clocks, taken at their next round, every failover/2).
    const held = await leases()
    const victim = processors.find((p, i) => i > 0 && held.some((l) => l.owner === p.name)) ?? first
    victim.child.kill("SIGKILL")
    const killedAt = Date.now()
    const takenOver = await timeUntil(
      (all) => workable(all).every((l) => l.owner !== null && l.owner !== victim.name),
      FAILOVER_MS * 2 + 3_000,
    )
    console.log(`${shape.name}: ${victim.name}'s shards owned again ${takenOver} ms after SIGKILL`)
    expect(Date.now() - killedAt).toBeLessThanOrEqual(FAILOVER_MS * 2 + 3_000)

    await new Promise((r) => setTimeout(r, 1_500))
    await load.stop()

    // Every acknowledged message stored exactly once (FINAL: as every read sees it), each
    // device's in publish order, nothing stored that was never sent.
    const ackedCount = [...load.acked.values()].reduce((n, ids) => n + ids.length, 0)
    expect(ackedCount).toBeGreaterThan(DEVICES * 20)
    const rows = await eventually(
      () =>
        query<{ device_id: string; msg_id: string; n: string }>(
          peer!.url,
          "SELECT device_id, msg_id, count() AS n FROM sluice.telemetry FINAL WHERE tenant_id = 'demo' " +
            "AND device_id LIKE 'sim-thermo-%' GROUP BY device_id, msg_id ORDER BY device_id, min(ts)",
        ),
      (r) => [...load.acked].every(([d, ns]) => ns.every((n) => r.some((x) => x.msg_id === `${d}-${n}`))),
    )
    expect(rows.every((r) => Number(r.n) === 1)).toBe(true)
    expect(rows.every((r) => load.sent.has(r.msg_id))).toBe(true)
    for (const [deviceId, ns] of load.acked) {
      const stored = rows
        .filter((r) => r.device_id === deviceId)
        .map((r) => Number(r.msg_id.split("-").at(-1)))
      for (const n of ns) expect(stored).toContain(n)
      // Stored in device time; the ids follow the order in which the device published them.
      expect(stored).toEqual([...stored].sort((a, b) => a - b))
    }
    // Duplicate rows before merges, if any, are what FINAL folds: report them.
    const raw = await query<{ n: string }>(
      peer!.url,
      "SELECT count() AS n FROM sluice.telemetry WHERE device_id LIKE 'sim-thermo-%'",
    )
    console.log(
      `${shape.name}: ${ackedCount} acknowledged, ${rows.length} stored, ${raw[0]!.n} rows before FINAL`,
    )

    // Graceful hand-off: a processor stopped with SIGTERM releases its leases.
    const survivor = processors.find((p) => p !== victim && !exited(p))!
    expect(await stop(survivor)).toBe(0)
    const after = await leases()
    expect(after.some((l) => l.owner === survivor.name)).toBe(false)
  })
}

describe("processors sharing a Kinesis stream (kinesalite) by leases in DynamoDB (dynalite), one ClickHouse HTTP peer", () => {
  let kinesis: KinesisEmulator | undefined
  let dynamo: DynamoEmulator | undefined
  const stream = "sluice-leases-test"
  beforeAll(async () => {
    ;[kinesis, dynamo] = await Promise.all([startKinesalite(), startDynalite()])
  }, 60_000)
  afterAll(async () => {
    await kinesis?.stop()
    await dynamo?.stop()
  })
  const aws = () => ({
    SLUICE_STREAM_BACKEND: "kinesis",
    SLUICE_KINESIS_ENDPOINT: kinesis!.endpoint,
    SLUICE_KINESIS_STREAM_NAME: stream,
    SLUICE_KINESIS_REGION: "us-east-1",
    SLUICE_KINESIS_ACCESS_KEY_ID: "test",
    SLUICE_KINESIS_SECRET_ACCESS_KEY: "test",
    SLUICE_KINESIS_SHARD_COUNT: "4",
    SLUICE_LEASES_ENDPOINT: dynamo!.endpoint,
  })
  scenario({
    name: "kinesis",
    processors: 3,
    env: aws,
    leases: () =>
      DynamoShardLeases.layerWith({
        table: "sluice-leases-processor",
        endpoint: dynamo!.endpoint,
        region: "us-east-1",
        accessKeyId: "test",
        secretAccessKey: Redacted.make("test"),
      }),
    split: async (shardId) => {
      const client = kinesisClientFor(kinesis!.endpoint)
      const described = await client.send(new DescribeStreamCommand({ StreamName: stream }))
      const shard = described.StreamDescription!.Shards!.find((s) => s.ShardId === shardId)!
      const start = BigInt(shard.HashKeyRange!.StartingHashKey!)
      const end = BigInt(shard.HashKeyRange!.EndingHashKey!)
      await client.send(
        new SplitShardCommand({
          StreamName: stream,
          ShardToSplit: shardId,
          NewStartingHashKey: ((start + end) / 2n).toString(),
        }),
      )
      client.destroy()
    },
  })
})

describe("processors sharing the embedded log by leases in its own database, one ClickHouse HTTP peer", () => {
  scenario({
    name: "embedded",
    processors: 2,
    env: () => ({}),
    leases: (dataDir) => SqliteShardLeases.layerWith({ dataDir, application: "processor", fsync: false }),
  })
})
