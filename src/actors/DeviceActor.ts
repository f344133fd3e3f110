/**
 * One device's actor: keeps its order, drops duplicate message ids within a window, decodes and
 * transforms each reading with the device class, and tracks latest state and last seen.
 *
 * Its single thread of execution is the shard worker that owns the device's shard: a device maps
 * to exactly one shard, and the worker handles a shard's records one at a time, in order. So the
 * actor needs no mailbox of its own, and a message costs no fiber switch.
 */
import { Either } from "effect"
import type { DeadLetter, TelemetryRow } from "../storage/TelemetryStore.js"
import type { CompiledDeviceClass } from "../tenancy/DeviceClass.js"
import type { Envelope } from "../tenancy/Envelope.js"

/** Where the record sits in the stream: names fallback message ids and dead letters. */
export interface RecordPosition {
  readonly shardId: string
  readonly sequenceNumber: string
}

export interface DeviceOutput {
  readonly rows: Array<TelemetryRow>
  readonly deadLetters: Array<DeadLetter>
}

export class DeviceActor {
  private readonly seen = new Set<string>()
  /** Ring buffer of the ids in `seen`, oldest at `next`. */
  private readonly ring: Array<string | undefined>
  private next = 0
  /** Newest reading by device time (not by arrival). */
  latest: TelemetryRow | undefined
  /** Last ingress time of any message, epoch ms. */
  lastSeen = 0
  /** Last time this actor handled a message (for idle expiry), epoch ms. */
  lastActive = 0
  /** Duplicates dropped so far. */
  duplicates = 0

  constructor(
    readonly tenantId: string,
    readonly deviceId: string,
    dedupWindow: number,
  ) {
    this.ring = new Array(Math.max(1, dedupWindow))
  }

  /** Handles one stream record; appends its readings and dead letters to `out`. */
  receive(
    envelope: Envelope,
    position: RecordPosition,
    deviceClass: CompiledDeviceClass | undefined,
    out: DeviceOutput,
    now: number,
  ): void {
    this.lastActive = now
    this.lastSeen = Math.max(this.lastSeen, envelope.receivedAt)
    const dead = (reason: string) =>
      out.deadLetters.push({
        tenantId: envelope.tenantId,
        deviceId: envelope.deviceId,
        receivedAt: envelope.receivedAt,
        shardId: position.shardId,
        sequenceNumber: position.sequenceNumber,
        reason,
        raw: envelope.payload.toString("utf8"),
      })
    if (deviceClass === undefined) return void dead(`unknown device class "${envelope.deviceClass}"`)
    let parsed: unknown
    try {
      parsed = JSON.parse(envelope.payload.toString("utf8"))
    } catch (error) {
      return void dead(`payload is not valid JSON: ${(error as Error).message}`)
    }
    const readings = Array.isArray(parsed) ? parsed : [parsed]
    if (readings.length === 0) return void dead("payload is an empty array")
    const failures: Array<string> = []
    for (let i = 0; i < readings.length; i++) {
      const fallbackId = `${position.shardId}:${position.sequenceNumber}:${i}`
      const decoded = deviceClass.decode(readings[i], { receivedAt: envelope.receivedAt, msgId: fallbackId })
      if (Either.isLeft(decoded)) {
        failures.push(readings.length === 1 ? decoded.left : `reading ${i}: ${decoded.left}`)
        continue
      }
      const { msgId, ts, values } = decoded.right
      if (this.isDuplicate(msgId)) {
        this.duplicates++
        continue
      }
      const row: TelemetryRow = {
        tenantId: envelope.tenantId,
        deviceId: envelope.deviceId,
        deviceClass: envelope.deviceClass,
        // The registry version that decoded it (undefined for a class compiled outside the registry).
        classVersion: deviceClass.version > 0 ? deviceClass.version : undefined,
        msgId,
        ts,
        receivedAt: envelope.receivedAt,
        values,
      }
      out.rows.push(row)
      if (this.latest === undefined || ts >= this.latest.ts) this.latest = row
    }
    // One dead letter per record, naming every failed reading; the good readings flow on.
    if (failures.length > 0) dead(failures.join("; "))
  }

  /** Remembers the last `dedupWindow` message ids; true if `msgId` is among them. */
  private isDuplicate(msgId: string): boolean {
    if (this.seen.has(msgId)) return true
    const evicted = this.ring[this.next]
    if (evicted !== undefined) this.seen.delete(evicted)
    this.ring[this.next] = msgId
    this.next = (this.next + 1) % this.ring.length
    this.seen.add(msgId)
    return false
  }
}
