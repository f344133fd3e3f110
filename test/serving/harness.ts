/**
 * The serving tier on a real stack for tests: the HTTP server on 127.0.0.1 (a free port), chDB in
 * a temporary directory (one per test file: chDB binds one directory per process), the LiveFeed
 * and an in-memory Tenancy of two tenants.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { HttpServer } from "@effect/platform"
import { Effect, Layer } from "effect"
import * as LiveFeed from "../../src/actors/LiveFeed.js"
import * as Health from "../../src/observability/Health.js"
import * as Metrics from "../../src/observability/Metrics.js"
import * as HttpServing from "../../src/serving/HttpServer.js"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import type { TelemetryRow } from "../../src/storage/TelemetryStore.js"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import type { PlatformConfig } from "../../src/tenancy/PlatformConfig.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"

export const keyA = "tenant-a-key-0123456789"
export const keyB = "tenant-b-key-0123456789"

export const platform: PlatformConfig = {
  tenants: [
    { id: "tenant-a", api_keys: [keyA] },
    { id: "tenant-b", api_keys: [keyB] },
  ],
  device_classes: [
    {
      name: "climate",
      fields: {
        temperature: { type: "number" },
        humidity: { type: "number" },
        door_open: { type: "boolean" },
        label: { type: "string" },
      },
    },
  ],
  // One device per concern, so the tests of a file (which share one store) cannot disturb each other.
  devices: [
    ...["a-1", "a-2", "a-hist", "a-agg", "a-latest", "a-idle"].map((id) => ({
      id,
      tenant: "tenant-a",
      class: "climate",
      credential: `${id}-secret`,
    })),
    { id: "b-1", tenant: "tenant-b", class: "climate", credential: "b-1-secret" },
  ],
}

/** A chDB store in a fresh temporary directory, removed when the layer is released. */
const storeLayer = Layer.unwrapScoped(
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(tmpdir(), "sluice-serving-"))),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true })),
    ),
    (dir) => ClickHouseTelemetryStore.layerWith(ClickHouseTelemetryStore.embedded(dir, "serving")),
  ),
)

/** The embedded stream log (ingest appends to it) in a fresh temporary directory. */
const streamLayer = Layer.unwrapScoped(
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(tmpdir(), "sluice-serving-log-"))),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true })),
    ),
    (dir) => SqliteStreamLog.layerWith({ ...SqliteStreamLog.defaults(dir), fsync: false }),
  ),
)

/** Everything the server needs, also exposed to the test (to insert rows, publish, read metrics). */
export const dependencies = Layer.mergeAll(
  storeLayer,
  streamLayer,
  Tenancy.layer(platform),
  LiveFeed.layer,
  Metrics.layer,
  Health.layerReady(["serving"]),
)

/** The server on 127.0.0.1 and a free port, over `dependencies`. */
export const TestServing = HttpServing.layerWith({ host: "127.0.0.1", port: 0 }).pipe(
  Layer.provideMerge(dependencies),
)

/** The server's base URL, e.g. `http://127.0.0.1:41234`. */
export const baseUrl = Effect.flatMap(HttpServer.HttpServer, ({ address }) =>
  address._tag === "TcpAddress"
    ? Effect.succeed(`http://127.0.0.1:${address.port}`)
    : Effect.dieMessage("expected a TCP address"),
)

export interface Response {
  readonly status: number
  readonly contentType: string | null
  readonly text: string
  readonly json: unknown
}

/** A GET with an optional API key; the body is read whole. */
export const get = (path: string, headers: Record<string, string> = {}) =>
  Effect.flatMap(baseUrl, (base) =>
    Effect.promise(async (): Promise<Response> => {
      const response = await fetch(base + path, { headers })
      const text = await response.text()
      let json: unknown
      try {
        json = JSON.parse(text)
      } catch {
        json = undefined
      }
      return { status: response.status, contentType: response.headers.get("content-type"), text, json }
    }),
  )

/** A GET as tenant A (bearer) or with any key. */
export const getAs = (key: string, path: string) => get(path, { authorization: `Bearer ${key}` })

export const t0 = Date.UTC(2025, 0, 1)

/** A reading of `climate` by tenant A's a-1 unless overridden. */
export const reading = (over: Partial<TelemetryRow> & { readonly ts: number }): TelemetryRow => ({
  tenantId: "tenant-a",
  deviceId: "a-1",
  deviceClass: "climate",
  msgId: `m-${over.ts}`,
  receivedAt: over.ts + 100,
  values: { temperature: 20, humidity: 50, door_open: false, label: "hall" },
  ...over,
})
