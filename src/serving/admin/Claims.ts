/**
 * Provisioning claims in the admin API: a tenant admin key makes a claim token that lets up to
 * `count` devices register themselves in one device class until it expires (or is revoked); each
 * device then calls `POST /v1/provision` on the ingress listener (`src/ingress/Provisioning.ts`)
 * with the token and its own id, and gets its own credential.
 *
 * The token is made here (`newSecret`, 24 random bytes), returned once in the answer that creates
 * it and stored only as its SHA-256 hash (the registry row's id, `RegClaim`); the claim's public id
 * is the first 12 hex digits of that hash, as an API key's is.
 *
 * The group and its handlers live here, apart from `Api.ts` and `Http.ts`: the handlers are built
 * against an API of the serving API's identifier holding only this group (as the ingest handlers
 * are), so this file need not import the serving API that imports it.
 */
import {
  HttpApi,
  HttpApiBuilder,
  HttpApiEndpoint,
  HttpApiGroup,
  HttpApiSchema,
  OpenApi,
} from "@effect/platform"
import { Effect, Schema } from "effect"
import { DeviceConfig } from "../../tenancy/PlatformConfig.js"
import type { RegClaim } from "../../tenancy/Registry.js"
import { hashSecret, newSecret, publicId } from "../../tenancy/Secrets.js"
import { BodyTooLarge, Conflict, Forbidden, InvalidBody, RegistryUnavailable } from "../ApiError.js"
import { AdminAuthentication, requireTenantAdmin, requireTenantReader } from "../Authentication.js"
import * as Body from "./Body.js"
import type { RegistryAccess } from "./Writes.js"

/** Most devices one claim may register. */
export const MAX_COUNT = 1_000_000
/** A claim lives from a minute to a year. */
export const MIN_EXPIRES_SECONDS = 60
export const MAX_EXPIRES_SECONDS = 365 * 24 * 3600

/** No claim with this id in the tenant (another tenant's looks alike). */
export class ClaimNotFound extends Schema.TaggedError<ClaimNotFound>()(
  "ClaimNotFound",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 404, description: "No such provisioning claim in this tenant" }),
) {
  static readonly instance = new ClaimNotFound({ message: "provisioning claim not found" })
}

export const CreateClaim = Schema.Struct({
  name: Schema.String.pipe(
    Schema.minLength(1, { message: () => "must not be empty" }),
    Schema.maxLength(100, { message: () => "must be at most 100 characters" }),
  ).annotations({ description: "A label for people, e.g. the production batch the token ships with" }),
  class: DeviceConfig.fields.id.annotations({
    description:
      "The device class of every device the claim registers: a shared class or one of the tenant's own",
  }),
  count: Schema.Int.pipe(
    Schema.between(1, MAX_COUNT, {
      message: () => `must be a whole number of devices from 1 to ${MAX_COUNT}`,
    }),
  ).annotations({ description: `How many devices the token may register, 1 to ${MAX_COUNT}` }),
  expires_in_seconds: Schema.Int.pipe(
    Schema.between(MIN_EXPIRES_SECONDS, MAX_EXPIRES_SECONDS, {
      message: () =>
        `must be a whole number of seconds from ${MIN_EXPIRES_SECONDS} to ${MAX_EXPIRES_SECONDS} (one year)`,
    }),
  ).annotations({ description: "How long from now the token works, seconds: 60 to 31,536,000 (one year)" }),
}).annotations({ identifier: "CreateProvisioningClaim" })

const expiresAt = Schema.Number.annotations({ description: "When the token stops working, epoch ms" })

const CreatedClaim = Schema.Struct({
  token: Schema.String.annotations({
    description:
      "The claim token devices present (`Authorization: Bearer <token>` at `POST /v1/provision` on the " +
      "ingress listener): shown this once, stored only as a hash",
  }),
  id: Schema.String.annotations({
    description: "The first 12 hex digits of the token's SHA-256: names the claim, never reveals the token",
  }),
  name: Schema.String,
  class: Schema.String,
  count: Schema.Number,
  expires_at: expiresAt,
}).annotations({ identifier: "CreatedProvisioningClaim" })

const Claim = Schema.Struct({
  id: Schema.String.annotations({ description: "The first 12 hex digits of the token's SHA-256" }),
  name: Schema.String,
  class: Schema.String,
  remaining: Schema.Number.annotations({ description: "How many more devices the token may register" }),
  expires_at: expiresAt,
  revoked: Schema.Boolean,
}).annotations({ identifier: "ProvisioningClaim" })

const ClaimPath = Schema.Struct({ claimId: Schema.String })

