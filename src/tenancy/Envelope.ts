/**
 * What ingress appends to the stream for every accepted message: who sent it (from the
 * credentials, never from the topic or body), when it arrived, and the payload as received.
 */
import { Schema } from "effect"

export const Envelope = Schema.Struct({
  tenantId: Schema.String,
  deviceId: Schema.String,
  deviceClass: Schema.String,
  /** Ingress time, epoch ms. */
  receivedAt: Schema.Number,
  /** The device's JSON: one object or an array of them (one reading each). */
  payload: Schema.Unknown,
})
export type Envelope = typeof Envelope.Type

/** One device = one partition key = one shard, so a device's messages stay in order. */
export const partitionKeyOf = (tenantId: string, deviceId: string) => `${tenantId}/${deviceId}`

/** Stream record bytes of an envelope. JSON keeps the log readable with any SQLite or Kinesis tool. */
export const encodeEnvelope = (envelope: Envelope): Uint8Array =>
  Buffer.from(JSON.stringify(envelope), "utf8")

/** Parses stream record bytes back into an envelope; a record that fails is a dead letter. */
export const decodeEnvelope = Schema.decodeUnknownEither(Schema.parseJson(Envelope))
