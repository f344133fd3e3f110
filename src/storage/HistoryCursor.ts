/**
 * The opaque `history` cursor: the (device time, msgId) of the last row of a page, the keyset the
 * next page starts strictly after. Keyset rather than offset, so rows landing meanwhile (late or
 * redelivered readings) neither shift a page nor repeat one.
 */
import { Effect, Schema } from "effect"
import { InvalidCursor } from "./TelemetryStore.js"

/** Where the next page starts: strictly after this (ts, msgId). */
export interface HistoryPosition {
  readonly ts: number
  readonly msgId: string
}

// A version prefix leaves room to change the encoding without misreading old cursors.
const prefix = "h1."

const Payload = Schema.compose(
  Schema.StringFromBase64Url,
  Schema.parseJson(Schema.Tuple(Schema.Int, Schema.String)),
)

/** The cursor for the page after one ending at `position`. */
export const encode = (position: HistoryPosition): string =>
  prefix + Schema.encodeSync(Payload)([position.ts, position.msgId])

/** Reads a cursor back; anything this module did not produce is an InvalidCursor. */
export const decode = (cursor: string): Effect.Effect<HistoryPosition, InvalidCursor> =>
  cursor.startsWith(prefix)
    ? Schema.decodeUnknown(Payload)(cursor.slice(prefix.length)).pipe(
        Effect.map(([ts, msgId]) => ({ ts, msgId })),
        Effect.mapError(() => new InvalidCursor({ cursor })),
      )
    : Effect.fail(new InvalidCursor({ cursor }))
