/** The WebSocket live feed over a real `ws` client: auth, device filter, refusal, subscriber count. */
import { expect, layer } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Layer, Option, Queue, Schedule, Scope, TestServices } from "effect"
import WebSocket from "ws"
import { LiveFeed } from "../../src/actors/LiveFeed.js"
import type { Health } from "../../src/observability/Health.js"
import { Metrics } from "../../src/observability/Metrics.js"
import * as HttpServing from "../../src/serving/HttpServer.js"
import type { TelemetryStore } from "../../src/storage/TelemetryStore.js"
import type { Tenancy } from "../../src/tenancy/Tenancy.js"
import { baseUrl, getAs, keyA, reading, TestServing, t0 } from "./harness.js"

interface Frame {
  readonly deviceId: string
  readonly msgId: string
}

/** Opens a WebSocket; its frames go to a queue from the first byte. Fails with the HTTP status if refused. */
const connect = (path: string, headers: Record<string, string> = {}) =>
  Effect.gen(function* () {
    const url = (yield* baseUrl).replace(/^http/, "ws") + path
    const frames = yield* Queue.unbounded<Frame>()
    const closed = yield* Deferred.make<number>()
    const ws = yield* Effect.acquireRelease(
      Effect.async<WebSocket, { readonly status: number }>((resume) => {
        const ws = new WebSocket(url, { headers })
        ws.on("message", (data) => Queue.unsafeOffer(frames, JSON.parse(String(data)) as Frame))
        ws.once("close", (code) => Deferred.unsafeDone(closed, Exit.succeed(code)))
        ws.once("open", () => resume(Effect.succeed(ws)))
        ws.once("unexpected-response", (_request, response) => {
          resume(Effect.fail({ status: response.statusCode ?? 0 }))
          ws.terminate()
        })
        ws.once("error", (error) => resume(Effect.die(error)))
      }),
      (ws) => Effect.sync(() => ws.close()),
    )
    return { ws, frames, closed: Deferred.await(closed) }
  })

/** The status a refused upgrade answered with. */
const refusal = (path: string, headers: Record<string, string> = {}) =>
  Effect.scoped(connect(path, headers)).pipe(
    Effect.flatMap(() => Effect.dieMessage(`expected ${path} to be refused`)),
    Effect.catchAll((e) => Effect.succeed(e.status)),
  )

const subscribers = Effect.flatMap(Metrics, (m) =>
  Effect.promise(() => m.liveSubscribers.get()).pipe(Effect.map((g) => g.values[0]?.value ?? 0)),
)

/** Polls (in real time: the server notices a departed client in real time) until the gauge shows `n`. */
const awaitSubscribers = (n: number) =>
  subscribers.pipe(
    Effect.repeat({ until: (v) => v === n, schedule: Schedule.spaced(Duration.millis(20)) }),
    Effect.timeout(Duration.seconds(5)),
    Effect.zipRight(subscribers),
    TestServices.provideLive,
  )

const publish = (rows: ReadonlyArray<ReturnType<typeof reading>>) =>
  Effect.flatMap(LiveFeed, (feed) => feed.publish(rows[0]!.tenantId, rows))

/** The next frame, failing after 5 s of real time (the test clock would never run out). */
const next = (frames: Queue.Queue<Frame>) =>
  Queue.take(frames).pipe(Effect.timeout(Duration.seconds(5)), TestServices.provideLive)

