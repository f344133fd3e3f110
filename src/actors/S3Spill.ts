/**
 * The spill in S3 (or an S3-compatible store, `SLUICE_SPILL_ENDPOINT`), shared by every processor:
 * a processor lost for good leaves its tenants' parked batches where the next processor finds and
 * drains them. The contract, and why draining is exactly once and oldest first, is in `Spill.ts`.
 *
 * Layout: one object per entry, `<prefix><tenant>/<time>-<instance>-<sequence>`, its body the JSON
 * `{ token, rows, deadLetters }`:
 * - `<tenant>`: the tenant id, URI-encoded, so no character of it can split the tenant's folder.
 * - `<time>`: ms since the epoch when the put started, 15 digits zero-padded, never below this
 *   instance's previous one (a clock stepping back does not reorder its puts).
 * - `<instance>`: 16 random hex digits drawn when the spill opens: two processors, or two runs of
 *   one, never write the same key, and entries put in the same ms by different processors sort
 *   the same way for every reader.
 * - `<sequence>`: this instance's put counter, 12 digits zero-padded: one instance's keys strictly
 *   increase in put order, even within one ms.
 * All of a tenant's keys have the same length, so ascending key order (the order ListObjectsV2
 * returns) is time, then instance, then sequence: the first key listed is the oldest entry.
 *
 * Operations:
 * - `put`: PutObject, durable once it succeeds (S3 acknowledges a PUT after storing it
 *   redundantly). After the SDK's own retries a failure is SpillUnavailable, and the tenant actor
 *   keeps the batch in the stream instead.
 * - `oldest`: ListObjectsV2 on the tenant's folder with MaxKeys 1, then GetObject. An object gone
 *   in between (another processor drained it) means listing again.
 * - `remove`: DeleteObject, which succeeds for a key already gone.
 * - `tenants`: ListObjectsV2 on the prefix with delimiter `/`: its common prefixes, all pages.
 * S3 lists and reads after writes and deletes with strong consistency, which the above relies on.
 * Reads and removes retry throttling, server and network failures until they succeed (backoff up
 * to 5 s): the tenant actor's drain gives up on its first spill failure. A refused request (no such
 * bucket, access denied) fails at once.
 *
 * Budget (`spill_max_bytes`): a total across processors cannot be kept exact without a shared
 * counter, and a bucket has no disk to fill, so the budget is per processor instance: the bytes of
 * the objects it put and does not yet know to be gone. It knows an object is gone once it removed
 * it, or once a listing of the object's tenant (sent after the put succeeded) starts at a larger
 * key: a listing starts at the smallest key present, so a smaller one was removed, by another
 * processor's drainer. The bucket thus holds at most (live processors × `spill_max_bytes`) plus
 * what processors that died left behind, which is not counted against anyone and is drained by
 * whichever processor starts next.
 *
 * Permissions: s3:PutObject, s3:GetObject and s3:DeleteObject on `<bucket>/<prefix>*`, and
 * s3:ListBucket on the bucket (it may be limited to the prefix).
 */
import { randomBytes } from "node:crypto"
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3"
import { Duration, Effect, Option, Schedule, type Scope } from "effect"
import { type AwsError, awsClientOptions, call } from "../stream/kinesisClient.js"
import type { SpillBucketConfig } from "./ProcessorConfig.js"
import { decodeBody, encodeBody, type Spill, type SpillEntry, SpillFull, SpillUnavailable } from "./Spill.js"

export interface S3SpillConfig extends SpillBucketConfig {
  /** Bytes this instance may have in the bucket (put and not known to be gone). */
  readonly maxBytes: number
}

const TIME_DIGITS = 15
const SEQUENCE_DIGITS = 12

/** Transient failures are retried until they pass; the schedule caps the wait between tries. */
const transientRetry = Schedule.exponential(Duration.millis(100), 2).pipe(
  Schedule.either(Schedule.spaced("5 seconds")),
)

const failed = (operation: string) => (error: AwsError) =>
  new SpillUnavailable({ reason: `S3 ${operation}: ${error.reason}` })

/** An entry this instance put and does not yet know to be gone. */
interface Own {
  readonly key: string
  readonly bytes: number
  /** When its put succeeded, in this instance's count of successful puts. */
  readonly putNumber: number
}

