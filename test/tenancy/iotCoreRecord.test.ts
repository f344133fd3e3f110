/**
 * The AWS IoT Core record decoder: a record in the topic rule's shape becomes the Envelope ingress
 * would have appended for the same message; anything else is refused with a reason that names it.
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { Effect, Either } from "effect"
import { describe, expect, it } from "vitest"
import { parse, type Tags } from "yaml"
import * as ConfigFile from "../../src/tenancy/ConfigFile.js"
import { decodeEnvelope, encodeEnvelope } from "../../src/tenancy/Envelope.js"
import {
  decodeIotCoreRecord,
  encodeIotCoreRecord,
  IOT_CORE_PARTITION_KEY,
  IOT_CORE_RULE_SQL,
  isIotCoreRecord,
} from "../../src/tenancy/IotCoreRecord.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"

const demo = await Effect.runPromise(ConfigFile.load(join(import.meta.dirname, "../../config/demo.yaml")))
const tenancy = Tenancy.fromConfig(demo)
const T0 = Date.UTC(2026, 0, 1)

/** What the rule writes for `payload` published by `clientId`. */
const recordOf = (clientId: string, payload: Uint8Array, receivedAt = T0) =>
  encodeIotCoreRecord({
    clientId,
    receivedAt,
    topic: `sluice/${clientId}/telemetry`,
    payload: Buffer.from(payload).toString("base64"),
  })
/** A record from arbitrary JSON, for the malformed cases. */
const raw = (value: unknown) => Buffer.from(JSON.stringify(value), "utf8")
const good = {
  source: "aws-iot-core",
  clientId: "thermo-1",
  receivedAt: T0,
  topic: "sluice/thermo-1/telemetry",
  payload: Buffer.from('{"id":"m1"}').toString("base64"),
}
const decode = (data: Uint8Array) => decodeIotCoreRecord(data, tenancy.deviceById)
const reasonOf = (data: Uint8Array) => {
  const result = decode(data)
  if (Either.isRight(result)) throw new Error("expected a Left")
  return result.left
}

