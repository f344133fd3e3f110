/** Waiting in Effect tests for what a running processor will get to: polling, bounded in time. */
import { Effect } from "effect"

/**
 * A poll: runs `probe` every `intervalMs` until `check` holds of its value or `timeoutMs` have
 * passed, and returns the last value (the test's expectation on it says what was missing).
 */
export const polling =
  (options: { readonly timeoutMs: number; readonly intervalMs: number }) =>
  <A, E, R>(probe: Effect.Effect<A, E, R>, check: (a: A) => boolean) =>
    Effect.gen(function* () {
      const deadline = Date.now() + options.timeoutMs
      let last = yield* probe
      while (!check(last) && Date.now() < deadline) {
        yield* Effect.sleep(options.intervalMs)
        last = yield* probe
      }
      return last
    })
