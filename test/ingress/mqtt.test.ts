/**
 * The embedded MQTT broker against a real MQTT client (mqtt.js) over TCP on 127.0.0.1, appending
 * to the real embedded log.
 */
import net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import mqtt, { type IClientOptions, type MqttClient } from "mqtt"
import * as MqttBroker from "../../src/ingress/MqttBroker.js"
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

const OUTCOME_TIMEOUT = "5 seconds"

/** A connected client, ended with the scope. */
const connect = (port: number, options: IClientOptions) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
        reconnectPeriod: 0,
        connectTimeout: 5_000,
        ...options,
      })
      // publishOutcome listens for "close" once per message in flight.
      client.setMaxListeners(100)
      return client
    }),
    (client) => Effect.promise(() => client.endAsync(true)),
  )

/** The CONNACK return code of a refused connection attempt. */
const refusalCode = (port: number, options: IClientOptions) =>
  Effect.promise(() =>
    mqtt
      .connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5_000, ...options })
      .then(
        async (client) => {
          await client.endAsync(true)
          return "connected" as const
        },
        (error: Error & { code?: number | string }) => error.code,
      ),
  )

const asDevice = (device: { id: string; credential: string }): IClientOptions => ({
  username: device.id,
  password: device.credential,
})

const topicOf = (deviceId: string) => `devices/${deviceId}/telemetry`

/** Whether a QoS 1 publish is acknowledged (PUBACK) or the broker closes the connection first. */
const publishOutcome = (client: MqttClient, topic: string, payload: Buffer) =>
  Effect.async<"acked" | "closed">((resume) => {
    if (client.disconnected) return resume(Effect.succeed("closed"))
    const onClose = () => resume(Effect.succeed("closed"))
    client.once("close", onClose)
    client.publish(topic, payload, { qos: 1 }, (error) => {
      if (!error) {
        client.off("close", onClose)
        resume(Effect.succeed("acked"))
      }
    })
  }).pipe(
    Effect.timeoutFail({
      duration: OUTCOME_TIMEOUT,
      onTimeout: () => new Error("no PUBACK and no disconnect"),
    }),
  )

/** MQTT Remaining Length encoding (§2.2.3). */
const varint = (n: number) => {
  const bytes: Array<number> = []
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 0x80
    bytes.push(byte)
  } while (n > 0)
  return Buffer.from(bytes)
}
const mqttString = (s: string) => {
  const b = Buffer.from(s, "utf8")
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b])
}

