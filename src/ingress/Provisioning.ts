/**
 * Fleet provisioning by claim, on the ingress listener (devices talk to ingress, not to the API):
 * `POST /v1/provision` with `Authorization: Bearer <claim token>` and `{"device_id": "…"}`
 * registers the device in the claim's tenant and class (`source: api`) and answers 201 with its
 * own credential, shown this once and stored only as its hash. The claims are made by a tenant
 * admin key (`src/serving/admin/Claims.ts`); a claim is a `RegClaim` row of the device registry.
 *
 * One registry commit per device: the new device and the claim's `remaining` minus one, written
 * together at the revision read (a `Draft` checked by the registry's rules). When another writer
 * committed first (RegistryConflict) the whole attempt runs again on the new state, re-checking
 * that the claim still has devices left, is not revoked and has not expired, so concurrent
 * provisions, on every ingress process and node, never register more devices than the claim's
 * count. This process's provisions take turns (they would only conflict with each other).
 *
 * The state read is this process's own copy of the rows provisioning needs (tenants, classes,
 * claims, the device ids), loaded at the first provision and caught up in place from the
 * registry's changes, so a provision costs a revision read, not a copy of a million devices. The
 * draft holds just the rows the commit touches or depends on (the tenant, the class, the claim):
 * every rule about a new device and a claim is about those rows, and the others are unchanged.
 *
 * Refusals, each with a JSON body naming why:
 * - 401 `ClaimUnauthorized`, `reason`: `missing` (no bearer token), `unknown` (not a claim token),
 *   `revoked`, `expired`. A revoked or expired token is told so: only someone holding the token
 *   learns it, and an operator reading a device's log needs to know which it was.
 * - 409 `ProvisioningConflict`, `reason`: `used_up` (the claim registered all its devices),
 *   `device_registered` (the id is taken: a device registers itself once; a device that lost its
 *   answer cannot provision again — its tenant rotates its credential through the admin API),
 *   `refused` (a registry rule refused the rows; not expected: the rules keep a claim's tenant and
 *   class). The claim row keeps only `remaining`, not its original count, so `used_up` cannot name it.
 * - 400 `InvalidProvisioning` (the body or the device id), 413 for a body over 4 KiB.
 * - 429 `ProvisioningThrottled` with Retry-After: token buckets per claim token and per remote
 *   address, in memory, per ingress process (N workers or nodes allow N times the rate).
 * - 503 `ProvisioningUnavailable` with Retry-After: the registry did not answer.
 *
 * Every request, success or refusal, is logged with the claim's id (the first 12 hex digits of
 * the token's SHA-256, never the token), the device id and the remote address, and counted in
 * `sluice_provisioning_total{outcome}`.
 */
import {
  HttpApi,
  HttpApiBuilder,
  HttpApiEndpoint,
  HttpApiGroup,
  HttpApiMiddleware,
  HttpApiSchema,
  HttpApiSecurity,
  HttpIncomingMessage,
  type HttpServerRequest,
  HttpServerResponse,
  OpenApi,
} from "@effect/platform"
import { NodeHttpServerRequest } from "@effect/platform-node"
import { Duration, Effect, Either, Layer, Option, ParseResult, Schedule, Schema } from "effect"
import { Metrics } from "../observability/Metrics.js"
import { DeviceConfig } from "../tenancy/PlatformConfig.js"
import {
  type Changes,
  emptyState,
  type RegClaim,
  type RegDeviceClass,
  Registry,
  type RegistryApi,
  RegistryConflict,
  type RegistryState,
  type RegistryUnavailable,
  type RegTenant,
} from "../tenancy/Registry.js"
import { Draft } from "../tenancy/RegistryState.js"
import { hashSecret, newSecret, publicId } from "../tenancy/Secrets.js"
import { PayloadTooLarge } from "./IngestApi.js"

/** The largest provisioning body: `{"device_id": "…"}` of a 100-character id is far below. */
export const MAX_BODY_BYTES = 4096

/** Attempts of one provision while other writers keep committing first. */
const ATTEMPTS = 10

// Errors, as the OpenAPI document declares them (the handler builds the answers itself, to add headers).

