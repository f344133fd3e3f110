/**
 * `sluice apply FILE [--dry-run]`: loads and checks the file, applies it to the registry (the data
 * directory's, or the DynamoDB table SLUICE_REGISTRY_TABLE names), prints what was created,
 * changed and removed. Exit 0 when applied (or nothing to do), 1 when the file is invalid or
 * refused (with every reason), 2 when the registry did not answer.
 */
import { Effect } from "effect"
import * as Apply from "./Apply.js"
import * as ConfigFile from "./ConfigFile.js"
import * as RegistryBackend from "./RegistryBackend.js"

export const run = (file: string, dryRun: boolean): Effect.Effect<number> =>
  Effect.gen(function* () {
    const config = yield* ConfigFile.load(file)
    const report = yield* Apply.apply(config, { dryRun })
    console.log(Apply.describeReport(report, dryRun))
    return 0
  }).pipe(
    Effect.provide(RegistryBackend.layer),
    Effect.catchAll((error) =>
      Effect.sync(() => {
        console.error(`sluice apply: ${error.message}`)
        return error._tag === "RegistryUnavailable" || error._tag === "RegistryConflict" ? 2 : 1
      }),
    ),
    Effect.catchAllDefect((defect) =>
      Effect.sync(() => {
        console.error(`sluice apply: ${String(defect)}`)
        return 2
      }),
    ),
  )