export class ClaimsApi extends HttpApiGroup.make("provisioningClaims")
  .add(
    HttpApiEndpoint.post("create", "/v1/provisioning-claims")
      .setPayload(CreateClaim)
      .addSuccess(CreatedClaim, { status: 201 })
      .addError(Conflict)
      .addError(BodyTooLarge)
      .addError(InvalidBody)
      .annotate(
        OpenApi.Description,
        "Makes a provisioning claim of the key's tenant: a token, returned this once, with which up to `count` " +
          "devices register themselves in `class` until `expires_at`. An admin key of the tenant.",
      ),
  )
  .add(
    HttpApiEndpoint.get("list", "/v1/provisioning-claims")
      .addSuccess(Schema.Struct({ claims: Schema.Array(Claim) }))
      .annotate(
        OpenApi.Description,
        "The tenant's claims, expired and revoked ones included: id, name, class, remaining, expiry, never the " +
          "token. An admin or read key of the tenant.",
      ),
  )
  .add(
    HttpApiEndpoint.post("revoke", "/v1/provisioning-claims/:claimId/revoke")
      .setPath(ClaimPath)
      .addSuccess(Claim)
      .addError(Conflict)
      .addError(ClaimNotFound)
      .annotate(
        OpenApi.Description,
        "Revokes a claim: its token registers no more devices, from the next request on (ingress reads claims " +
          "from the registry at each use). Devices it registered keep their credentials. Revoking twice is no " +
          "error. An admin key of the tenant.",
      ),
  )
  .addError(Forbidden)
  .addError(RegistryUnavailable)
  .middleware(AdminAuthentication)
  .annotate(OpenApi.Title, "Provisioning claims")
  .annotate(
    OpenApi.Description,
    "Fleet provisioning: a claim token ships with devices (in their firmware or on their label); each device " +
      "registers itself once with it at `POST /v1/provision` on the ingress listener (port 8081) and receives " +
      "its own credential. A claim is scoped to its tenant and one device class, registers at most its count of " +
      "devices, expires, and may be revoked. Tokens are shown once and stored only as SHA-256 hashes.",
  ) {}

const view = (c: RegClaim) => ({
  id: publicId(c.hash),
  name: c.name,
  class: c.className,
  remaining: c.remaining,
  expires_at: c.expiresAt,
  revoked: c.revoked,
})

/**
 * The handlers of the `provisioningClaims` group for `api` (the serving API: its identifier keys
 * the handlers), over the admin handlers' registry access `access`.
 */
export const layerFor = <ApiId extends string, R>(
  api: { readonly identifier: ApiId },
  access: Effect.Effect<RegistryAccess, never, R>,
) =>
  HttpApiBuilder.group(HttpApi.make(api.identifier).add(ClaimsApi), "provisioningClaims", (handlers) =>
    Effect.gen(function* () {
      const registry = yield* access
      return handlers
        .handleRaw(
          "create",
          Effect.fn("Admin.claims.create")(function* ({ request }) {
            const tenantId = yield* requireTenantAdmin
            const body = yield* Body.json(CreateClaim, request)
            return yield* registry.write((draft) =>
              Effect.gen(function* () {
                const c = draft.classes.get(body.class)
                if (c === undefined || (c.tenantId !== null && c.tenantId !== tenantId))
                  return yield* Effect.fail(
                    Body.invalid([
                      { field: "class", reason: `unknown device class ${JSON.stringify(body.class)}` },
                    ]),
                  )
                const token = newSecret()
                const hash = hashSecret(token)
                const expires = Date.now() + body.expires_in_seconds * 1000
                draft.claims.set(hash, {
                  hash,
                  tenantId,
                  className: body.class,
                  remaining: body.count,
                  expiresAt: expires,
                  revoked: false,
                  name: body.name,
                  source: "api",
                })
                return {
                  token,
                  id: publicId(hash),
                  name: body.name,
                  class: body.class,
                  count: body.count,
                  expires_at: expires,
                }
              }),
            )
          }),
        )
        .handle(
          "list",
          Effect.fn("Admin.claims.list")(function* () {
            const tenantId = yield* requireTenantReader
            const state = yield* registry.latest
            const claims = [...state.claims.values()]
              .filter((c) => c.tenantId === tenantId)
              .sort((a, b) => a.expiresAt - b.expiresAt || (a.hash < b.hash ? -1 : 1))
              .map(view)
            return { claims }
          }),
        )
        .handle(
          "revoke",
          Effect.fn("Admin.claims.revoke")(function* ({ path }) {
            const tenantId = yield* requireTenantAdmin
            return yield* registry.write((draft) =>
              Effect.gen(function* () {
                const matches = [...draft.claims.values()].filter(
                  (c) => c.tenantId === tenantId && publicId(c.hash) === path.claimId,
                )
                if (matches.length === 0) return yield* Effect.fail(ClaimNotFound.instance)
                if (matches.length > 1)
                  return yield* Effect.fail(
                    new Conflict({
                      message: `${matches.length} claims of the tenant have the id ${path.claimId}`,
                    }),
                  )
                const claim = matches[0]!
                const next = claim.revoked ? claim : { ...claim, revoked: true }
                draft.claims.set(claim.hash, next)
                return view(next)
              }),
            )
          }),
        )
    }),
  )