export class ClaimUnauthorized extends Schema.TaggedError<ClaimUnauthorized>()(
  "ClaimUnauthorized",
  {
    message: Schema.String,
    reason: Schema.Literal("missing", "unknown", "revoked", "expired").annotations({
      description:
        "`missing`: no `Authorization: Bearer <claim token>`; `unknown`: not a claim token; `revoked`, `expired`: the claim's",
    }),
  },
  HttpApiSchema.annotations({
    status: 401,
    description: "No claim token, or one that is unknown, revoked or expired; `reason` says which",
  }),
) {}

export class ProvisioningConflict extends Schema.TaggedError<ProvisioningConflict>()(
  "ProvisioningConflict",
  {
    message: Schema.String,
    reason: Schema.Literal("used_up", "device_registered", "refused").annotations({
      description:
        "`used_up`: the claim registered all the devices it allows; `device_registered`: the device id is taken " +
        "(a device registers itself once); `refused`: a registry rule refused the device, the message says which",
    }),
  },
  HttpApiSchema.annotations({
    status: 409,
    description: "The claim has no devices left, or the device id is already registered; `reason` says which",
  }),
) {}

export class InvalidProvisioning extends Schema.TaggedError<InvalidProvisioning>()(
  "InvalidProvisioning",
  { message: Schema.String },
  HttpApiSchema.annotations({
    status: 400,
    description: 'The body is not `{"device_id": "<id>"}` or the id is malformed; the message says why',
  }),
) {}

export class ProvisioningThrottled extends Schema.TaggedError<ProvisioningThrottled>()(
  "ProvisioningThrottled",
  { message: Schema.String, retryAfterSeconds: Schema.Int },
  HttpApiSchema.annotations({
    status: 429,
    description:
      "Too many provisioning requests with this token or from this address: retry after Retry-After seconds",
  }),
) {}

export class ProvisioningUnavailable extends Schema.TaggedError<ProvisioningUnavailable>()(
  "ProvisioningUnavailable",
  { message: Schema.String, retryAfterSeconds: Schema.Int },
  HttpApiSchema.annotations({
    status: 503,
    description:
      "The device registry did not answer: nothing was registered; retry after Retry-After seconds",
  }),
) {}

/**
 * The claim token as the bearer token, declared for the OpenAPI document. The handler reads and
 * judges it itself (so a refusal is logged and counted like any other), so this lets every request
 * through.
 */
export class ClaimAuthentication extends HttpApiMiddleware.Tag<ClaimAuthentication>()(
  "sluice/ingress/ClaimAuthentication",
  { security: { claimToken: HttpApiSecurity.bearer } },
) {}

const claimAuthenticationLayer = Layer.succeed(
  ClaimAuthentication,
  ClaimAuthentication.of({ claimToken: () => Effect.void }),
)

export const ProvisionRequest = Schema.Struct({
  device_id: DeviceConfig.fields.id.annotations({
    description:
      "The device's id, unique across every tenant (its MQTT client id): 1-100 letters, digits, '_', '.', ':', '-'",
  }),
}).annotations({ identifier: "ProvisionRequest" })

export const Provisioned = Schema.Struct({
  device_id: Schema.String,
  credential: Schema.String.annotations({
    description:
      "The device's own secret (MQTT password, HTTP bearer token at /v1/telemetry): shown this once, stored only as a hash",
  }),
}).annotations({ identifier: "Provisioned" })

const retryAfterHeader = {
  description: "Seconds to wait before retrying",
  schema: { type: "integer", minimum: 0 },
}

/** HttpApi has no response headers in its OpenAPI output; 429 and 503 carry Retry-After. */
const documentRetryAfter = (operation: Record<string, unknown>): Record<string, unknown> => {
  const responses = { ...(operation.responses as Record<string, Record<string, unknown>>) }
  for (const status of ["429", "503"]) {
    const response = responses[status]
    if (response !== undefined)
      responses[status] = { ...response, headers: { "Retry-After": retryAfterHeader } }
  }
  return { ...operation, responses }
}

