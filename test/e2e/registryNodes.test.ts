/**
 * Two nodes sharing one device registry on DynamoDB (dynalite), nothing else: each node has its
 * own data directory (its own embedded stream, no `registry.sqlite`), node A runs `--role ingress`
 * and `--role serving` (the admin API; ClickHouse is the HTTP peer), node B runs `--role ingress`
 * alone. A device created through node A's admin API publishes through node B's ingress within
 * 5 s; disabled through A, it is refused by B within 5 s.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { DynamoDBClient, ScanCommand } from "@aws-sdk/client-dynamodb"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { parse } from "yaml"
import { type ClickHouseHttpPeer, startClickHouseHttpPeer } from "../support/clickhouseHttpPeer.js"
import { type DynamoEmulator, startDynalite } from "../support/emulators.js"
import { DEMO_KEY, freePort } from "./platform.js"
import { type RoleProcess, ready, startRole, stop } from "./roleProcess.js"

const root = fileURLToPath(new URL("../..", import.meta.url))
const TABLE = "sluice-registry-nodes"
const CREDENTIALS = { accessKeyId: "AKIAEMULATOR00000000", secretAccessKey: "emulator-secret" }

let dynalite: DynamoEmulator | undefined
let peer: ClickHouseHttpPeer | undefined
const roles: Array<RoleProcess> = []
const nodeA = mkdtempSync(join(tmpdir(), "sluice-node-a-"))
const nodeB = mkdtempSync(join(tmpdir(), "sluice-node-b-"))
let adminUrl = ""
let ingestA = ""
let ingestB = ""

const outputs = () => roles.map((r) => `--- ${r.name}\n${r.output()}`).join("\n")

beforeAll(async () => {
  ;[dynalite, peer] = await Promise.all([startDynalite(), startClickHouseHttpPeer()])
  // The demo configuration without its 20,000-device fleet: every node applies the file at start,
  // and three nodes writing 20,000 rows each to an emulator on a loaded 2-core machine take longer
  // than the test needs to.
  const demo = parse(readFileSync(join(root, "config/demo.yaml"), "utf8")) as Record<string, unknown>
  const config = join(nodeA, "platform.json")
  writeFileSync(config, JSON.stringify({ ...demo, fleets: [] }))
  const shared = {
    SLUICE_CONFIG_FILE: config,
    SLUICE_REGISTRY_TABLE: TABLE,
    SLUICE_REGISTRY_ENDPOINT: dynalite.endpoint,
    SLUICE_REGISTRY_POLL_MS: "200",
    SLUICE_KINESIS_REGION: "us-east-1",
    SLUICE_KINESIS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
    SLUICE_KINESIS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
  }
  const ingress = async (name: string, dataDir: string) => {
    const [mqtt, http] = [await freePort(), await freePort()]
    roles.push(
      startRole(
        name,
        ["--role", "ingress", "--mqtt-port", String(mqtt), "--ingress-http-port", String(http)],
        {
          ...shared,
          SLUICE_DATA_DIR: dataDir,
        },
      ),
    )
    return `http://127.0.0.1:${http}`
  }
  const httpPort = await freePort()
  adminUrl = `http://127.0.0.1:${httpPort}`
  roles.push(
    startRole("serving (node A)", ["--role", "serving", "--http-port", String(httpPort)], {
      ...shared,
      SLUICE_DATA_DIR: nodeA,
      SLUICE_CLICKHOUSE_URL: peer.url,
    }),
  )
  ingestA = await ingress("ingress (node A)", nodeA)
  ingestB = await ingress("ingress (node B)", nodeB)
  expect(await ready(adminUrl, ingestA, ingestB), outputs()).toBe(true)
}, 120_000)

afterAll(async () => {
  const codes = await Promise.all(roles.map((r) => stop(r, { killAfterMs: 20_000 })))
  await Promise.all([peer?.stop(), dynalite?.stop()])
  expect(codes, outputs()).toEqual(roles.map(() => 0))
}, 60_000)

/** A JSON request to node A's admin API with the demo tenant's admin key. */
const admin = async (method: string, path: string, body?: unknown) => {
  const response = await fetch(`${adminUrl}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${DEMO_KEY}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  // biome-ignore lint/suspicious/noExplicitAny: the test inspects the fields it needs
  return { status: response.status, body: (await response.json().catch(() => undefined)) as any }
}

let sent = 0
/** One thermostat reading over HTTP ingest at `url` with `credential`; the status. */
const publish = async (url: string, credential: string) => {
  const response = await fetch(`${url}/v1/telemetry`, {
    method: "POST",
    headers: { authorization: `Bearer ${credential}`, "content-type": "application/json" },
    body: JSON.stringify({ id: `nodes-${++sent}`, ts: Date.now(), temp_f: 71.6, humidity: 41.5 }),
  })
  await response.arrayBuffer()
  return response.status
}

/** Publishes every 100 ms until the answer is `status`; the milliseconds it took, or fails after `withinMs`. */
const untilStatus = async (url: string, credential: string, status: number, withinMs: number) => {
  const started = Date.now()
  let last = 0
  while (Date.now() - started < withinMs) {
    last = await publish(url, credential)
    if (last === status) return Date.now() - started
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`${url} still answered ${last}, not ${status}, after ${withinMs} ms\n${outputs()}`)
}

describe("two nodes sharing a DynamoDB device registry", () => {
  it("a device created through node A publishes through node B within 5 s, and is refused there within 5 s of being disabled", {
    timeout: 60_000,
  }, async () => {
    const created = await admin("POST", "/v1/devices", { id: "roaming-1", class: "thermostat" })
    expect(created.status, JSON.stringify(created.body)).toBe(201)
    const credential = created.body.credential as string
    expect(typeof credential).toBe("string")

    const acceptedAfter = await untilStatus(ingestB, credential, 202, 5_000)
    expect(acceptedAfter).toBeLessThan(5_000)
    // And on node A's own ingress too.
    expect(await untilStatus(ingestA, credential, 202, 5_000)).toBeLessThan(5_000)

    expect((await admin("POST", "/v1/devices/roaming-1/disable")).status).toBe(200)
    const refusedAfter = await untilStatus(ingestB, credential, 401, 5_000)
    expect(refusedAfter).toBeLessThan(5_000)
    console.log(
      `registry across nodes: accepted on B after ${acceptedAfter} ms, refused after ${refusedAfter} ms`,
    )

    // The nodes share the table and nothing else: no registry file in either data directory, and
    // the credential is stored only as a hash.
    expect(existsSync(join(nodeA, "registry.sqlite"))).toBe(false)
    expect(existsSync(join(nodeB, "registry.sqlite"))).toBe(false)
    const client = new DynamoDBClient({
      endpoint: dynalite!.endpoint,
      region: "us-east-1",
      credentials: CREDENTIALS,
    })
    try {
      const items = []
      let start: Record<string, never> | undefined
      do {
        const page = await client.send(new ScanCommand({ TableName: TABLE, ExclusiveStartKey: start }))
        items.push(...(page.Items ?? []))
        start = page.LastEvaluatedKey as Record<string, never> | undefined
      } while (start !== undefined)
      const text = JSON.stringify(items)
      expect(text).toContain("device#roaming-1")
      expect(text.includes(credential)).toBe(false)
    } finally {
      client.destroy()
    }
  })
})
