/** Settings of the Kinesis backend against an emulator, shared by the Kinesis test files. */
import { randomUUID } from "node:crypto"
import { basename } from "node:path"
import { Redacted } from "effect"
import type { KinesisStreamConfig } from "../../src/stream/StreamConfig.js"

/** A name no other test's stream has. */
export const uniqueStreamName = () => `sluice-kinesis-${randomUUID()}`

/**
 * A stream on `endpoint` named `name` (or after the last segment of a path, e.g. a test's fresh
 * temporary directory); fake static credentials. The backend keeps nothing on local disk.
 */
export const emulatorConfig = (endpoint: string, name: string, shardCount = 4): KinesisStreamConfig => ({
  streamName: basename(name),
  endpoint,
  region: "us-east-1",
  accessKeyId: "AKIAEMULATOR00000000",
  secretAccessKey: Redacted.make("emulator-secret"),
  shardCount,
})
