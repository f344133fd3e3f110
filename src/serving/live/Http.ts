/**
 * The live feed over a WebSocket. Order matters: the device is checked before the upgrade (an
 * unknown or foreign device is a plain 404, never a socket), and the LiveFeed subscription is
 * taken before the handshake completes, so a reading stored after the client sees "open" is
 * never missed.
 */
import type { Socket as NetSocket } from "node:net"
import { HttpApiBuilder, HttpServerResponse, type Socket } from "@effect/platform"
import { NodeHttpServerRequest } from "@effect/platform-node"
import { Effect, Queue } from "effect"
import { LiveFeed } from "../../actors/LiveFeed.js"
import { Metrics } from "../../observability/Metrics.js"
import type { TelemetryRow } from "../../storage/TelemetryStore.js"
import { Tenancy } from "../../tenancy/Tenancy.js"
import { Api } from "../Api.js"
import { CurrentTenant } from "../Authentication.js"
import { ownDevice } from "../OwnDevice.js"
import { UpgradeRequired } from "./Api.js"

/** Readings written per wake-up of a subscriber's writer. */
const writeBatch = 256

/**
 * Bytes a client may leave unread in its connection before the writer stops taking readings.
 * Past it, readings pile up in the subscriber's sliding LiveFeed buffer instead, which drops the
 * oldest: memory per client stays bounded however slow the client is.
 */
const maxUnsentBytes = 1024 * 1024

/** Waits until the connection's send buffer is under `maxUnsentBytes` (or the connection ends). */
const awaitWritable = (connection: NetSocket) =>
  connection.writableLength <= maxUnsentBytes || connection.destroyed
    ? Effect.void
    : Effect.async<void>((resume) => {
        // Past Node's (much smaller) high-water mark, so the write that got here returned false
        // and "drain" is due once the buffer empties.
        const done = () => resume(Effect.void)
        connection.once("drain", done)
        connection.once("close", done)
        return Effect.sync(() => {
          connection.off("drain", done)
          connection.off("close", done)
        })
      })

/** The JSON text frame of a reading: a `Reading` (the tenant is implied by the key). */
const frame = (row: TelemetryRow) =>
  JSON.stringify({
    deviceId: row.deviceId,
    deviceClass: row.deviceClass,
    classVersion: row.classVersion,
    msgId: row.msgId,
    ts: row.ts,
    receivedAt: row.receivedAt,
    values: row.values,
  })

export const HttpLiveLive = HttpApiBuilder.group(Api, "live", (handlers) =>
  Effect.gen(function* () {
    const tenancy = yield* Tenancy
    const feed = yield* LiveFeed
    const metrics = yield* Metrics

    /** Streams the tenant's (or one device's) readings to the socket until the client leaves. */
    const stream = (socket: Socket.Socket, connection: NetSocket, tenantId: string, deviceId?: string) =>
      Effect.gen(function* () {
        const readings = yield* feed.subscribe(tenantId, deviceId)
        yield* Effect.acquireRelease(
          Effect.sync(() => metrics.liveSubscribers.inc()),
          () => Effect.sync(() => metrics.liveSubscribers.dec()),
        )
        const write = yield* socket.writer
        // Writes wait for the handshake (the socket's own latch), then follow the feed.
        yield* Queue.takeBetween(readings, 1, writeBatch).pipe(
          Effect.flatMap((rows) =>
            Effect.zipRight(
              Effect.forEach(rows, (row) => write(frame(row)), { discard: true }),
              awaitWritable(connection),
            ),
          ),
          Effect.forever,
          Effect.forkScoped,
        )
        yield* Effect.logDebug("live subscriber connected")
        // The handshake completes here; this returns when the client closes the socket. What the
        // client sends is ignored: the feed is one-way.
        yield* socket
          .runRaw(() => undefined)
          .pipe(Effect.catchAll((error) => Effect.logDebug("live socket ended", error)))
        yield* Effect.logDebug("live subscriber disconnected")
      }).pipe(Effect.scoped, Effect.annotateLogs({ tenantId, deviceId: deviceId ?? "*" }))

    return handlers.handle(
      "subscribe",
      Effect.fn("Live.subscribe")(function* ({ request, urlParams }) {
        const { tenantId } = yield* CurrentTenant
        const deviceId = urlParams.device
        if (deviceId !== undefined) yield* ownDevice(tenancy, deviceId)
        const socket = yield* request.upgrade.pipe(
          Effect.mapError(() => new UpgradeRequired({ message: "GET /v1/live needs a WebSocket upgrade" })),
        )
        const connection = NodeHttpServerRequest.toIncomingMessage(request).socket
        yield* stream(socket, connection, tenantId, deviceId)
        // Already upgraded: the server discards this response.
        return HttpServerResponse.empty()
      }),
    )
  }),
)
