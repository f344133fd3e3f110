/**
 * HTTP ingest: the handlers of the `ingest` group (`IngestApi.ts`). A body is read with a byte
 * bound (Content-Length checked first, streamed bytes counted), parsed only to answer 400 with
 * the reason, and appended as the original bytes; the 202 is sent once the append is durable.
 */
import type { IncomingMessage } from "node:http"
import { HttpApi, HttpApiBuilder, HttpServerResponse } from "@effect/platform"
import { NodeHttpServerRequest } from "@effect/platform-node"
import { Effect, Layer, Option, Redacted, Schema } from "effect"
import { Metrics } from "../observability/Metrics.js"
import { encodeEnvelope, partitionKeyOf } from "../tenancy/Envelope.js"
import { Tenancy } from "../tenancy/Tenancy.js"
import * as Appender from "./Appender.js"
import {
  CurrentDevice,
  DeviceAuthentication,
  DeviceUnauthorized,
  IngestApi,
  IngestThrottled,
  IngestUnavailable,
  InvalidPayload,
  MalformedJson,
  PayloadTooLarge,
} from "./IngestApi.js"
import * as IngressConfig from "./IngressConfig.js"
import { locateJsonSyntaxError } from "./JsonSyntax.js"

/** Checks the bearer token against the device registry. */
export const deviceAuthenticationLayer = Layer.effect(
  DeviceAuthentication,
  Effect.gen(function* () {
    const tenancy = yield* Tenancy
    const refused = (yield* Metrics).refused.labels({ transport: "http", reason: "auth" })
    return DeviceAuthentication.of({
      deviceCredential: (token) => {
        const credential = Redacted.value(token)
        const device = credential === "" ? Option.none() : tenancy.deviceByCredential(credential)
        if (Option.isSome(device)) return Effect.succeed(device.value)
        refused.inc()
        return Effect.fail(
          new DeviceUnauthorized({
            message:
              credential === ""
                ? "missing Authorization: Bearer <device credential>"
                : "the bearer token is not a device credential",
          }),
        )
      },
    })
  }),
)

// HttpApi encodes a declared error as its JSON body and status, but cannot add headers; the
// answers below need `Retry-After` or `Connection: close`, so they are built here, with the very
// bodies (the error classes' encodings) the OpenAPI document declares.

/** A body over the limit: the answer closes the connection, so the rest of the body is never read. */
const tooLarge = (maxBytes: number, what: string) =>
  HttpServerResponse.unsafeJson(
    Schema.encodeSync(PayloadTooLarge)(
      new PayloadTooLarge({ message: `${what} is larger than the ${maxBytes}-byte limit`, maxBytes }),
    ),
    { status: 413, headers: { connection: "close" } },
  )

const retryLater = (error: IngestThrottled | IngestUnavailable) =>
  HttpServerResponse.unsafeJson(
    error._tag === "IngestThrottled"
      ? Schema.encodeSync(IngestThrottled)(error)
      : Schema.encodeSync(IngestUnavailable)(error),
    {
      status: error._tag === "IngestThrottled" ? 429 : 503,
      headers: { "retry-after": String(error.retryAfterSeconds) },
    },
  )

const retryAfterSeconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000))

/** The body, or `undefined` once more than `maxBytes` arrived (the rest stays unread). */
const readBody = (source: IncomingMessage, maxBytes: number) =>
  Effect.async<Buffer | undefined>((resume) => {
    if (source.readableEnded) return resume(Effect.succeed(Buffer.alloc(0)))
    const chunks: Array<Buffer> = []
    let bytes = 0
    const stop = () => {
      source.off("data", onData)
      source.off("end", onEnd)
      source.off("error", onError)
    }
    const onData = (chunk: Buffer) => {
      bytes += chunk.byteLength
      if (bytes > maxBytes) {
        stop()
        source.pause()
        resume(Effect.succeed(undefined))
      } else {
        chunks.push(chunk)
      }
    }
    const onEnd = () => {
      stop()
      resume(Effect.succeed(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, bytes)))
    }
    // The client went away mid-body: there is nobody to answer.
    const onError = () => {
      stop()
      resume(Effect.interrupt)
    }
    source.on("data", onData)
    source.once("end", onEnd)
    source.once("error", onError)
    return Effect.sync(stop)
  })

const kindOf = (value: unknown) =>
  value === null
    ? "null"
    : Array.isArray(value)
      ? "an array"
      : typeof value === "object"
        ? "an object"
        : `a ${typeof value}`

const isObject = (value: unknown) => typeof value === "object" && value !== null && !Array.isArray(value)

/** How many readings the parsed body holds, or why it is not a reading or a list of them. */
const readingsIn = (value: unknown): number | InvalidPayload => {
  if (isObject(value)) return 1
  if (!Array.isArray(value)) {
    return new InvalidPayload({
      message: `the body is ${kindOf(value)}; expected a JSON object or a non-empty array of objects`,
    })
  }
  if (value.length === 0)
    return new InvalidPayload({ message: "the body is an empty array; expected at least one object" })
  for (let i = 0; i < value.length; i++) {
    if (!isObject(value[i])) {
      return new InvalidPayload({
        message: `element ${i} of the array is ${kindOf(value[i])}; every element must be an object`,
      })
    }
  }
  return value.length
}