describe("MQTT ingress", () => {
  it.scopedLive("accepts a device with good credentials and refuses bad ones with CONNACK code 4", () =>
    Effect.gen(function* () {
      const { port } = yield* MqttBroker.make(ingressConfig)
      const client = yield* connect(port, asDevice(device1))
      expect(client.connected).toBe(true)
      // §3.2.2.3: return code 4, bad user name or password
      expect(yield* refusalCode(port, { username: device1.id, password: "wrong-password" })).toBe(4)
      expect(yield* refusalCode(port, { username: "no-such-device", password: device1.credential })).toBe(4)
      expect(yield* refusalCode(port, {})).toBe(4)
      expect(yield* refusalCode(port, { username: device1.id })).toBe(4)
      // Another device's credential does not open this device.
      expect(yield* refusalCode(port, { username: device1.id, password: device2.credential })).toBe(4)
      expect(yield* counter("sluice_refused_messages_total", { transport: "mqtt", reason: "auth" })).toBe(5)
    }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive(
    "acknowledges a QoS 1 publish once it is in the stream, with identity from the credential",
    () =>
      Effect.gen(function* () {
        const { port } = yield* MqttBroker.make(ingressConfig)
        const client = yield* connect(port, asDevice(device3))
        // Not JSON, not even UTF-8: ingress does not parse MQTT payloads, it carries the bytes.
        const payload = Buffer.from([0xff, 0x00, 0x7b, 0x22, 0x0a, 0xfe])
        const before = Date.now()
        expect(yield* publishOutcome(client, topicOf(device3.id), payload)).toBe("acked")
        // The PUBACK came after the append: the record is readable now, without waiting.
        const records = yield* allRecords
        expect(records).toHaveLength(1)
        expect(records[0]!.partitionKey).toBe(partitionKeyOf(device3.tenant, device3.id))
        const envelope = envelopeOf(records[0]!)
        expect({
          tenantId: envelope.tenantId,
          deviceId: envelope.deviceId,
          deviceClass: envelope.deviceClass,
        }).toEqual({ tenantId: device3.tenant, deviceId: device3.id, deviceClass: device3.class })
        expect(envelope.receivedAt).toBeGreaterThanOrEqual(before)
        expect(envelope.receivedAt).toBeLessThanOrEqual(Date.now())
        expect(Buffer.from(envelope.payload).equals(payload)).toBe(true)
        expect(yield* counter("sluice_ingested_messages_total", { transport: "mqtt" })).toBe(1)
      }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive("keeps a device's pipelined messages in order, each acknowledged", () =>
    Effect.gen(function* () {
      const { port } = yield* MqttBroker.make(ingressConfig)
      const client = yield* connect(port, asDevice(device1))
      const outcomes = yield* Effect.all(
        Array.from({ length: 50 }, (_, i) =>
          publishOutcome(client, topicOf(device1.id), Buffer.from(JSON.stringify({ n: i }))),
        ),
        { concurrency: "unbounded" },
      )
      expect(outcomes.every((o) => o === "acked")).toBe(true)
      const records = yield* allRecords
      expect(records.map((r) => JSON.parse(Buffer.from(envelopeOf(r).payload).toString()).n)).toEqual(
        Array.from({ length: 50 }, (_, i) => i),
      )
    }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive("disconnects a device publishing to another device's topic, appending nothing", () =>
    Effect.gen(function* () {
      const { port } = yield* MqttBroker.make(ingressConfig)
      const intruder = yield* connect(port, asDevice(device1))
      expect(yield* publishOutcome(intruder, topicOf(device2.id), Buffer.from('{"t":1}'))).toBe("closed")
      const other = yield* connect(port, asDevice(device1))
      expect(yield* publishOutcome(other, "telemetry", Buffer.from('{"t":1}'))).toBe("closed")
      expect(yield* allRecords).toHaveLength(0)
      expect(
        yield* counter("sluice_refused_messages_total", { transport: "mqtt", reason: "forbidden" }),
      ).toBe(2)
    }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive("refuses subscriptions with SUBACK 0x80 and keeps the connection", () =>
    Effect.gen(function* () {
      const { port } = yield* MqttBroker.make(ingressConfig)
      const client = yield* connect(port, asDevice(device1))
      // mqtt.js reports a SUBACK with failures as an error carrying the packet.
      const suback = yield* Effect.async<ReadonlyArray<number>>((resume) => {
        client.subscribe([topicOf(device2.id), topicOf(device1.id), "#"], { qos: 1 }, (error) => {
          const packet = (error as { packet?: { granted?: Array<number> } } | null)?.packet
          resume(Effect.succeed(packet?.granted ?? []))
        })
      })
      expect(suback).toEqual([128, 128, 128])
      expect(client.connected).toBe(true)
      expect(yield* publishOutcome(client, topicOf(device1.id), Buffer.from('{"t":1}'))).toBe("acked")
    }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive("a device reusing another device's client id does not displace it", () =>
    Effect.gen(function* () {
      const { port } = yield* MqttBroker.make(ingressConfig)
      const victim = yield* connect(port, { ...asDevice(device1), clientId: "shared-id" })
      yield* connect(port, { ...asDevice(device3), clientId: "shared-id" })
      yield* Effect.sleep("200 millis")
      expect(victim.connected).toBe(true)
      expect(yield* publishOutcome(victim, topicOf(device1.id), Buffer.from('{"t":1}'))).toBe("acked")
    }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive("disconnects a device whose payload is over max_payload_bytes, appending nothing", () =>
    Effect.gen(function* () {
      const { port } = yield* MqttBroker.make(ingressConfig)
      const client = yield* connect(port, asDevice(device1))
      const atLimit = Buffer.alloc(MAX_PAYLOAD_BYTES, 0x61)
      expect(yield* publishOutcome(client, topicOf(device1.id), atLimit)).toBe("acked")
      const over = Buffer.alloc(MAX_PAYLOAD_BYTES + 1, 0x61)
      expect(yield* publishOutcome(client, topicOf(device1.id), over)).toBe("closed")
      const records = yield* allRecords
      expect(records).toHaveLength(1)
      expect(envelopeOf(records[0]!).payload.byteLength).toBe(MAX_PAYLOAD_BYTES)
      expect(
        yield* counter("sluice_refused_messages_total", { transport: "mqtt", reason: "too_large" }),
      ).toBe(1)
    }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive("cuts a connection at the header of a huge packet, before its body arrives", () =>
    Effect.gen(function* () {
      const { port } = yield* MqttBroker.make(ingressConfig)
      const socket = yield* Effect.acquireRelease(
        Effect.async<net.Socket>((resume) => {
          const s = net.connect(port, "127.0.0.1", () => resume(Effect.succeed(s)))
        }),
        (s) => Effect.sync(() => s.destroy()),
      )
      const connack = Effect.async<Buffer>((resume) => {
        socket.once("data", (data) => resume(Effect.succeed(data)))
      })
      const body = Buffer.concat([
        mqttString("MQTT"),
        Buffer.from([4, 0xc2, 0, 60]), // level 4 (3.1.1), user name + password + clean session, keepalive 60 s
        mqttString("raw-client"),
        mqttString(device1.id),
        mqttString(device1.credential),
      ])
      socket.write(Buffer.concat([Buffer.from([0x10]), varint(body.length), body]))
      expect([...(yield* connack)]).toEqual([0x20, 0x02, 0x00, 0x00])
      // A QoS 1 PUBLISH that declares 100 MiB, then only its first bytes.
      const closed = Effect.async<void>((resume) => {
        socket.once("close", () => resume(Effect.void))
      })
      socket.write(
        Buffer.concat([Buffer.from([0x32]), varint(100 * 1024 * 1024), mqttString(topicOf(device1.id))]),
      )
      yield* closed.pipe(
        Effect.timeoutFail({
          duration: "2 seconds",
          onTimeout: () => new Error("the broker kept buffering"),
        }),
      )
      expect(
        yield* counter("sluice_refused_messages_total", { transport: "mqtt", reason: "too_large" }),
      ).toBe(1)
    }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive("on shutdown stops accepting and closes its clients", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const { port } = yield* Scope.extend(MqttBroker.make(ingressConfig), scope)
      const client = yield* connect(port, asDevice(device1))
      expect(yield* publishOutcome(client, topicOf(device1.id), Buffer.from('{"t":1}'))).toBe("acked")
      const closed = Effect.async<void>((resume) => {
        client.once("close", () => resume(Effect.void))
      })
      yield* Scope.close(scope, Exit.void)
      yield* closed.pipe(
        Effect.timeoutFail({ duration: OUTCOME_TIMEOUT, onTimeout: () => new Error("still connected") }),
      )
      expect(yield* refusalCode(port, asDevice(device1))).toBe("ECONNREFUSED")
      expect(yield* allRecords).toHaveLength(1)
    }).pipe(Effect.provide(dependencies())),
  )

  it.scopedLive(
    "pushes back when the stream is full: no PUBACK, a disconnect, nothing beyond the budget",
    () =>
      Effect.gen(function* () {
        const { port } = yield* MqttBroker.make(ingressConfig)
        const client = yield* connect(port, asDevice(device1))
        const payload = Buffer.alloc(500, 0x61)
        let acked = 0
        let outcome: "acked" | "closed" = "acked"
        while (outcome === "acked" && acked < 100) {
          outcome = yield* publishOutcome(client, topicOf(device1.id), payload)
          if (outcome === "acked") acked++
        }
        expect(outcome).toBe("closed")
        expect(acked).toBeGreaterThan(0)
        const records = yield* allRecords
        // Exactly the acknowledged messages are in the stream, within its budget.
        expect(records).toHaveLength(acked)
        const bytes = records.reduce((sum, r) => sum + r.data.byteLength + r.partitionKey.length, 0)
        expect(bytes).toBeLessThanOrEqual(3000)
        expect(
          yield* counter("sluice_refused_messages_total", { transport: "mqtt", reason: "pushback" }),
        ).toBe(1)
        // Reconnecting does not get around it.
        const again = yield* connect(port, asDevice(device1))
        expect(yield* publishOutcome(again, topicOf(device1.id), payload)).toBe("closed")
        expect(yield* allRecords).toHaveLength(acked)
      }).pipe(Effect.provide(dependencies({ streamMaxBytes: 3000 }))),
  )
})