/** `POST /v1/provision`, in a group named `provisioning`. */
export class ProvisioningApi extends HttpApiGroup.make("provisioning")
  .add(
    HttpApiEndpoint.post("provision", "/v1/provision")
      .setPayload(ProvisionRequest)
      .addSuccess(Provisioned, { status: 201 })
      .addError(InvalidProvisioning)
      .addError(ClaimUnauthorized)
      .addError(ProvisioningConflict)
      .addError(PayloadTooLarge)
      .addError(ProvisioningThrottled)
      .addError(ProvisioningUnavailable)
      .annotate(
        OpenApi.Description,
        "A device registers itself with a provisioning claim token (the bearer token) made by its tenant, and " +
          "receives its own credential, returned this once: it may publish with it within the registry poll " +
          "interval. The device joins the claim's tenant and device class; the claim registers at most its " +
          "count of devices. A device registers once: an id already registered is 409, and a device that lost " +
          "its answer gets a new credential from its tenant (the admin API's rotate), not from here. Rate-limited " +
          "per token and per address (429 with Retry-After).",
      )
      .annotate(OpenApi.Transform, documentRetryAfter),
  )
  .middleware(ClaimAuthentication)
  .annotate(OpenApi.Title, "Provisioning")
  .annotate(
    OpenApi.Description,
    "Fleet provisioning: devices holding a claim token register themselves and receive their own credential",
  ) {}

// Rate limits.

/** A token bucket: `perSecond` sustained, `burst` at once. */
export interface Rate {
  readonly perSecond: number
  readonly burst: number
}

export interface ProvisioningLimits {
  /** Per claim token (by its hash): one fleet cannot hog the registry's writers. */
  readonly perToken: Rate
  /** Per remote address (all tokens, unknown ones included): bounds guessing tokens. */
  readonly perAddress: Rate
}

/** 10/s (burst 20) per token, 5/s (burst 10) per address; per ingress process. */
export const defaultLimits: ProvisioningLimits = {
  perToken: { perSecond: 10, burst: 20 },
  perAddress: { perSecond: 5, burst: 10 },
}

/**
 * Token buckets by key: `take(key, now)` takes one token and answers 0, or answers the ms until
 * one is there (taking none). Full buckets are forgotten once there are many (a full bucket is
 * what a new key gets), so the map holds only keys seen in the last few seconds.
 */
export const buckets = (rate: Rate) => {
  const held = new Map<string, { tokens: number; at: number }>()
  let sweepAbove = 10_000
  const refill = (b: { tokens: number; at: number }, now: number) => {
    b.tokens = Math.min(rate.burst, b.tokens + ((now - b.at) * rate.perSecond) / 1000)
    b.at = Math.max(b.at, now)
  }
  return (key: string, now: number): number => {
    let b = held.get(key)
    if (b === undefined) {
      if (held.size >= sweepAbove) {
        for (const [k, v] of held) {
          refill(v, now)
          if (v.tokens >= rate.burst) held.delete(k)
        }
        sweepAbove = Math.max(10_000, held.size * 2)
      }
      b = { tokens: rate.burst, at: now }
      held.set(key, b)
    } else {
      refill(b, now)
    }
    if (b.tokens >= 1) {
      b.tokens -= 1
      return 0
    }
    return Math.ceil(((1 - b.tokens) * 1000) / rate.perSecond)
  }
}

// The registry rows provisioning reads.

interface Held {
  revision: number
  readonly tenants: Map<string, RegTenant>
  readonly classes: Map<string, RegDeviceClass>
  readonly claims: Map<string, RegClaim>
  readonly devices: Set<string>
}

const hold = (state: RegistryState): Held => ({
  revision: state.revision,
  tenants: new Map(state.tenants),
  classes: new Map(state.classes),
  claims: new Map(state.claims),
  devices: new Set(state.devices.keys()),
})

/** `held` caught up with `changes`, in place. */
const catchUp = (held: Held, changes: Changes) => {
  for (const { kind, id } of changes.removed) {
    if (kind === "tenant") held.tenants.delete(id)
    else if (kind === "class") held.classes.delete(id)
    else if (kind === "claim") held.claims.delete(id)
    else if (kind === "device") held.devices.delete(id)
  }
  for (const row of changes.put) {
    if (row.kind === "tenant") held.tenants.set(row.value.id, row.value)
    else if (row.kind === "class") held.classes.set(row.value.name, row.value)
    else if (row.kind === "claim") held.claims.set(row.value.hash, row.value)
    else if (row.kind === "device") held.devices.add(row.value.id)
  }
  held.revision = changes.revision
}

/** The bearer token of an `Authorization` header, or "". */
const bearerOf = (authorization: string | undefined) =>
  authorization !== undefined && /^bearer /i.test(authorization) ? authorization.slice(7).trim() : ""

