/**
 * Request bodies of the admin API, read and decoded here rather than by HttpApi, so that every
 * refusal is specific: a body over its limit is 413, text that is not JSON is 400 with where it
 * breaks, and a body off its schema is 400 with each field's path and reason (unknown keys
 * included: a misspelt `feilds` must not pass silently).
 *
 * Limits: 1 MiB for a body (a device class definition is the largest: a few KiB), 16 MiB for
 * `POST /v1/devices/bulk` (100,000 devices of 100-character ids and classes fit). The server's
 * own limit, for every other route, is @effect/platform-node's default (10 MiB); this route's is
 * raised for the read of its body only.
 */
import { HttpIncomingMessage, type HttpServerRequest } from "@effect/platform"
import { Effect, Either, Option, ParseResult, Schema } from "effect"
import { formatPath } from "../../tenancy/ConfigFile.js"
import { BodyTooLarge, InvalidBody } from "../ApiError.js"

export const MAX_BODY_BYTES = 1024 * 1024
export const MAX_BULK_BODY_BYTES = 16 * 1024 * 1024

const tooLarge = (maxBytes: number) =>
  new BodyTooLarge({
    message: `the request body is larger than this endpoint's limit of ${maxBytes} bytes`,
    max_bytes: maxBytes,
  })

export const invalid = (problems: ReadonlyArray<{ readonly field: string; readonly reason: string }>) =>
  new InvalidBody({
    message: problems.map((p) => (p.field === "" ? p.reason : `${p.field}: ${p.reason}`)).join("; "),
    problems,
  })

/** The body as text, refused past `maxBytes` (by its Content-Length first, else as it arrives). */
export const text = (
  request: HttpServerRequest.HttpServerRequest,
  maxBytes: number,
): Effect.Effect<string, BodyTooLarge | InvalidBody> => {
  const declared = Number(request.headers["content-length"] ?? Number.NaN)
  if (Number.isFinite(declared) && declared > maxBytes) return Effect.fail(tooLarge(maxBytes))
  return request.text.pipe(
    HttpIncomingMessage.withMaxBodySize(Option.some(maxBytes)),
    Effect.mapError((e) =>
      e.cause instanceof Error && e.cause.message.includes("maxBytes")
        ? tooLarge(maxBytes)
        : invalid([{ field: "", reason: `the body could not be read: ${e.message}` }]),
    ),
  )
}

/** `text` parsed as JSON; an empty body is `empty` when given. */
export const parseJson = (body: string, empty?: unknown): Either.Either<unknown, InvalidBody> => {
  if (body.trim() === "" && empty !== undefined) return Either.right(empty)
  try {
    return Either.right(JSON.parse(body) as unknown)
  } catch (e) {
    return Either.left(
      invalid([{ field: "", reason: `the body is not JSON: ${e instanceof Error ? e.message : String(e)}` }]),
    )
  }
}

/**
 * The schema's issues as body problems, without the "Expected undefined" that every optional key
 * adds beside the real reason (as `ConfigFile` does for the file).
 */
export const problemsOf = (error: ParseResult.ParseError) => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const real = new Set(
    issues.filter((i) => !i.message.startsWith("Expected undefined")).map((i) => formatPath(i.path)),
  )
  return issues
    .filter((i) => !i.message.startsWith("Expected undefined") || !real.has(formatPath(i.path)))
    .map((i) => ({ field: formatPath(i.path), reason: i.message }))
}

/** `value` decoded with `schema`: every problem, unknown keys refused. */
export const decode = <A, I>(schema: Schema.Schema<A, I>, value: unknown): Either.Either<A, InvalidBody> =>
  Either.mapLeft(
    Schema.decodeUnknownEither(schema, { errors: "all", onExcessProperty: "error" })(value),
    (error) => invalid(problemsOf(error)),
  )

/** The JSON body of `request`, decoded with `schema` (1 MiB at most; an empty body is `empty` when given). */
export const json = <A, I>(
  schema: Schema.Schema<A, I>,
  request: HttpServerRequest.HttpServerRequest,
  empty?: unknown,
): Effect.Effect<A, BodyTooLarge | InvalidBody> =>
  Effect.flatMap(text(request, MAX_BODY_BYTES), (body) =>
    Either.flatMap(parseJson(body, empty), (value) => decode(schema, value)),
  )