layer(TestServing, { timeout: 120_000 })("serving live WebSocket", (it) => {
  it.scoped("streams a reading published after the upgrade, only for the requested device", () =>
    Effect.gen(function* () {
      const { frames } = yield* connect("/v1/live?device=a-1", { authorization: `Bearer ${keyA}` })
      // Published the moment the client sees "open": the subscription must already be there.
      yield* publish([
        reading({ deviceId: "a-2", ts: t0, msgId: "other-device" }),
        reading({ deviceId: "a-1", ts: t0 + 1, msgId: "mine-1" }),
      ])
      const first = yield* next(frames)
      expect(first).toEqual({
        deviceId: "a-1",
        deviceClass: "climate",
        msgId: "mine-1",
        ts: t0 + 1,
        receivedAt: t0 + 101,
        values: { temperature: 20, humidity: 50, door_open: false, label: "hall" },
      })
      yield* publish([reading({ deviceId: "a-2", ts: t0 + 2, msgId: "other-2" })])
      yield* publish([reading({ deviceId: "a-1", ts: t0 + 3, msgId: "mine-2" })])
      expect((yield* next(frames)).msgId).toBe("mine-2")
      expect(Option.isNone(yield* Queue.poll(frames))).toBe(true)
    }),
  )

  it.scoped("without a device, streams the whole tenant and nothing of another; takes ?api_key=", () =>
    Effect.gen(function* () {
      const { frames } = yield* connect(`/v1/live?api_key=${keyA}`)
      yield* publish([reading({ tenantId: "tenant-b", deviceId: "b-1", ts: t0, msgId: "b-secret" })])
      yield* publish([
        reading({ deviceId: "a-1", ts: t0, msgId: "x-1" }),
        reading({ deviceId: "a-2", ts: t0, msgId: "x-2" }),
      ])
      expect([(yield* next(frames)).msgId, (yield* next(frames)).msgId]).toEqual(["x-1", "x-2"])
      expect(Option.isNone(yield* Queue.poll(frames))).toBe(true)
      // X-Api-Key works too.
      const other = yield* connect("/v1/live", { "x-api-key": keyA })
      yield* publish([reading({ deviceId: "a-2", ts: t0, msgId: "x-3" })])
      expect((yield* next(other.frames)).msgId).toBe("x-3")
    }),
  )

  it.effect("refuses the upgrade: 401 without a valid key, 404 for a foreign or unknown device", () =>
    Effect.gen(function* () {
      expect(yield* refusal("/v1/live")).toBe(401)
      expect(yield* refusal("/v1/live?api_key=wrong-key-wrong-key")).toBe(401)
      expect(yield* refusal(`/v1/live?device=b-1&api_key=${keyA}`)).toBe(404)
      expect(yield* refusal(`/v1/live?device=nope&api_key=${keyA}`)).toBe(404)
      // A plain GET is told to upgrade.
      const plain = yield* getAs(keyA, "/v1/live")
      expect(plain.status).toBe(426)
      expect((plain.json as { _tag: string })._tag).toBe("UpgradeRequired")
    }),
  )

  it.effect("counts live subscribers and releases the subscription when the client goes away", () =>
    Effect.gen(function* () {
      yield* awaitSubscribers(0)
      const { ws } = yield* Effect.scoped(
        Effect.gen(function* () {
          const a = yield* connect("/v1/live?device=a-1", { authorization: `Bearer ${keyA}` })
          yield* connect(`/v1/live?api_key=${keyA}`)
          expect(yield* awaitSubscribers(2)).toBe(2)
          return a
        }),
      )
      // Both clients closed with the scope (one cleanly); the server notices and lets go.
      expect(ws.readyState).not.toBe(WebSocket.OPEN)
      expect(yield* awaitSubscribers(0)).toBe(0)
      // And a dropped TCP connection (no close frame) is let go too.
      const dropped = yield* Effect.scoped(connect(`/v1/live?api_key=${keyA}`))
      expect(yield* awaitSubscribers(1)).toBe(1)
      dropped.ws.terminate()
      expect(yield* awaitSubscribers(0)).toBe(0)
    }),
  )

  it.scoped("closes live sockets promptly when the server shuts down", () =>
    Effect.gen(function* () {
      // A second server over the same store and feed, so this test can stop it.
      const dependencies = yield* Effect.context<TelemetryStore | Tenancy | LiveFeed | Metrics | Health>()
      const scope = yield* Scope.make()
      const server = yield* Layer.buildWithScope(
        HttpServing.layerWith({ host: "127.0.0.1", port: 0 }).pipe(
          Layer.provide(Layer.succeedContext(dependencies)),
        ),
        scope,
      )
      const { closed } = yield* connect(`/v1/live?api_key=${keyA}`).pipe(Effect.provide(server))
      expect(yield* awaitSubscribers(1)).toBe(1)
      const started = Date.now()
      yield* Scope.close(scope, Exit.void)
      yield* closed.pipe(Effect.timeout(Duration.seconds(5)), TestServices.provideLive)
      expect(Date.now() - started).toBeLessThan(5000)
      expect(yield* awaitSubscribers(0)).toBe(0)
    }),
  )

  it.scoped("drops the oldest readings for a client that stops reading, instead of buffering them", () =>
    Effect.gen(function* () {
      const { ws, frames } = yield* connect(`/v1/live?api_key=${keyA}`)
      // The client stops reading; the server keeps publishing ~60 MB of readings in small steps,
      // giving its writer every chance to push them all into the connection's memory.
      ws.pause()
      const total = 30_000
      const padding = "x".repeat(2000)
      for (let chunk = 0; chunk < total / 100; chunk++) {
        yield* publish(
          Array.from({ length: 100 }, (_, i) =>
            reading({
              ts: t0 + chunk * 100 + i,
              msgId: `slow-${chunk * 100 + i}`,
              values: { label: padding },
            }),
          ),
        )
        yield* Effect.sleep(Duration.millis(1)).pipe(TestServices.provideLive)
      }
      ws.resume()
      let received = 0
      let last = ""
      while (last !== `slow-${total - 1}`) {
        last = (yield* next(frames)).msgId
        received++
      }
      // The newest arrived, and most of the backlog was dropped rather than held in memory.
      expect(received).toBeGreaterThan(0)
      expect(received).toBeLessThan(total / 2)
    }),
  )
})
