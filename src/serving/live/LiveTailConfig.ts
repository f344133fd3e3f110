/**
 * Settings of the stream tail (`StreamTail.ts`), under `sluice.live_tail` (`SLUICE_LIVE_TAIL_*`).
 * Apart from `ServingConfig` because they read two of the processor's keys: only a serving process
 * that tails the stream loads them.
 */
import { Config } from "effect"
import * as ProcessorConfig from "../../actors/ProcessorConfig.js"

export interface LiveTailConfig {
  /**
   * Wait before pulling a caught-up shard again (SLUICE_LIVE_TAIL_POLL_MS). Default 5 ms, the
   * processor's: it bounds how late a live reading is, and an idle pull of the embedded log is
   * one indexed SELECT. On Kinesis the reader spaces its calls to 200 ms anyway.
   */
  readonly pollMs: number
  /**
   * Records per pull (SLUICE_LIVE_TAIL_PULL_MAX_RECORDS). Default 500: a pull is decoded in one
   * event-loop turn, so this bounds how long the tail holds up the HTTP server's requests.
   */
  readonly pullMaxRecords: number
  /** How often shards are listed for splits and merges (SLUICE_LIVE_TAIL_SHARD_REFRESH_MS). Default 10 s. */
  readonly shardRefreshMs: number
  /**
   * Message ids remembered per device, and how long an idle device's state is kept: the
   * processor's `SLUICE_PROCESSOR_DEDUP_WINDOW` and `SLUICE_PROCESSOR_DEVICE_IDLE_MS`, read
   * from the same keys, so the tail drops the same redeliveries the processor does.
   */
  readonly dedupWindow: number
  readonly deviceIdleMs: number
}

const tailKey = <A>(c: Config.Config<A>) => c.pipe(Config.nested("live_tail"), Config.nested("sluice"))

const positive = Config.validate<number>({ message: "must be at least 1", validation: (n) => n >= 1 })

/** The stream tail's settings (SLUICE_LIVE_TAIL_*, and two of the processor's). */
export const liveTail: Config.Config<LiveTailConfig> = Config.all({
  pollMs: tailKey(Config.integer("poll_ms").pipe(Config.withDefault(5), positive)),
  pullMaxRecords: tailKey(Config.integer("pull_max_records").pipe(Config.withDefault(500), positive)),
  shardRefreshMs: tailKey(Config.integer("shard_refresh_ms").pipe(Config.withDefault(10_000), positive)),
  processor: ProcessorConfig.processor,
}).pipe(
  Config.map(({ processor, ...tail }) => ({
    ...tail,
    dedupWindow: processor.dedupWindow,
    deviceIdleMs: processor.deviceIdleMs,
  })),
)

/** `liveTail`'s defaults, for tests that override a few fields. */
export const liveTailDefaults: LiveTailConfig = {
  pollMs: 5,
  pullMaxRecords: 500,
  shardRefreshMs: 10_000,
  dedupWindow: ProcessorConfig.defaults.dedupWindow,
  deviceIdleMs: ProcessorConfig.defaults.deviceIdleMs,
}
