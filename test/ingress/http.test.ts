/**
 * HTTP ingest over real HTTP (fetch) against a real server on 127.0.0.1, appending to the real
 * embedded log. The group is mounted in a test HttpApi the way the serving API mounts it.
 */
import { createServer } from "node:http"
import { HttpApi, HttpApiBuilder, HttpServer, OpenApi } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import * as HttpIngress from "../../src/ingress/HttpIngress.js"
import { IngestApi } from "../../src/ingress/IngestApi.js"
import { partitionKeyOf } from "../../src/tenancy/Envelope.js"
import {
  allRecords,
  counter,
  dependencies,
  device1,
  device2,
  device3,
  envelopeOf,
  ingressConfig,
  MAX_PAYLOAD_BYTES,
} from "./harness.js"

class TestApi extends HttpApi.make("ingress-test").add(IngestApi) {}

/** The ingest route on 127.0.0.1 and a free port, over the harness's dependencies. */
const server = (options: { readonly streamMaxBytes?: number; readonly httpMaxInFlight?: number } = {}) =>
  HttpApiBuilder.serve().pipe(
    Layer.provide(HttpApiBuilder.api(TestApi)),
    Layer.provide(
      HttpIngress.layerWith(TestApi, {
        ...ingressConfig,
        ...(options.httpMaxInFlight === undefined ? {} : { httpMaxInFlight: options.httpMaxInFlight }),
      }),
    ),
    Layer.provideMerge(NodeHttpServer.layer(createServer, { host: "127.0.0.1", port: 0 })),
    Layer.provideMerge(
      dependencies(options.streamMaxBytes === undefined ? {} : { streamMaxBytes: options.streamMaxBytes }),
    ),
  )

const url = Effect.flatMap(HttpServer.HttpServer, ({ address }) =>
  address._tag === "TcpAddress"
    ? Effect.succeed(`http://127.0.0.1:${address.port}/v1/telemetry`)
    : Effect.dieMessage("expected a TCP address"),
)

interface Answer {
  readonly status: number
  readonly headers: Headers
  readonly body: Record<string, unknown>
}

const post = (init: {
  readonly body?: string | Uint8Array | ReadableStream<Uint8Array>
  readonly token?: string
  readonly headers?: Record<string, string>
}) =>
  Effect.flatMap(url, (target) =>
    Effect.promise(async (): Promise<Answer> => {
      const response = await fetch(target, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...(init.token === undefined ? {} : { authorization: `Bearer ${init.token}` }),
          ...init.headers,
        },
        ...(init.body === undefined ? {} : { body: init.body }),
        ...(init.body instanceof ReadableStream ? { duplex: "half" } : {}),
      } as RequestInit)
      return {
        status: response.status,
        headers: response.headers,
        body: (await response.json()) as Record<string, unknown>,
      }
    }),
  )