type Refusal =
  | ClaimUnauthorized
  | ProvisioningConflict
  | InvalidProvisioning
  | PayloadTooLarge
  | ProvisioningUnavailable
  | ProvisioningThrottled

/** What the metric and the log call each answer. */
const outcomeOf = (refusal: Refusal): string => {
  switch (refusal._tag) {
    case "ClaimUnauthorized":
    case "ProvisioningConflict":
      return refusal.reason
    case "InvalidProvisioning":
      return "invalid"
    case "PayloadTooLarge":
      return "too_large"
    case "ProvisioningThrottled":
      return "throttled"
    case "ProvisioningUnavailable":
      return "unavailable"
  }
}

const statusOf = (refusal: Refusal): number => {
  switch (refusal._tag) {
    case "ClaimUnauthorized":
      return 401
    case "ProvisioningConflict":
      return 409
    case "InvalidProvisioning":
      return 400
    case "PayloadTooLarge":
      return 413
    case "ProvisioningThrottled":
      return 429
    case "ProvisioningUnavailable":
      return 503
  }
}

/** A refusal's answer: the body the OpenAPI document declares, Retry-After where it applies. */
const answer = (refusal: Refusal) => {
  const body = (() => {
    switch (refusal._tag) {
      case "ClaimUnauthorized":
        return Schema.encodeSync(ClaimUnauthorized)(refusal)
      case "ProvisioningConflict":
        return Schema.encodeSync(ProvisioningConflict)(refusal)
      case "InvalidProvisioning":
        return Schema.encodeSync(InvalidProvisioning)(refusal)
      case "PayloadTooLarge":
        return Schema.encodeSync(PayloadTooLarge)(refusal)
      case "ProvisioningThrottled":
        return Schema.encodeSync(ProvisioningThrottled)(refusal)
      case "ProvisioningUnavailable":
        return Schema.encodeSync(ProvisioningUnavailable)(refusal)
    }
  })()
  const retryAfter =
    refusal._tag === "ProvisioningThrottled" || refusal._tag === "ProvisioningUnavailable"
      ? { "retry-after": String(refusal.retryAfterSeconds) }
      : {}
  return HttpServerResponse.unsafeJson(body, { status: statusOf(refusal), headers: retryAfter })
}

const retryAfterSeconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000))

const tooLarge = new PayloadTooLarge({
  message: `the body is larger than the ${MAX_BODY_BYTES}-byte limit of provisioning`,
  maxBytes: MAX_BODY_BYTES,
})

/** The body, parsed as JSON (bounded), or why not. */
const readJson = (
  request: HttpServerRequest.HttpServerRequest,
): Effect.Effect<Either.Either<unknown, InvalidProvisioning | PayloadTooLarge>> => {
  const declared = Number(request.headers["content-length"] ?? Number.NaN)
  if (Number.isFinite(declared) && declared > MAX_BODY_BYTES) return Effect.succeed(Either.left(tooLarge))
  return request.text.pipe(
    HttpIncomingMessage.withMaxBodySize(Option.some(MAX_BODY_BYTES)),
    Effect.map((text): Either.Either<unknown, InvalidProvisioning> => {
      try {
        return Either.right(JSON.parse(text) as unknown)
      } catch (e) {
        return Either.left(
          new InvalidProvisioning({
            message: `the body is not JSON: ${e instanceof Error ? e.message : String(e)}; expected {"device_id": "<id>"}`,
          }),
        )
      }
    }),
    Effect.catchAll((e) =>
      Effect.succeed(
        Either.left(
          e.cause instanceof Error && e.cause.message.includes("maxBytes")
            ? tooLarge
            : new InvalidProvisioning({ message: `the body could not be read: ${e.message}` }),
        ),
      ),
    ),
  )
}

const decodeRequest = Schema.decodeUnknownEither(ProvisionRequest, {
  errors: "all",
  onExcessProperty: "error",
})

/** The device id of a parsed body, or why it is not one. */
const deviceIdOf = (value: unknown): Either.Either<string, InvalidProvisioning> =>
  Either.mapBoth(decodeRequest(value), {
    onLeft: (error) =>
      new InvalidProvisioning({
        message: ParseResult.ArrayFormatter.formatErrorSync(error)
          .map((i) => (i.path.length === 0 ? i.message : `${i.path.join(".")}: ${i.message}`))
          .join("; "),
      }),
    onRight: (body) => body.device_id,
  })

