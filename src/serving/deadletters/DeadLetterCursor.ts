/**
 * The dead-letter list's opaque cursor: the (arrival, shard, sequence number) of the last letter
 * of a page, the keyset the next page starts strictly after in the newest-first order. A stream
 * position names one record, and one record makes at most one dead letter, so no two letters share
 * a position and none is skipped or repeated across pages, whatever arrives meanwhile.
 */
import { Either, Schema } from "effect"
import type { DeadLetterPosition } from "../../storage/TelemetryStore.js"
import { BadRequest } from "../ApiError.js"

// A version prefix leaves room to change the encoding without misreading old cursors.
const prefix = "l1."

const Payload = Schema.compose(
  Schema.StringFromBase64Url,
  Schema.parseJson(
    Schema.Tuple(
      Schema.Int,
      Schema.String.pipe(Schema.minLength(1)),
      // Kinesis sequence numbers are decimals of up to 129 digits (the embedded log's are rowids).
      Schema.String.pipe(Schema.pattern(/^\d{1,129}$/)),
    ),
  ),
)

/** The cursor of the page after one ending with the letter at `position`. */
export const encode = (position: DeadLetterPosition): string =>
  prefix + Schema.encodeSync(Payload)([position.receivedAt, position.shardId, position.sequenceNumber])

/** The position a cursor names; anything `encode` did not produce is a BadRequest. */
export const decode = (cursor: string): Either.Either<DeadLetterPosition, BadRequest> => {
  const decoded = cursor.startsWith(prefix)
    ? Schema.decodeUnknownEither(Payload)(cursor.slice(prefix.length))
    : Either.left(undefined)
  return Either.match(decoded, {
    onLeft: () =>
      Either.left(
        new BadRequest({
          message: "cursor: not a cursor this API handed out; pass back nextCursor unchanged",
        }),
      ),
    onRight: ([receivedAt, shardId, sequenceNumber]) => Either.right({ receivedAt, shardId, sequenceNumber }),
  })
}