/** Opens the spill in `config.bucket` (which must exist); the scope destroys the client. */
export const make = (config: S3SpillConfig): Effect.Effect<Spill, SpillUnavailable, Scope.Scope> =>
  Effect.gen(function* () {
    const { bucket, maxBytes } = config
    const prefix = config.prefix === "" || config.prefix.endsWith("/") ? config.prefix : `${config.prefix}/`
    const client = yield* Effect.acquireRelease(
      Effect.sync(
        () =>
          new S3Client({
            ...awsClientOptions(config),
            // An S3-compatible store at an address of its own has no per-bucket host names.
            forcePathStyle: config.endpoint !== undefined,
          }),
      ),
      (client) => Effect.sync(() => client.destroy()),
    )

    const folder = (tenantId: string) => `${prefix}${encodeURIComponent(tenantId)}/`
    const instance = randomBytes(8).toString("hex")
    let lastTime = 0
    let sequence = 0
    const nextKey = (tenantId: string) => {
      lastTime = Math.max(lastTime, Date.now())
      sequence += 1
      const time = String(lastTime).padStart(TIME_DIGITS, "0")
      return `${folder(tenantId)}${time}-${instance}-${String(sequence).padStart(SEQUENCE_DIGITS, "0")}`
    }

    // The budget: this instance's entries not known to be gone, per tenant in key order.
    let bytes = 0
    let puts = 0
    const own = new Map<string, Array<Own>>()
    const tenantOf = new Map<string, string>()
    const forget = (tenantId: string, entry: Own) => {
      const entries = own.get(tenantId)
      const at = entries?.indexOf(entry) ?? -1
      if (entries === undefined || at < 0) return
      entries.splice(at, 1)
      if (entries.length === 0) own.delete(tenantId)
      tenantOf.delete(entry.key)
      bytes -= entry.bytes
    }
    /** A listing sent after put number `asOf` started at `first` (none: the folder was empty). */
    const listed = (tenantId: string, asOf: number, first: string | undefined) => {
      for (const entry of [...(own.get(tenantId) ?? [])]) {
        if (first !== undefined && entry.key >= first) break
        if (entry.putNumber <= asOf) forget(tenantId, entry)
      }
    }

    /** Retries throttling, server and network failures; a refused request fails at once. */
    const retried = <A>(operation: string, effect: Effect.Effect<A, AwsError>) =>
      effect.pipe(
        Effect.tapError((error) =>
          error.fault === "client"
            ? Effect.void
            : Effect.logWarning(`the S3 spill's ${operation} failed; retrying`, error.reason),
        ),
        Effect.retry({ schedule: transientRetry, while: (error) => error.fault !== "client" }),
        Effect.mapError(failed(operation)),
      )

    const firstKey = (tenantId: string) =>
      retried(
        "ListObjectsV2",
        call((abortSignal) =>
          client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: folder(tenantId), MaxKeys: 1 }), {
            abortSignal,
          }),
        ),
      ).pipe(Effect.map((out) => out.Contents?.[0]?.Key))

    /** The object's body, or none if it is gone (removed since it was listed). */
    const getBody = (key: string) =>
      call(async (abortSignal) => {
        const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal })
        return out.Body === undefined ? "" : await out.Body.transformToString("utf8")
      }).pipe(
        Effect.map(Option.some),
        Effect.catchIf(
          (error) => error.name === "NoSuchKey",
          () => Effect.succeedNone,
        ),
        (effect) => retried("GetObject", effect),
      )

    const oldest = (tenantId: string): Effect.Effect<Option.Option<SpillEntry>, SpillUnavailable> =>
      Effect.gen(function* () {
        for (;;) {
          const asOf = puts
          const key = yield* firstKey(tenantId)
          listed(tenantId, asOf, key)
          if (key === undefined) return Option.none()
          const body = yield* getBody(key)
          if (Option.isNone(body)) continue
          const parsed = yield* Effect.try({
            try: () => decodeBody<Omit<SpillEntry, "id">>(body.value),
            catch: (cause) => new SpillUnavailable({ reason: `S3 spill entry ${key} is not JSON: ${cause}` }),
          })
          return Option.some({
            id: key,
            token: parsed.token,
            rows: parsed.rows,
            deadLetters: parsed.deadLetters,
          })
        }
      })

    const spill: Spill = {
      put: (tenantId, entry) =>
        Effect.suspend((): Effect.Effect<void, SpillFull | SpillUnavailable> => {
          const body = encodeBody({ token: entry.token, rows: entry.rows, deadLetters: entry.deadLetters })
          const size = Buffer.byteLength(body)
          if (bytes + size > maxBytes) return Effect.fail(new SpillFull({ bytes }))
          const key = nextKey(tenantId)
          return call((abortSignal) =>
            client.send(
              new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: "application/json" }),
              { abortSignal },
            ),
          ).pipe(
            Effect.mapError(failed("PutObject")),
            Effect.zipRight(
              Effect.sync(() => {
                puts += 1
                const entries = own.get(tenantId) ?? []
                entries.push({ key, bytes: size, putNumber: puts })
                own.set(tenantId, entries)
                tenantOf.set(key, tenantId)
                bytes += size
              }),
            ),
          )
        }),
      oldest,
      remove: (id) =>
        retried(
          "DeleteObject",
          call((abortSignal) =>
            client.send(new DeleteObjectCommand({ Bucket: bucket, Key: id }), { abortSignal }),
          ),
        ).pipe(
          Effect.zipRight(
            Effect.sync(() => {
              const tenantId = tenantOf.get(id)
              if (tenantId === undefined) return
              const entry = own.get(tenantId)?.find((e) => e.key === id)
              if (entry !== undefined) forget(tenantId, entry)
            }),
          ),
        ),
      tenants: Effect.gen(function* () {
        const tenants: Array<string> = []
        let continuationToken: string | undefined
        do {
          const token = continuationToken
          const out = yield* retried(
            "ListObjectsV2",
            call((abortSignal) =>
              client.send(
                new ListObjectsV2Command({
                  Bucket: bucket,
                  Prefix: prefix,
                  Delimiter: "/",
                  ...(token === undefined ? {} : { ContinuationToken: token }),
                }),
                { abortSignal },
              ),
            ),
          )
          for (const common of out.CommonPrefixes ?? []) {
            const folderName = common.Prefix?.slice(prefix.length, -1)
            if (folderName !== undefined && folderName !== "") tenants.push(decodeURIComponent(folderName))
          }
          continuationToken = out.IsTruncated === true ? out.NextContinuationToken : undefined
        } while (continuationToken !== undefined)
        return tenants
      }),
    }
    return spill
  })