describe("HTTP ingress", () => {
  it.scopedLive(
    "answers 202 after the durable append, with identity from the credential and the bytes as sent",
    () =>
      Effect.gen(function* () {
        // The body names another device: identity comes from the bearer credential only.
        const body = '{ "temperature": 21.5,\n  "deviceId": "thermo-1", "note": "caf\u00e9" }'
        const answer = yield* post({ token: device3.credential, body })
        expect(answer.status).toBe(202)
        const records = yield* allRecords
        expect(records).toHaveLength(1)
        const record = records[0]!
        expect(answer.body).toEqual({
          accepted: 1,
          shardId: record.shardId,
          sequenceNumber: record.sequenceNumber,
        })
        expect(record.partitionKey).toBe(partitionKeyOf(device3.tenant, device3.id))
        const envelope = envelopeOf(record)
        expect([envelope.tenantId, envelope.deviceId, envelope.deviceClass]).toEqual([
          device3.tenant,
          device3.id,
          device3.class,
        ])
        expect(Buffer.from(envelope.payload).equals(Buffer.from(body, "utf8"))).toBe(true)

        const batch = yield* post({ token: device1.credential, body: '[{"t":1},{"t":2},{"t":3}]' })
        expect(batch.status).toBe(202)
        expect(batch.body.accepted).toBe(3)
        expect(yield* allRecords).toHaveLength(2)
        expect(yield* counter("sluice_ingested_messages_total", { transport: "http" })).toBe(2)
      }).pipe(Effect.provide(server())),
  )

  it.scopedLive("answers 401 with a JSON body to a missing or unknown credential, appending nothing", () =>
    Effect.gen(function* () {
      const missing = yield* post({ body: '{"t":1}' })
      expect(missing.status).toBe(401)
      expect(missing.body._tag).toBe("DeviceUnauthorized")
      expect(missing.body.message).toContain("missing")
      const wrong = yield* post({ token: "not-a-credential", body: '{"t":1}' })
      expect(wrong.status).toBe(401)
      expect(wrong.body._tag).toBe("DeviceUnauthorized")
      // A tenant API key is not a device credential.
      const apiKey = yield* post({ token: "acme-api-key-0123456789", body: '{"t":1}' })
      expect(apiKey.status).toBe(401)
      expect(yield* allRecords).toHaveLength(0)
      expect(yield* counter("sluice_refused_messages_total", { transport: "http", reason: "auth" })).toBe(3)
    }).pipe(Effect.provide(server())),
  )

  it.scopedLive("answers 400 to malformed JSON, saying where", () =>
    Effect.gen(function* () {
      const answer = yield* post({ token: device1.credential, body: '{"temperature": 21.5,\n "humidity": }' })
      expect(answer.status).toBe(400)
      expect(answer.body._tag).toBe("MalformedJson")
      expect(answer.body.message).toBe(
        "malformed JSON at line 2, column 14: unexpected '}', expected a value",
      )
      expect([answer.body.line, answer.body.column]).toEqual([2, 14])
      const truncated = yield* post({ token: device1.credential, body: '[{"t":1}' })
      expect(truncated.status).toBe(400)
      expect(truncated.body.message).toBe(
        "malformed JSON at line 1, column 9: unexpected end of input, expected ',' or ']'",
      )
      const empty = yield* post({ token: device1.credential, body: "" })
      expect(empty.status).toBe(400)
      expect(empty.body.message).toContain("unexpected end of input, expected a value")
      const notUtf8 = yield* post({ token: device1.credential, body: new Uint8Array([0x7b, 0xff, 0x7d]) })
      expect(notUtf8.status).toBe(400)
      expect(notUtf8.body.message).toContain("UTF-8")
      expect(yield* allRecords).toHaveLength(0)
    }).pipe(Effect.provide(server())),
  )

  it.scopedLive("answers 400 to JSON that is not an object or an array of objects", () =>
    Effect.gen(function* () {
      const cases: Array<[string, string]> = [
        ["42", "the body is a number; expected a JSON object or a non-empty array of objects"],
        ["null", "the body is null; expected a JSON object or a non-empty array of objects"],
        ['"hi"', "the body is a string; expected a JSON object or a non-empty array of objects"],
        ["[]", "the body is an empty array; expected at least one object"],
        ['[{"t":1}, [2]]', "element 1 of the array is an array; every element must be an object"],
      ]
      for (const [body, message] of cases) {
        const answer = yield* post({ token: device1.credential, body })
        expect(answer.status).toBe(400)
        expect(answer.body).toEqual({ _tag: "InvalidPayload", message })
      }
      expect(yield* allRecords).toHaveLength(0)
    }).pipe(Effect.provide(server())),
  )

  it.scopedLive(
    "answers 413 to a body over max_payload_bytes, declared or streamed, and reads no further",
    () =>
      Effect.gen(function* () {
        const atLimit = JSON.stringify({ pad: "x".repeat(MAX_PAYLOAD_BYTES - 10) })
        expect(Buffer.byteLength(atLimit)).toBe(MAX_PAYLOAD_BYTES)
        expect((yield* post({ token: device1.credential, body: atLimit })).status).toBe(202)

        const declared = JSON.stringify({ pad: "x".repeat(MAX_PAYLOAD_BYTES - 9) })
        const overDeclared = yield* post({ token: device1.credential, body: declared })
        expect(overDeclared.status).toBe(413)
        expect(overDeclared.body._tag).toBe("PayloadTooLarge")
        expect(overDeclared.body.message).toContain(`Content-Length: ${MAX_PAYLOAD_BYTES + 1}`)
        expect(overDeclared.body.maxBytes).toBe(MAX_PAYLOAD_BYTES)
        expect(overDeclared.headers.get("connection")).toBe("close")

        // Chunked, no Content-Length, and far more than the limit: the server stops reading.
        let sent = 0
        const chunk = new TextEncoder().encode(`${"x".repeat(1023)}\n`)
        const endless = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (sent >= 64 * 1024 * 1024) return controller.close()
            sent += chunk.byteLength
            controller.enqueue(chunk)
          },
        })
        const overStreamed = yield* post({ token: device1.credential, body: endless })
        expect(overStreamed.status).toBe(413)
        expect(overStreamed.body._tag).toBe("PayloadTooLarge")
        expect(overStreamed.body.message).not.toContain("Content-Length")
        expect(sent).toBeLessThan(16 * 1024 * 1024)

        expect(yield* allRecords).toHaveLength(1)
        expect(
          yield* counter("sluice_refused_messages_total", { transport: "http", reason: "too_large" }),
        ).toBe(2)
      }).pipe(Effect.provide(server())),
  )

  it.scopedLive("answers 429 with Retry-After when the stream is full, storing nothing more", () =>
    Effect.gen(function* () {
      const body = JSON.stringify({ pad: "x".repeat(400) })
      const accepted: Array<number> = []
      let answer: Answer | undefined
      for (let i = 0; i < 50; i++) {
        answer = yield* post({ token: device1.credential, body })
        if (answer.status !== 202) break
        accepted.push(i)
      }
      expect(accepted.length).toBeGreaterThan(0)
      expect(answer!.status).toBe(429)
      expect(answer!.headers.get("retry-after")).toBe("1")
      expect(answer!.body._tag).toBe("IngestThrottled")
      expect(answer!.body.retryAfterSeconds).toBe(1)
      expect(String(answer!.body.message)).toContain("stream full")
      expect(yield* allRecords).toHaveLength(accepted.length)
      expect(yield* counter("sluice_refused_messages_total", { transport: "http", reason: "pushback" })).toBe(
        1,
      )
    }).pipe(Effect.provide(server({ streamMaxBytes: 2000 }))),
  )

  it.scopedLive("answers 429 before reading the body when http_max_in_flight requests are in progress", () =>
    Effect.gen(function* () {
      let release: () => void = () => {}
      const released = new Promise<void>((resolve) => {
        release = resolve
      })
      let step = 0
      // A body that sends half an object, then waits.
      const stalled = new ReadableStream<Uint8Array>({
        async pull(controller) {
          step++
          if (step === 1) return controller.enqueue(new TextEncoder().encode('{"t":'))
          await released
          controller.enqueue(new TextEncoder().encode("1}"))
          controller.close()
        },
      })
      const first = yield* Effect.fork(post({ token: device1.credential, body: stalled }))
      yield* Effect.sleep("300 millis")
      const second = yield* post({ token: device2.credential, body: '{"t":2}' })
      expect(second.status).toBe(429)
      expect(second.headers.get("retry-after")).toBe("1")
      expect(second.body._tag).toBe("IngestThrottled")
      release()
      const answer = yield* Fiber.join(first)
      expect(answer.status).toBe(202)
      const records = yield* allRecords
      expect(records.map((r) => envelopeOf(r).deviceId)).toEqual([device1.id])
    }).pipe(Effect.provide(server({ httpMaxInFlight: 1 }))),
  )

  it("documents every status, the bearer scheme and Retry-After in OpenAPI", () => {
    const spec = OpenApi.fromApi(TestApi)
    const operation = spec.paths["/v1/telemetry"]!.post!
    expect(Object.keys(operation.responses).sort()).toEqual(["202", "400", "401", "413", "429", "503"])
    expect(operation.security).toEqual([{ deviceCredential: [] }])
    expect(spec.components.securitySchemes.deviceCredential).toMatchObject({ type: "http", scheme: "bearer" })
    for (const status of ["429", "503"] as const) {
      expect(operation.responses[status]).toMatchObject({
        headers: { "Retry-After": { schema: { type: "integer" } } },
      })
    }
  })
})
