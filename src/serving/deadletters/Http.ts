/** Handlers of the dead-letters group. */
import { HttpApiBuilder } from "@effect/platform"
import { Effect, Either } from "effect"
import { TelemetryStore } from "../../storage/TelemetryStore.js"
import { Api } from "../Api.js"
import { BadRequest } from "../ApiError.js"
import { CurrentTenant } from "../Authentication.js"
import * as Query from "../Query.js"
import * as DeadLetterCursor from "./DeadLetterCursor.js"

/** An optional text parameter of 1 to `max` characters. */
const text = (
  name: string,
  raw: string | undefined,
  max: number,
): Either.Either<string | undefined, BadRequest> =>
  raw === undefined || (raw.length >= 1 && raw.length <= max)
    ? Either.right(raw)
    : Either.left(new BadRequest({ message: `${name}: expected 1 to ${max} characters, got ${raw.length}` }))

export const HttpDeadLettersLive = HttpApiBuilder.group(Api, "deadLetters", (handlers) =>
  Effect.gen(function* () {
    const store = yield* TelemetryStore
    return handlers.handle(
      "list",
      Effect.fn("DeadLetters.list")(function* ({ urlParams }) {
        const { tenantId } = yield* CurrentTenant
        const limit = yield* Query.limit(urlParams.limit, { fallback: 100, max: 1000 })
        const filter = {
          after:
            urlParams.cursor === undefined ? undefined : yield* DeadLetterCursor.decode(urlParams.cursor),
          deviceId: yield* text("deviceId", urlParams.deviceId, 100),
          reason: yield* text("reason", urlParams.reason, 200),
        }
        // One more than the page tells whether there is a next page without a count query.
        const rows = yield* store
          .deadLetters(tenantId, limit + 1, filter)
          .pipe(Effect.catchTag("InvalidQuery", (e) => new BadRequest({ message: e.reason })))
        const deadLetters = rows.slice(0, limit).map(({ tenantId: _, ...letter }) => letter)
        const last = deadLetters.at(-1)
        return rows.length > limit && last !== undefined
          ? { deadLetters, nextCursor: DeadLetterCursor.encode(last) }
          : { deadLetters }
      }),
    )
  }),
)
