/**
 * Child process of the stream benchmark's multi-process phase: appends to a shared embedded log
 * from `appenders` fibers for `seconds`, starting at `startAt` (so the processes overlap), and
 * prints "records ms".
 *
 * argv: dataDir appenders seconds batch fsync startAt
 */
import { Effect, Layer } from "effect"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { StreamLog } from "../../src/stream/StreamLog.js"

const [dataDir, appendersText, secondsText, batchText, fsyncText, startAtText] = process.argv.slice(2)
const appenders = Number(appendersText)
const batch = Number(batchText)
const payload = Buffer.alloc(200, 7)
const keys = Array.from({ length: 10_000 }, (_, i) => `device-${i}`)

const run = Effect.gen(function* () {
  const log = yield* StreamLog
  // Sleep, not spin, until the common start: the other processes are still loading.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.max(0, Number(startAtText) - Date.now()))
  let done = 0
  const start = performance.now()
  const deadline = start + Number(secondsText) * 1000
  yield* Effect.forEach(
    Array.from({ length: appenders }, (_, a) => a),
    (a) =>
      Effect.gen(function* () {
        // Processes take different keys, as devices spread over ingress workers would.
        let k = a * 7919 + process.pid
        while (performance.now() < deadline) {
          yield* log.append(
            Array.from({ length: batch }, () => ({ partitionKey: keys[k++ % keys.length]!, data: payload })),
          )
          done += batch
        }
      }),
    { concurrency: "unbounded", discard: true },
  )
  process.stdout.write(`${done} ${performance.now() - start}\n`)
})

Effect.runPromise(
  run.pipe(
    Effect.provide(
      Layer.fresh(
        SqliteStreamLog.layerWith({
          ...SqliteStreamLog.defaults(dataDir!),
          fsync: fsyncText === "true",
          maxBytes: 64 * 1024 ** 3,
        }),
      ),
    ),
  ),
).catch((error) => {
  console.error(error)
  process.exit(1)
})
