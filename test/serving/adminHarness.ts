/**
 * The admin API on a real stack for tests: the serving listener over a SQLite registry (the
 * configuration applied first), the Tenancy following it every 100 ms, and chDB; plus one request
 * helper. Shared by the admin, certificate-authority and provisioning-claim tests.
 */
import { Effect, Layer } from "effect"
import * as LiveFeed from "../../src/actors/LiveFeed.js"
import * as Health from "../../src/observability/Health.js"
import * as Metrics from "../../src/observability/Metrics.js"
import * as HttpServing from "../../src/serving/HttpServer.js"
import * as ClickHouseTelemetryStore from "../../src/storage/ClickHouseTelemetryStore.js"
import * as Apply from "../../src/tenancy/Apply.js"
import type { PlatformConfig } from "../../src/tenancy/PlatformConfig.js"
import * as SqliteRegistry from "../../src/tenancy/SqliteRegistry.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"
import { baseUrl } from "./harness.js"

/** The serving listener on a free port with everything it needs, `config` applied to the registry. */
export const adminServer = (
  config: PlatformConfig,
  dirs: { readonly dataDir: string; readonly storeDir: string; readonly database: string },
) => {
  const registry = Layer.effectDiscard(Effect.orDie(Apply.apply(config))).pipe(
    Layer.provideMerge(SqliteRegistry.layerWith({ dataDir: dirs.dataDir, fsync: false })),
  )
  const dependencies = Layer.mergeAll(
    ClickHouseTelemetryStore.layerWith(ClickHouseTelemetryStore.embedded(dirs.storeDir, dirs.database)),
    LiveFeed.layer,
    Metrics.layer,
    Health.layerReady(["serving"]),
  ).pipe(
    Layer.provideMerge(Layer.scoped(Tenancy.Tenancy, Tenancy.live<never, never>({ pollMs: 100 }))),
    Layer.provideMerge(registry),
  )
  return HttpServing.layerWith({ host: "127.0.0.1", port: 0 }).pipe(Layer.provideMerge(dependencies))
}

export interface Answer {
  readonly status: number
  readonly text: string
  readonly headers: Headers
  // biome-ignore lint/suspicious/noExplicitAny: answers are inspected field by field
  readonly json: any
}

/** One request to `url`: `json` is sent as JSON, `body` as is (with `contentType`). */
export const fetchAnswer = (
  url: string,
  method: string,
  options: {
    readonly headers?: Record<string, string>
    readonly json?: unknown
    readonly body?: string
    readonly contentType?: string
  } = {},
) =>
  Effect.promise(async (): Promise<Answer> => {
    const headers: Record<string, string> = { ...options.headers }
    let body: string | undefined
    if (options.json !== undefined) {
      body = JSON.stringify(options.json)
      headers["content-type"] = "application/json"
    } else if (options.body !== undefined) {
      body = options.body
      headers["content-type"] = options.contentType ?? "application/json"
    }
    const response = await fetch(url, { method, headers, ...(body === undefined ? {} : { body }) })
    const text = await response.text()
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      json = undefined
    }
    return { status: response.status, text, headers: response.headers, json }
  })

/** One request to the serving listener with `key` as the bearer token. */
export const call = (
  method: string,
  path: string,
  options: {
    readonly key?: string
    readonly json?: unknown
    readonly body?: string
    readonly contentType?: string
  } = {},
) =>
  Effect.flatMap(baseUrl, (base) =>
    fetchAnswer(base + path, method, {
      ...options,
      headers: options.key === undefined ? {} : { authorization: `Bearer ${options.key}` },
    }),
  )
