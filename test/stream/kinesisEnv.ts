/** Settings of the Kinesis backend against an emulator, shared by the Kinesis test files. */
import { basename } from "node:path"
import { Redacted } from "effect"
import type { KinesisStreamConfig } from "../../src/stream/StreamConfig.js"

/** A stream on `endpoint` named after its (fresh, temporary) data directory; fake static credentials. */
export const emulatorConfig = (endpoint: string, dataDir: string, shardCount = 4): KinesisStreamConfig => ({
  streamName: basename(dataDir),
  endpoint,
  region: "us-east-1",
  accessKeyId: "AKIAEMULATOR00000000",
  secretAccessKey: Redacted.make("emulator-secret"),
  shardCount,
  dataDir,
})