/** For the log: the device id the body names, if it names one (cut to a bounded length). */
const loggedDeviceId = (value: Either.Either<unknown, unknown>): string | null => {
  if (Either.isLeft(value)) return null
  const body = value.right
  if (typeof body !== "object" || body === null) return null
  const id = (body as Record<string, unknown>).device_id
  return typeof id === "string" ? id.slice(0, 128) : null
}

/**
 * One provision over `registry`: the device `parsed` names registered with the claim whose token
 * hashes to `hash`, and the claim's `remaining` lowered, in one commit; retried on a conflict.
 */
const registerWith = (registry: RegistryApi) => {
  let held: Held | undefined
  const unavailable = (e: RegistryUnavailable) =>
    new ProvisioningUnavailable({
      message: `${e.message}; nothing was registered, retry`,
      retryAfterSeconds: 1,
    })

  /** The rows at the registry's current revision. */
  const latest = Effect.gen(function* () {
    const revision = yield* registry.revision
    if (held !== undefined && held.revision === revision) return held
    if (held === undefined || held.revision > revision) held = hold(yield* registry.load)
    else catchUp(held, yield* registry.changesSince(held.revision))
    return held
  })

  const attempt = (hash: string, parsed: Either.Either<string, InvalidProvisioning | PayloadTooLarge>) =>
    Effect.gen(function* () {
      const state = yield* latest
      const claim = state.claims.get(hash)
      if (claim === undefined)
        return yield* new ClaimUnauthorized({
          message: "the bearer token is not a provisioning claim token",
          reason: "unknown",
        })
      const id = publicId(hash)
      if (claim.revoked)
        return yield* new ClaimUnauthorized({
          message: `provisioning claim ${id} was revoked`,
          reason: "revoked",
        })
      if (Date.now() >= claim.expiresAt)
        return yield* new ClaimUnauthorized({
          message: `provisioning claim ${id} expired at ${new Date(claim.expiresAt).toISOString()}`,
          reason: "expired",
        })
      if (claim.remaining <= 0)
        return yield* new ProvisioningConflict({
          message: `provisioning claim ${id} has registered all the devices it allows: ask the tenant for another claim`,
          reason: "used_up",
        })
      if (Either.isLeft(parsed)) return yield* parsed.left
      const deviceId = parsed.right
      if (state.devices.has(deviceId))
        return yield* new ProvisioningConflict({
          message:
            `device id ${JSON.stringify(deviceId)} is already registered: a device registers itself once ` +
            "(a device that lost its credential gets a new one from its tenant, through the admin API's rotate)",
          reason: "device_registered",
        })
      // Only the rows this commit touches or depends on; the rules are about them alone.
      const tenant = state.tenants.get(claim.tenantId)
      const deviceClass = state.classes.get(claim.className)
      const draft = new Draft({
        ...emptyState,
        revision: state.revision,
        tenants: new Map(tenant === undefined ? [] : [[tenant.id, tenant]]),
        classes: new Map(deviceClass === undefined ? [] : [[deviceClass.name, deviceClass]]),
        claims: new Map([[hash, claim]]),
      })
      const credential = newSecret()
      const next: RegClaim = { ...claim, remaining: claim.remaining - 1 }
      draft.devices.set(deviceId, {
        id: deviceId,
        tenantId: claim.tenantId,
        className: claim.className,
        enabled: true,
        credentials: [{ hash: hashSecret(credential), expiresAt: null }],
        source: "api",
      })
      draft.claims.set(hash, next)
      const problems = draft.check()
      if (problems.length > 0)
        return yield* new ProvisioningConflict({
          message: problems.map((p) => `${p.kind} ${p.id}: ${p.reason}`).join("; "),
          reason: "refused",
        })
      const revision = yield* registry.commit(draft.mutations(), state.revision)
      // Nobody wrote between the read and this commit: the held rows are this commit's.
      state.devices.add(deviceId)
      state.claims.set(hash, next)
      state.revision = revision
      return { deviceId, credential }
    })

  // This process's provisions take turns: they would only conflict with each other.
  const turn = Effect.unsafeMakeSemaphore(1)
  return (hash: string, parsed: Either.Either<string, InvalidProvisioning | PayloadTooLarge>) =>
    attempt(hash, parsed).pipe(
      turn.withPermits(1),
      Effect.retry({
        while: (e) => e instanceof RegistryConflict,
        schedule: Schedule.recurs(ATTEMPTS - 1).pipe(
          Schedule.addDelay(() => Duration.millis(Math.floor(Math.random() * 20))),
        ),
      }),
      Effect.catchTags({
        RegistryUnavailable: (e) => Effect.fail(unavailable(e)),
        RegistryConflict: () =>
          Effect.fail(
            new ProvisioningUnavailable({
              message: "other writers kept changing the device registry; nothing was registered, retry",
              retryAfterSeconds: 1,
            }),
          ),
      }),
    )
}

