/**
 * The device list's opaque cursor: the id of the last device a page looked at; the next page
 * starts strictly after it. Keyset rather than offset, so devices created or deleted meanwhile
 * neither shift a page nor repeat one, and a page costs the same deep in the list as at its start.
 */
import { Either, Schema } from "effect"
import { BadRequest } from "../ApiError.js"

// A version prefix leaves room to change the encoding without misreading old cursors.
const prefix = "d1."

const Payload = Schema.compose(
  Schema.StringFromBase64Url,
  Schema.parseJson(Schema.Tuple(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(100)))),
)

/** The cursor of the page after one that ended at `deviceId`. */
export const encode = (deviceId: string): string => prefix + Schema.encodeSync(Payload)([deviceId])

/** The device id a cursor names; anything `encode` did not produce is a BadRequest. */
export const decode = (cursor: string): Either.Either<string, BadRequest> => {
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
    onRight: ([deviceId]) => Either.right(deviceId),
  })
}
