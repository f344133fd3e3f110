/**
 * Records that an AWS IoT Core topic rule puts on the Kinesis stream, and how the processor turns
 * them into the same Envelope that Sluice's own ingress appends (docs/aws-iot-core.md).
 *
 * IoT Core authenticates the device (X.509 certificate, its IoT policy binding the MQTT client id
 * to the thing) and the rule writes one JSON object per message:
 *
 *   SELECT 'aws-iot-core' AS source, clientid() AS clientId, timestamp() AS receivedAt,
 *          topic() AS topic, encode(*, 'base64') AS payload
 *   FROM 'sluice/+/telemetry'
 *
 * with the Kinesis action's partition key `${clientid()}`, so each device's messages stay on one
 * shard, in order. The payload is base64 so a binary payload survives the JSON. Identity comes from
 * the client id (the credential IoT Core checked), never from the topic: the client id is the Sluice
 * device id, and the device registry gives its tenant and class.
 */
import { Either, Option } from "effect"
import { decodeEnvelope, type Envelope } from "./Envelope.js"
import type { Device } from "./Tenancy.js"

/** The rule's constant `source` column: tells these records from anything else on the stream. */
export const IOT_CORE_SOURCE = "aws-iot-core"

/** The topic filter of the rule; a device publishes on `sluice/<its client id>/telemetry`. */
export const IOT_CORE_TOPIC_FILTER = "sluice/+/telemetry"

/** The topic rule's SQL (AWS IoT SQL version 2016-03-23), exactly as docs/aws-iot-core.md gives it. */
export const IOT_CORE_RULE_SQL =
  `SELECT '${IOT_CORE_SOURCE}' AS source, clientid() AS clientId, timestamp() AS receivedAt, ` +
  `topic() AS topic, encode(*, 'base64') AS payload FROM '${IOT_CORE_TOPIC_FILTER}'`

/** The Kinesis action's partition key: the client id, so a device is one partition key, one shard. */
// biome-ignore lint/suspicious/noTemplateCurlyInString: an IoT substitution template, not a JavaScript one
export const IOT_CORE_PARTITION_KEY = "${clientid()}"

/** One record as the rule writes it (the Kinesis record's data, UTF-8 JSON). */
export interface IotCoreRecord {
  readonly source: typeof IOT_CORE_SOURCE
  /** The MQTT client id IoT Core authenticated: the Sluice device id. */
  readonly clientId: string
  /** When the rules engine handled the message, epoch ms. */
  readonly receivedAt: number
  /** The MQTT topic it was published on (kept for the record, not used for identity). */
  readonly topic: string
  /** The message payload as published, base64. */
  readonly payload: string
}

/** Record bytes in the rule's shape (tests and tools; IoT Core writes the real ones). */
export const encodeIotCoreRecord = (record: Omit<IotCoreRecord, "source">): Uint8Array =>
  Buffer.from(
    JSON.stringify({
      source: IOT_CORE_SOURCE,
      clientId: record.clientId,
      receivedAt: record.receivedAt,
      topic: record.topic,
      payload: record.payload,
    }),
    "utf8",
  )

const MARKER = Buffer.from(`"${IOT_CORE_SOURCE}"`, "utf8")
const OPEN_BRACE = 0x7b

/**
 * A cheap test, for records that are not Sluice envelopes, of whether they are in the rule's shape:
 * a JSON object naming the source. It does not parse; `decodeIotCoreRecord` checks everything.
 * The base64 payload cannot contain the marker (no quotes or dashes in base64).
 */
export const isIotCoreRecord = (data: Uint8Array): boolean => {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  let first = 0
  while (first < bytes.length && (bytes[first] === 0x20 || bytes[first] === 0x09 || bytes[first] === 0x0d))
    first++
  return bytes[first] === OPEN_BRACE && bytes.indexOf(MARKER) >= 0
}

/** Standard base64 (RFC 4648 alphabet), as IoT SQL's `encode(*, 'base64')` writes it; padding optional. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/

const invalid = (field: keyof IotCoreRecord, expected: string, value: unknown) =>
  Either.left(
    `AWS IoT Core record: ${value === undefined ? `missing field "${field}"` : `invalid field "${field}"`} (expected ${expected})`,
  )

/**
 * Decodes a record in the rule's shape into the Envelope ingress would have appended for the same
 * message: tenant and class from the registry, receive time from the rule, the payload's bytes.
 * Left names the problem: not JSON, a missing or invalid field, a payload that is not base64, or a
 * client id that is no registered device (`unknown device "<clientId>"`).
 */
export const decodeIotCoreRecord = (
  data: Uint8Array,
  deviceById: (deviceId: string) => Option.Option<Device>,
): Either.Either<Envelope, string> => {
  let value: unknown
  try {
    value = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("utf8"))
  } catch (error) {
    return Either.left(`AWS IoT Core record is not valid JSON: ${(error as Error).message}`)
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return Either.left("AWS IoT Core record is not a JSON object")
  }
  const r = value as Partial<Record<keyof IotCoreRecord, unknown>>
  if (r.source !== IOT_CORE_SOURCE) return invalid("source", `"${IOT_CORE_SOURCE}"`, r.source)
  if (typeof r.clientId !== "string" || r.clientId === "")
    return invalid("clientId", "a non-empty string", r.clientId)
  if (typeof r.receivedAt !== "number" || !Number.isSafeInteger(r.receivedAt) || r.receivedAt < 0)
    return invalid("receivedAt", "epoch milliseconds", r.receivedAt)
  if (typeof r.topic !== "string") return invalid("topic", "a string", r.topic)
  if (typeof r.payload !== "string") return invalid("payload", "a base64 string", r.payload)
  if (!BASE64.test(r.payload)) {
    return Either.left(`AWS IoT Core record: field "payload" is not base64`)
  }
  const device = deviceById(r.clientId)
  if (Option.isNone(device)) {
    return Either.left(
      `AWS IoT Core record from unknown device "${r.clientId}": the client id is not a device in the configuration`,
    )
  }
  return Either.right({
    tenantId: device.value.tenantId,
    deviceId: device.value.deviceId,
    deviceClass: device.value.deviceClass,
    receivedAt: r.receivedAt,
    payload: Buffer.from(r.payload, "base64"),
  })
}

/**
 * Any record on the stream: Sluice's own envelope (from ingress), else a record in the IoT Core
 * rule's shape; the reason of the envelope's failure when it is neither. Ingress records pay only
 * for `decodeEnvelope`.
 */
export const decodeStreamRecord = (
  data: Uint8Array,
  deviceById: (deviceId: string) => Option.Option<Device>,
): Either.Either<Envelope, string> => {
  const envelope = decodeEnvelope(data)
  return Either.isLeft(envelope) && isIotCoreRecord(data) ? decodeIotCoreRecord(data, deviceById) : envelope
}
