/**
 * The StreamLog contract on Kinesis, against both emulators. One emulator process per describe,
 * shared by its tests; each test gets its own stream (named after its temp data directory).
 */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe } from "vitest"
import * as KinesisStreamLog from "../../src/stream/KinesisStreamLog.js"
import { type KinesisEmulator, startKinesalite, startKinesisMock } from "../support/emulators.js"
import { type ContractEnv, streamLogContract } from "./contract.js"
import { emulatorConfig } from "./kinesisEnv.js"

describe.each([
  ["kinesis-mock", startKinesisMock],
  ["kinesalite", startKinesalite],
] as const)("%s", (name, start) => {
  let emulator: KinesisEmulator | undefined
  beforeAll(async () => {
    emulator = await start()
  })
  afterAll(async () => {
    await emulator?.stop()
  })

  streamLogContract(`Kinesis (${name})`, {
    env: (): ContractEnv => ({ id: mkdtempSync(join(tmpdir(), "sluice-kinesis-")) }),
    open: (env) => KinesisStreamLog.layerWith(emulatorConfig(emulator!.endpoint, env.id)),
  })
})
