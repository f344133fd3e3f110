/**
 * MQTT over WebSocket (browser and JavaScript devices) on the ingress HTTP listener: an upgrade
 * request for `/mqtt` becomes an MQTT connection of the broker (`MqttBroker.streams`), with the
 * same authentication, topic rule, payload and packet limits as TCP, and a place in the same MQTT
 * connection limit; `wss://` when the listener is HTTPS. MQTT 3.1.1 §6: binary messages, the
 * `mqtt` subprotocol; a packet may span messages, so the bytes go through the same frame limit.
 *
 * Accounting: the upgrade takes a place in the MQTT limit (refused with 503, counted as
 * `sluice_refused_connections_total{listener="mqtt-ws", reason="limit"}`), and while it is an MQTT
 * connection the HTTP listener's own limit is raised by one, so WebSocket devices never take the
 * HTTP connections that `/readyz`, `/metrics` and the ingest API are kept.
 */
import type http from "node:http"
import type { Duplex } from "node:stream"
import { HttpServer } from "@effect/platform"
import { Duration, Effect, Layer } from "effect"
import { createWebSocketStream, type WebSocket, WebSocketServer } from "ws"
import { refusals } from "../platform/ConnectionGuard.js"
import type { MqttStreams } from "./MqttBroker.js"

/** The path devices open their WebSocket on. */
export const MQTT_WEBSOCKET_PATH = "/mqtt"

/** How long shutdown waits for WebSocket devices to go after they were asked to. */
const SHUTDOWN_GRACE = Duration.seconds(5)

const refuseUpgrade = (socket: Duplex, status: string, headers: Record<string, string> = {}) => {
  const lines = [
    `HTTP/1.1 ${status}`,
    "Connection: close",
    "Content-Length: 0",
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ]
  socket.end(`${lines.join("\r\n")}\r\n\r\n`)
  socket.destroy()
}

const pathOf = (request: http.IncomingMessage) => {
  const url = request.url ?? "/"
  const query = url.indexOf("?")
  return query === -1 ? url : url.slice(0, query)
}

/**
 * Takes `/mqtt` upgrades on `server` for the broker's `streams` while the layer lives. At
 * shutdown (before the HTTP server closes, which would otherwise wait for these connections): no
 * more upgrades, what was appended is answered, then the devices are disconnected. Requires the
 * `HttpServer` built on `server`, only so that it is released before it.
 */
export const layer = (server: http.Server, streams: MqttStreams) =>
  Layer.scopedDiscard(
    Effect.gen(function* () {
      yield* HttpServer.HttpServer
      const { budget, maxPacketBytes } = streams
      const { refused } = yield* refusals({ listener: "mqtt-ws", maxConnections: budget.limit })
      const wss = new WebSocketServer({
        noServer: true,
        // One WebSocket message may carry no more than one largest MQTT packet.
        maxPayload: maxPacketBytes,
        // Compression costs a zlib context per connection; telemetry messages are small.
        perMessageDeflate: false,
        // MQTT over WebSocket names its subprotocol "mqtt" (3.1.1; "mqttv3.1" for 3.1); a client
        // offering none is served anyway.
        handleProtocols: (protocols) =>
          protocols.has("mqtt") ? "mqtt" : (protocols.values().next().value ?? false),
      })
      const open = new Set<WebSocket>()
      let closing = false

      const upgrade = (request: http.IncomingMessage, socket: Duplex, head: Buffer) => {
        const remoteAddress = request.socket.remoteAddress
        if (closing) return refuseUpgrade(socket, "503 Service Unavailable")
        if (!budget.take()) {
          refused("limit", { remoteAddress })
          return refuseUpgrade(socket, "503 Service Unavailable", { "Retry-After": "5" })
        }
        // Out of the HTTP listener's limit while it is an MQTT connection (see the module comment).
        server.maxConnections += 1
        socket.once("close", () => {
          budget.release()
          server.maxConnections -= 1
        })
        wss.handleUpgrade(request, socket, head, (ws) => {
          if (closing) return ws.terminate()
          open.add(ws)
          ws.once("close", () => open.delete(ws))
          streams.serve(createWebSocketStream(ws), { listener: "mqtt-ws", remoteAddress }, request)
        })
      }

      // The platform's server answers every `upgrade` event itself (its WebSocket routes, or 404),
      // so `/mqtt` upgrades are taken before the event reaches it.
      const emit = server.emit
      server.emit = function (this: http.Server, event: string | symbol, ...args: Array<unknown>) {
        if (event === "upgrade" && pathOf(args[0] as http.IncomingMessage) === MQTT_WEBSOCKET_PATH) {
          upgrade(args[0] as http.IncomingMessage, args[1] as Duplex, args[2] as Buffer)
          return true
        }
        return Reflect.apply(emit, this, [event, ...args]) as boolean
      } as typeof server.emit

      yield* Effect.addFinalizer(() =>
        Effect.gen(function* () {
          closing = true
          yield* streams.drain
          for (const ws of open) ws.close(1001, "server shutting down")
          yield* Effect.async<void>((resume) => {
            const check = setInterval(() => {
              if (open.size > 0) return
              clearInterval(check)
              resume(Effect.void)
            }, 20)
            return Effect.sync(() => clearInterval(check))
          }).pipe(Effect.interruptible, Effect.timeoutOption(SHUTDOWN_GRACE))
          for (const ws of open) ws.terminate()
          server.emit = emit
          wss.close()
        }),
      )
      yield* Effect.logInfo(`MQTT over WebSocket at ${MQTT_WEBSOCKET_PATH} on the ingest listener`)
    }),
  )
