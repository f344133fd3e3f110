/**
 * How the admin API reads and writes the device registry.
 *
 * Reads (`latest`) answer from the registry's current revision, never from this process's
 * Tenancy (which may be up to a poll interval behind): a client that creates a device and lists
 * the classes next sees its own write. The state is kept between requests and caught up with
 * `changesSince` (one cheap revision read when nothing changed), not loaded whole each time.
 *
 * Every write is the pattern of `sluice apply` (`src/tenancy/Apply.ts`): read the state, edit a
 * `Draft` of it, `check()` the rules, commit the draft's mutations at the revision read; when
 * another writer committed first (RegistryConflict), all of it again on the new state, a few
 * times. The edit itself refuses what it can name best (an id taken, a row of the configuration
 * file); what `check()` still finds is a 409 with each rule's reason.
 */
import { Duration, Effect, Option, Schedule } from "effect"
import {
  Registry,
  type RegistryApi,
  RegistryConflict,
  type RegistryState,
  type RegistryUnavailable as StoreUnavailable,
} from "../../tenancy/Registry.js"
import { applyChanges, Draft, type RuleError } from "../../tenancy/RegistryState.js"
import { Conflict, RegistryUnavailable } from "../ApiError.js"

/** Attempts of a write when other writers keep committing first. */
const ATTEMPTS = 8

export interface RegistryAccess {
  /** The registry's state at its current revision. */
  readonly latest: Effect.Effect<RegistryState, RegistryUnavailable>
  /**
   * Runs `edit` on a Draft of the latest state and commits it if the rules hold; retried on a
   * RegistryConflict (so `edit` must be safe to run again: make secrets inside it). Nothing is
   * committed if `edit` fails or the draft changes nothing.
   */
  readonly write: <A, E>(
    edit: (draft: Draft) => Effect.Effect<A, E>,
  ) => Effect.Effect<A, E | Conflict | RegistryUnavailable>
}

const unavailable = (e: StoreUnavailable) =>
  new RegistryUnavailable({ message: `${e.message}; nothing was changed, retry` })

/** The rule errors `check()` found, as one 409. */
export const refused = (problems: ReadonlyArray<RuleError>) =>
  new Conflict({
    message: problems.map((p) => `${p.kind === "apiKey" ? "key" : p.kind} ${p.id}: ${p.reason}`).join("; "),
  })

export const make = (registry: RegistryApi): RegistryAccess => {
  let held: RegistryState | undefined
  const latest = Effect.gen(function* () {
    const revision = yield* registry.revision
    const before = held
    if (before !== undefined && before.revision === revision) return before
    const next =
      before === undefined || before.revision > revision
        ? yield* registry.load
        : applyChanges(before, yield* registry.changesSince(before.revision))
    if (held === undefined || next.revision >= held.revision) held = next
    return next
  }).pipe(Effect.mapError(unavailable))

  // This process's writers take turns: they would only conflict with each other. Other processes'
  // writers (and `sluice apply`) are met by the commit's revision check and retried.
  const turn = Effect.unsafeMakeSemaphore(1)
  const write = <A, E>(edit: (draft: Draft) => Effect.Effect<A, E>) =>
    Effect.gen(function* () {
      const state = yield* latest
      const draft = new Draft(state)
      const result = yield* edit(draft)
      const problems = draft.check()
      if (problems.length > 0) return yield* Effect.fail(refused(problems))
      const mutations = draft.mutations()
      if (mutations.length > 0) {
        yield* registry
          .commit(mutations, state.revision)
          .pipe(Effect.catchTag("RegistryUnavailable", (e) => Effect.fail(unavailable(e))))
      }
      return result
    }).pipe(
      turn.withPermits(1),
      Effect.retry({
        while: (e) => e instanceof RegistryConflict,
        schedule: Schedule.recurs(ATTEMPTS - 1).pipe(
          Schedule.addDelay(() => Duration.millis(Math.floor(Math.random() * 20))),
        ),
      }),
      Effect.catchIf(
        (e): e is RegistryConflict => e instanceof RegistryConflict,
        () =>
          Effect.fail(
            new RegistryUnavailable({
              message: "other writers kept changing the device registry; nothing was changed, retry",
            }),
          ),
      ),
    )

  return { latest, write }
}

/**
 * The registry access of a server that has a registry (every process of the platform does); a
 * server built over a fixed Tenancy (tests, tools) has none, and its admin endpoints answer 503.
 */
export const fromContext: Effect.Effect<RegistryAccess> = Effect.map(
  Effect.serviceOption(Registry),
  Option.match({
    onSome: make,
    onNone: () => {
      const none = Effect.fail(
        new RegistryUnavailable({ message: "this server has no device registry (a fixed configuration)" }),
      )
      return { latest: none, write: () => none }
    },
  }),
)
