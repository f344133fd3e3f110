/**
 * `npm run bench:leases`: how fast processors share a stream's shards by lease, and what the
 * lease table costs at rest, with the default failover time (10 s) — KCL's model on DynamoDB.
 *
 * Real parts: `DynamoShardLeases` against dynalite (DynamoDB's API, from npm) through a counting
 * HTTP proxy, so every request a worker makes is counted as DynamoDB would bill it; the workers are
 * `LeaseCoordinator`s, each with its own client as separate processes would have. A "kill" closes
 * a worker's scope without its hand-off: it stops renewing, exactly as a SIGKILLed process does,
 * and the others must wait out the failover time.
 *
 * Measures, over `--shards` shards (default 8):
 * - a first worker alone: time until it owns every shard;
 * - a second and a third join: time until the three hold fair shares;
 * - one is killed: time until its shards are owned again;
 * - at rest (`--rest` seconds, default 30): lease-table read and write requests per second per worker.
 *
 * npm run bench:leases [-- --shards 8 --rest 30]
 */
import { createServer, request as httpRequest } from "node:http"
import type { AddressInfo } from "node:net"
import { parseArgs } from "node:util"
import { Effect, Exit, Redacted, Scope } from "effect"
import * as DynamoShardLeases from "../../src/stream/DynamoShardLeases.js"
import * as LeaseCoordinator from "../../src/stream/LeaseCoordinator.js"
import { type Lease, ShardLeases } from "../../src/stream/ShardLeases.js"
import type { ShardInfo } from "../../src/stream/StreamLog.js"
import { startDynalite } from "../../test/support/emulators.js"

const { values } = parseArgs({
  options: {
    shards: { type: "string", default: "8" },
    rest: { type: "string", default: "30" },
  },
})
const shardCount = Number(values.shards)
const restSeconds = Number(values.rest)
const FAILOVER_MS = 10_000

const dynalite = await startDynalite()

// Each worker talks to DynamoDB through a proxy of its own, which counts its requests as reads or
// writes by operation (X-Amz-Target).
interface Counts {
  reads: number
  writes: number
}
const READS = new Set(["Scan", "GetItem", "Query", "DescribeTable"])
const proxy = async (counts: Counts) => {
  const target = new URL(dynalite.endpoint)
  const server = createServer((req, res) => {
    const op = String(req.headers["x-amz-target"] ?? "").split(".")[1] ?? "?"
    if (READS.has(op)) counts.reads++
    else counts.writes++
    const upstream = httpRequest(
      { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 500, up.headers)
        up.pipe(res)
      },
    )
    upstream.on("error", () => res.destroy())
    req.pipe(upstream)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() }
}

const shards: ReadonlyArray<ShardInfo> = Array.from({ length: shardCount }, (_, i) => ({
  shardId: `shardId-${String(i).padStart(12, "0")}`,
  hashKeyStart: 0n,
  hashKeyEnd: 0n,
}))

interface Worker {
  readonly id: string
  readonly counts: Counts
  readonly scope: Scope.CloseableScope
  readonly coordinator: LeaseCoordinator.LeaseCoordinator
}

const table = "sluice-leases-bench"
const layerFor = (endpoint: string) =>
  DynamoShardLeases.layerWith({
    table,
    endpoint,
    region: "us-east-1",
    accessKeyId: "bench",
    secretAccessKey: Redacted.make("bench"),
  })

const startWorker = async (id: string): Promise<Worker> => {
  const counts: Counts = { reads: 0, writes: 0 }
  const { url } = await proxy(counts)
  const scope = Effect.runSync(Scope.make())
  const coordinator = await Effect.runPromise(
    LeaseCoordinator.make({ workerId: id, shards: Effect.succeed(shards), failoverMs: FAILOVER_MS }).pipe(
      Effect.provide(layerFor(url)),
      Scope.extend(scope),
    ),
  )
  return { id, counts, scope, coordinator }
}

const list = () =>
  Effect.runPromise(
    Effect.flatMap(ShardLeases, (l) => l.list).pipe(
      Effect.provide(layerFor(dynalite.endpoint)),
      Effect.scoped,
    ),
  )

const timeUntil = async (check: (all: ReadonlyArray<Lease>) => boolean) => {
  const started = Date.now()
  for (;;) {
    const all = await list()
    if (check(all)) return Date.now() - started
    if (Date.now() - started > 120_000) throw new Error(`not within 120 s: ${JSON.stringify(all)}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}
const ownedBy = (all: ReadonlyArray<Lease>, ids: ReadonlyArray<string>) =>
  all.length === shardCount && all.every((l) => l.owner !== null && ids.includes(l.owner))
const fair = (all: ReadonlyArray<Lease>, ids: ReadonlyArray<string>) =>
  ownedBy(all, ids) &&
  ids.every((id) => all.filter((l) => l.owner === id).length >= Math.floor(shardCount / ids.length))

const results: Array<[string, string]> = []
const t0 = Date.now()
const a = await startWorker("worker-a")
await timeUntil((all) => ownedBy(all, ["worker-a"]))
results.push(["first worker alone: all shards owned", `${Date.now() - t0} ms after it started`])
const joined = Date.now()
const b = await startWorker("worker-b")
const c = await startWorker("worker-c")
await timeUntil((all) => fair(all, ["worker-a", "worker-b", "worker-c"]))
results.push(["two more join: fair shares", `${Date.now() - joined} ms after they started`])

// At rest: count requests over `restSeconds` with three workers and fair shares.
for (const w of [a, b, c]) Object.assign(w.counts, { reads: 0, writes: 0 })
await new Promise((r) => setTimeout(r, restSeconds * 1000))
for (const w of [a, b, c]) {
  const held = (await Effect.runPromise(w.coordinator.held)).size
  results.push([
    `at rest, ${w.id} (${held} leases)`,
    `${(w.counts.reads / restSeconds).toFixed(2)} reads/s, ${(w.counts.writes / restSeconds).toFixed(2)} writes/s`,
  ])
}

// Kill c: its scope closes without hand-off (no release), as a SIGKILL.
const killed = Date.now()
await Effect.runPromise(Scope.close(c.scope, Exit.void))
await timeUntil((all) => ownedBy(all, ["worker-a", "worker-b"]))
results.push([
  `worker-c killed: its shards owned again`,
  `${Date.now() - killed} ms after (failover ${FAILOVER_MS} ms)`,
])

for (const w of [a, b]) {
  await Effect.runPromise(w.coordinator.shutdown)
  await Effect.runPromise(Scope.close(w.scope, Exit.void))
}
await dynalite.stop()

console.log(
  `\nlease bench: ${shardCount} shards, DynamoShardLeases on dynalite, failover ${FAILOVER_MS} ms\n`,
)
for (const [what, value] of results) console.log(`  ${what.padEnd(44)} ${value}`)
process.exit(0)