/** RFC 8259 §8.1: JSON is UTF-8. The BOM is kept so that what ingress accepts, the device actor can parse. */
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/** Parses the body (only to answer 400 with the reason) and counts its readings. */
const parse = (body: Buffer): Effect.Effect<number, MalformedJson | InvalidPayload> => {
  let text: string
  try {
    text = utf8.decode(body)
  } catch {
    return Effect.fail(new InvalidPayload({ message: "the body is not valid UTF-8 (RFC 8259 §8.1)" }))
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    const located = locateJsonSyntaxError(text)
    return Effect.fail(
      located === undefined
        ? new MalformedJson({ message: `malformed JSON: ${(error as Error).message}`, line: 1, column: 1 })
        : new MalformedJson({
            message: `malformed JSON at line ${located.line}, column ${located.column}: ${located.problem}`,
            line: located.line,
            column: located.column,
          }),
    )
  }
  const readings = readingsIn(value)
  return typeof readings === "number" ? Effect.succeed(readings) : Effect.fail(readings)
}

/**
 * The `ingest` group's handlers for `api`, any HttpApi that includes `IngestApi` (the serving API,
 * or an ingress-only one). Requires StreamLog, Tenancy and Metrics.
 */
export const layerWith = <ApiId extends string>(
  api: { readonly identifier: ApiId },
  config: IngressConfig.IngressConfig,
) =>
  // Handler layers are keyed by the API's identifier only, so the group is built against an API
  // of that identifier holding just this group; the routes join whatever API serves them.
  HttpApiBuilder.group(HttpApi.make(api.identifier).add(IngestApi), "ingest", (handlers) =>
    Effect.gen(function* () {
      const appender = yield* Appender.make({
        maxRecords: config.maxBatchRecords,
        maxBytes: config.maxBatchBytes,
      })
      const metrics = yield* Metrics
      const ingested = metrics.ingested.labels({ transport: "http" })
      const refused = (reason: string) => metrics.refused.labels({ transport: "http", reason })
      const refusedMalformed = refused("malformed")
      const refusedTooLarge = refused("too_large")
      const refusedPushback = refused("pushback")
      const refusedUnavailable = refused("unavailable")
      const refusedQuota = refused("quota")
      const tenancy = yield* Tenancy
      let inFlight = 0

      const ingest = Effect.fn("Ingest.telemetry")(function* (source: IncomingMessage) {
        const device = yield* CurrentDevice
        // Over the tenant's quota: refused before the body is read; only this tenant waits.
        const reservation = tenancy.reserve(device.tenantId, 0)
        if (!reservation.granted) {
          refusedQuota.inc()
          return retryLater(
            new IngestThrottled({
              message: `nothing stored: tenant ${device.tenantId} is over its ingest quota`,
              retryAfterSeconds: retryAfterSeconds(reservation.waitMs),
            }),
          )
        }
        const declared = source.headers["content-length"]
        if (declared !== undefined && Number(declared) > config.maxPayloadBytes) {
          refusedTooLarge.inc()
          return tooLarge(config.maxPayloadBytes, `the declared body (Content-Length: ${declared})`)
        }
        const body = yield* readBody(source, config.maxPayloadBytes)
        if (body === undefined) {
          refusedTooLarge.inc()
          return tooLarge(config.maxPayloadBytes, "the body")
        }
        const readings = yield* parse(body).pipe(
          Effect.tapError(() => Effect.sync(() => refusedMalformed.inc())),
        )
        const { tenantId, deviceId, deviceClass } = device
        return yield* appender
          .append({
            partitionKey: partitionKeyOf(tenantId, deviceId),
            data: encodeEnvelope({ tenantId, deviceId, deviceClass, receivedAt: Date.now() }, body),
          })
          .pipe(
            Effect.map((appended) => {
              ingested.inc()
              return HttpServerResponse.unsafeJson(
                { accepted: readings, shardId: appended.shardId, sequenceNumber: appended.sequenceNumber },
                { status: 202 },
              )
            }),
            Effect.catchTags({
              StreamFull: (error) => {
                refusedPushback.inc()
                return Effect.as(
                  Effect.logWarning(`ingest refused: ${error.message}`),
                  retryLater(
                    new IngestThrottled({
                      message: `nothing stored: ${error.message}`,
                      retryAfterSeconds: retryAfterSeconds(error.retryAfterMs),
                    }),
                  ),
                )
              },
              StreamUnavailable: (error) => {
                refusedUnavailable.inc()
                return Effect.as(
                  Effect.logWarning(`ingest refused: ${error.message}`),
                  retryLater(
                    new IngestUnavailable({
                      message: `nothing stored: ${error.message}`,
                      retryAfterSeconds: retryAfterSeconds(config.unavailableRetryAfterMs),
                    }),
                  ),
                )
              },
              // The record size is bounded by the config's validation; this is the backstop.
              RecordTooLarge: () => Effect.sync(() => tooLarge(config.maxPayloadBytes, "the body")),
              // One record per request and a key from the registry: a bug, or a registry id too long.
              EmptyBatch: Effect.die,
              InvalidPartitionKey: Effect.die,
            }),
            Effect.annotateLogs({ tenantId, deviceId }),
          )
      })

      return handlers.handleRaw("telemetry", ({ request }) => {
        // Bounds the memory bodies can hold: at most this many requests read a body at once.
        if (inFlight >= config.httpMaxInFlight) {
          refusedPushback.inc()
          return Effect.succeed(
            retryLater(
              new IngestThrottled({
                message: `ingress is handling ${inFlight} requests, its limit; nothing stored`,
                retryAfterSeconds: 1,
              }),
            ),
          )
        }
        inFlight++
        return ingest(NodeHttpServerRequest.toIncomingMessage(request)).pipe(
          Effect.ensuring(Effect.sync(() => inFlight--)),
        )
      })
    }),
  ).pipe(Layer.provide(deviceAuthenticationLayer))

/** The `ingest` handlers with the ingress settings from the environment (SLUICE_INGRESS_*). */
export const layer = <ApiId extends string>(api: { readonly identifier: ApiId }) =>
  Layer.unwrapEffect(Effect.map(IngressConfig.config, (config) => layerWith(api, config)))
