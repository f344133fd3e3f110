/** Handlers of the dead-letters group. */
import { HttpApiBuilder } from "@effect/platform"
import { Effect } from "effect"
import { TelemetryStore } from "../../storage/TelemetryStore.js"
import { Api } from "../Api.js"
import { BadRequest } from "../ApiError.js"
import { CurrentTenant } from "../Authentication.js"
import * as Query from "../Query.js"

export const HttpDeadLettersLive = HttpApiBuilder.group(Api, "deadLetters", (handlers) =>
  Effect.gen(function* () {
    const store = yield* TelemetryStore
    return handlers.handle(
      "list",
      Effect.fn("DeadLetters.list")(function* ({ urlParams }) {
        const { tenantId } = yield* CurrentTenant
        const limit = yield* Query.limit(urlParams.limit, { fallback: 100, max: 1000 })
        const deadLetters = yield* store
          .deadLetters(tenantId, limit)
          .pipe(Effect.catchTag("InvalidQuery", (e) => new BadRequest({ message: e.reason })))
        return { deadLetters }
      }),
    )
  }),
)