describe("AWS IoT Core records", () => {
  it("documents the rule SQL the decoder reads", () => {
    expect(IOT_CORE_RULE_SQL).toBe(
      "SELECT 'aws-iot-core' AS source, clientid() AS clientId, timestamp() AS receivedAt, " +
        "topic() AS topic, encode(*, 'base64') AS payload FROM 'sluice/+/telemetry'",
    )
  })

  it("is the rule that deploy/cloudformation.yaml and docs/aws-iot-core.md give", () => {
    // CloudFormation's short-form intrinsics (!Ref, !GetAtt, !Sub, ...) as opaque tagged values.
    const intrinsics = ["Ref", "GetAtt", "Sub", "Join", "Select", "Split", "If", "Equals", "FindInMap"]
    const customTags: Tags = intrinsics.flatMap((name) =>
      (["scalar", "seq", "map"] as const).map((kind) => ({
        tag: `!${name}`,
        ...(kind === "scalar" ? {} : { collection: kind }),
        resolve: (value: unknown) => ({ [name]: value }),
      })),
    )
    const root = join(import.meta.dirname, "../..")
    const template = parse(readFileSync(join(root, "deploy/cloudformation.yaml"), "utf8"), {
      customTags,
      uniqueKeys: true,
    })
    const payload = template.Resources.TopicRule.Properties.TopicRulePayload
    expect(payload.Sql).toBe(IOT_CORE_RULE_SQL)
    expect(payload.Actions[0].Kinesis.PartitionKey).toBe(IOT_CORE_PARTITION_KEY)
    expect(template.Resources.LeaseTable.Properties.KeySchema).toEqual([
      { AttributeName: "shardId", KeyType: "HASH" },
    ])
    const docs = readFileSync(join(root, "docs/aws-iot-core.md"), "utf8").replace(/\s+/g, " ")
    expect(docs).toContain(IOT_CORE_RULE_SQL)
    expect(docs).toContain(`"partitionKey": "${IOT_CORE_PARTITION_KEY}"`)
  })

  it("decodes a known device's record into the envelope ingress produces", () => {
    const payload = Buffer.from(JSON.stringify({ id: "m-17", ts: T0, temp_f: 71.6, humidity: 41.5 }))
    const decoded = Either.getOrThrow(decode(recordOf("other-thermo-1", payload, T0 + 5)))
    // Tenant and class from the registry, not from the record.
    const fromIngress = Either.getOrThrow(
      decodeEnvelope(
        encodeEnvelope(
          { tenantId: "other", deviceId: "other-thermo-1", deviceClass: "thermostat", receivedAt: T0 + 5 },
          payload,
        ),
      ),
    )
    expect(decoded).toEqual(fromIngress)
    expect(decoded.payload.equals(payload)).toBe(true)
  })

  it("keeps a binary payload byte for byte", () => {
    const binary = Uint8Array.from({ length: 256 }, (_, i) => 255 - i)
    const decoded = Either.getOrThrow(decode(recordOf("meter-1", binary)))
    expect(decoded.deviceClass).toBe("power_meter")
    expect([...decoded.payload]).toEqual([...binary])
    // An empty payload is still a payload (the device actor then says it is not JSON).
    expect(Either.getOrThrow(decode(recordOf("meter-1", new Uint8Array(0)))).payload.length).toBe(0)
  })

  it("accepts unpadded base64 and any key order or whitespace", () => {
    const spaced = Buffer.from(
      `{ "payload" : "${Buffer.from("ab").toString("base64").replace(/=+$/, "")}", "topic": "t",\n` +
        ` "receivedAt": ${T0}, "clientId": "thermo-2", "source": "aws-iot-core" }`,
    )
    expect(isIotCoreRecord(spaced)).toBe(true)
    expect(Either.getOrThrow(decode(spaced)).payload.toString()).toBe("ab")
  })

  it("tells the rule's records from Sluice's own envelopes cheaply", () => {
    expect(isIotCoreRecord(recordOf("thermo-1", Buffer.from("{}")))).toBe(true)
    expect(isIotCoreRecord(raw({ ...good, clientId: undefined }))).toBe(true) // decoded, then refused
    expect(isIotCoreRecord(Buffer.from("{not json"))).toBe(false)
    expect(isIotCoreRecord(raw({ source: "elsewhere" }))).toBe(false)
    expect(isIotCoreRecord(Buffer.from('"aws-iot-core"'))).toBe(false)
    // An envelope is not in the IoT shape, and decodeEnvelope refuses the IoT shape.
    const envelope = encodeEnvelope(
      { tenantId: "demo", deviceId: "thermo-1", deviceClass: "thermostat", receivedAt: T0 },
      Buffer.from("{}"),
    )
    expect(isIotCoreRecord(envelope)).toBe(false)
    expect(Either.isLeft(decodeEnvelope(recordOf("thermo-1", Buffer.from("{}"))))).toBe(true)
  })

  it("refuses an unknown device with its client id", () => {
    expect(reasonOf(recordOf("intruder-7", Buffer.from("{}")))).toBe(
      'AWS IoT Core record from unknown device "intruder-7": the client id is not a device in the configuration',
    )
    // The client id alone names the device: a topic naming a known device changes nothing.
    expect(reasonOf(raw({ ...good, clientId: "intruder-7" }))).toMatch(/unknown device "intruder-7"/)
    // `clientid()` is "n/a" for a message that did not come over MQTT.
    expect(reasonOf(raw({ ...good, clientId: "n/a" }))).toMatch(/unknown device "n\/a"/)
  })

  it("names what is wrong with a malformed record", () => {
    const cases: ReadonlyArray<readonly [Uint8Array, string | RegExp]> = [
      [Buffer.from('{"source":"aws-iot-core",'), /^AWS IoT Core record is not valid JSON: /],
      [raw(["aws-iot-core"]), "AWS IoT Core record is not a JSON object"],
      [raw(null), "AWS IoT Core record is not a JSON object"],
      [
        raw({ ...good, source: "other" }),
        'AWS IoT Core record: invalid field "source" (expected "aws-iot-core")',
      ],
      [
        raw({ ...good, clientId: undefined }),
        'AWS IoT Core record: missing field "clientId" (expected a non-empty string)',
      ],
      [
        raw({ ...good, clientId: "" }),
        'AWS IoT Core record: invalid field "clientId" (expected a non-empty string)',
      ],
      [
        raw({ ...good, clientId: 7 }),
        'AWS IoT Core record: invalid field "clientId" (expected a non-empty string)',
      ],
      [
        raw({ ...good, receivedAt: undefined }),
        'AWS IoT Core record: missing field "receivedAt" (expected epoch milliseconds)',
      ],
      [
        raw({ ...good, receivedAt: String(T0) }),
        'AWS IoT Core record: invalid field "receivedAt" (expected epoch milliseconds)',
      ],
      [
        raw({ ...good, receivedAt: 1.5 }),
        'AWS IoT Core record: invalid field "receivedAt" (expected epoch milliseconds)',
      ],
      [
        raw({ ...good, receivedAt: -1 }),
        'AWS IoT Core record: invalid field "receivedAt" (expected epoch milliseconds)',
      ],
      [raw({ ...good, topic: undefined }), 'AWS IoT Core record: missing field "topic" (expected a string)'],
      [
        raw({ ...good, payload: undefined }),
        'AWS IoT Core record: missing field "payload" (expected a base64 string)',
      ],
      [
        raw({ ...good, payload: { id: "m1" } }),
        'AWS IoT Core record: invalid field "payload" (expected a base64 string)',
      ],
      [raw({ ...good, payload: '{"id":"m1"}' }), 'AWS IoT Core record: field "payload" is not base64'],
      [raw({ ...good, payload: "abcde" }), 'AWS IoT Core record: field "payload" is not base64'],
      [raw({ ...good, payload: "YWJj\nZA==" }), 'AWS IoT Core record: field "payload" is not base64'],
    ]
    for (const [data, reason] of cases) {
      if (typeof reason === "string") expect(reasonOf(data)).toBe(reason)
      else expect(reasonOf(data)).toMatch(reason)
    }
  })
})
