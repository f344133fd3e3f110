/**
 * What ingress appends to the stream for every accepted message: who sent it (from the
 * credentials, never from the topic or body), when it arrived, and the payload bytes exactly as
 * received. Ingress does not parse MQTT payloads: the device actor does, and a payload that is not
 * valid JSON becomes a dead letter with the reason instead of costing the hot path a parse.
 *
 * Record bytes: one line of JSON header, a newline, then the raw payload.
 */
import { Either, Schema } from "effect"

export const EnvelopeHeader = Schema.Struct({
  tenantId: Schema.String,
  deviceId: Schema.String,
  deviceClass: Schema.String,
  /** Ingress time, epoch ms. */
  receivedAt: Schema.Number,
})
export type EnvelopeHeader = typeof EnvelopeHeader.Type

export interface Envelope extends EnvelopeHeader {
  /** The device's payload as sent: JSON, one object or an array of them (a view, not a copy). */
  readonly payload: Buffer
}

/** One device = one partition key = one shard, so a device's messages stay in order. */
export const partitionKeyOf = (tenantId: string, deviceId: string) => `${tenantId}/${deviceId}`

const NEWLINE = 0x0a

/** Stream record bytes of an envelope. */
export const encodeEnvelope = (header: EnvelopeHeader, payload: Uint8Array): Uint8Array => {
  const head = Buffer.from(
    JSON.stringify({
      tenantId: header.tenantId,
      deviceId: header.deviceId,
      deviceClass: header.deviceClass,
      receivedAt: header.receivedAt,
    }) + "\n",
    "utf8",
  )
  return Buffer.concat([head, payload])
}

/**
 * Reads a header line. Hand-checked rather than through Schema: it runs once per record on the
 * processor's hot path, where a Schema decode cost more than the device class decode itself.
 */
const decodeHeader = (text: string): Either.Either<EnvelopeHeader, string> => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    return Either.left(`stream record has a malformed envelope header: ${(error as Error).message}`)
  }
  const h = value as Partial<Record<keyof EnvelopeHeader, unknown>> | null
  if (
    typeof h !== "object" ||
    h === null ||
    typeof h.tenantId !== "string" ||
    typeof h.deviceId !== "string" ||
    typeof h.deviceClass !== "string" ||
    typeof h.receivedAt !== "number"
  ) {
    return Either.left(
      "stream record has a malformed envelope header: expected tenantId, deviceId, deviceClass, receivedAt",
    )
  }
  return Either.right({
    tenantId: h.tenantId,
    deviceId: h.deviceId,
    deviceClass: h.deviceClass,
    receivedAt: h.receivedAt,
  })
}

/** Splits stream record bytes back into header and payload; a record that fails is a dead letter. */
export const decodeEnvelope = (data: Uint8Array): Either.Either<Envelope, string> => {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const cut = bytes.indexOf(NEWLINE)
  if (cut < 0) return Either.left("stream record has no envelope header")
  return Either.map(decodeHeader(bytes.toString("utf8", 0, cut)), (header) => ({
    ...header,
    payload: bytes.subarray(cut + 1),
  }))
}
