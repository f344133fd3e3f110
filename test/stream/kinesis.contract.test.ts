/**
 * The StreamLog contract on Kinesis, against both emulators. One emulator process per describe,
 * shared by its tests; each test gets its own stream, under a name of its own.
 */
import { afterAll, beforeAll, describe } from "vitest"
import * as KinesisStreamLog from "../../src/stream/KinesisStreamLog.js"
import { type KinesisEmulator, startKinesalite, startKinesisMock } from "../support/emulators.js"
import { type ContractEnv, streamLogContract } from "./contract.js"
import { emulatorConfig, uniqueStreamName } from "./kinesisEnv.js"

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
    env: (): ContractEnv => ({ id: uniqueStreamName() }),
    open: (env) => KinesisStreamLog.layerWith(emulatorConfig(emulator!.endpoint, env.id)),
  })
})