/**
 * The `provisioning` group's handlers for `api` (the ingress API: its identifier keys them). The
 * registry is the context's `Registry` (every process of the platform has it); without one (a
 * server over a fixed Tenancy) provisioning answers 503. Requires Metrics.
 */
export const layerWith = <ApiId extends string>(
  api: { readonly identifier: ApiId },
  limits: ProvisioningLimits = defaultLimits,
) =>
  HttpApiBuilder.group(HttpApi.make(api.identifier).add(ProvisioningApi), "provisioning", (handlers) =>
    Effect.gen(function* () {
      const registry = yield* Effect.serviceOption(Registry)
      const metrics = yield* Metrics
      const byToken = buckets(limits.perToken)
      const byAddress = buckets(limits.perAddress)
      const register = Option.match(registry, {
        onNone: () => () =>
          Effect.fail(
            new ProvisioningUnavailable({
              message: "this ingress has no device registry (a fixed configuration): provisioning is off",
              retryAfterSeconds: 60,
            }),
          ),
        onSome: registerWith,
      })

      const provision = Effect.fn("Ingress.provision")(function* (
        request: HttpServerRequest.HttpServerRequest,
      ) {
        const address = NodeHttpServerRequest.toIncomingMessage(request).socket?.remoteAddress ?? "unknown"
        const token = bearerOf(request.headers.authorization)
        const hash = token === "" ? null : hashSecret(token)
        // The body first (4 KiB at most, and Node reads it anyway to keep the connection), so that
        // every use is logged with the device id it names, throttled ones included.
        const body = yield* readJson(request)
        const deviceId = loggedDeviceId(body)
        const now = Date.now()

        const result: Either.Either<{ deviceId: string; credential: string }, Refusal> = yield* Effect.gen(
          function* () {
            const addressWait = byAddress(address, now)
            if (addressWait > 0)
              return yield* new ProvisioningThrottled({
                message: `too many provisioning requests from ${address}: retry later`,
                retryAfterSeconds: retryAfterSeconds(addressWait),
              })
            if (hash === null)
              return yield* new ClaimUnauthorized({
                message: "missing Authorization: Bearer <claim token>",
                reason: "missing",
              })
            const tokenWait = byToken(hash, now)
            if (tokenWait > 0)
              return yield* new ProvisioningThrottled({
                message: "too many provisioning requests with this claim token: retry later",
                retryAfterSeconds: retryAfterSeconds(tokenWait),
              })
            return yield* register(hash, Either.flatMap(body, deviceIdOf))
          },
        ).pipe(Effect.either)

        const outcome = Either.isRight(result) ? "provisioned" : outcomeOf(result.left)
        metrics.provisioning.labels({ outcome }).inc()
        const log = Either.isRight(result)
          ? Effect.logInfo(`device provisioned by claim: ${result.right.deviceId}`)
          : Effect.logWarning(`provisioning refused (${outcome}): ${result.left.message}`)
        yield* log.pipe(
          Effect.annotateLogs({
            claim: hash === null ? null : publicId(hash),
            deviceId,
            remoteAddress: address,
            outcome,
          }),
        )
        return Either.isRight(result)
          ? HttpServerResponse.unsafeJson(
              { device_id: result.right.deviceId, credential: result.right.credential },
              { status: 201, headers: { "cache-control": "no-store" } },
            )
          : answer(result.left)
      })

      return handlers.handleRaw("provision", ({ request }) => provision(request))
    }),
  ).pipe(Layer.provide(claimAuthenticationLayer))
