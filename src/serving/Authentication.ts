/**
 * Who is calling. Every API request carries an API key (`Authorization: Bearer <key>` or
 * `X-Api-Key`), and the key has a role (`Tenancy.principal`):
 *
 * - `operator`: manages tenants and their keys; belongs to no tenant and reads no tenant's data.
 * - `admin`: a tenant's key; reads the tenant's data and manages its devices, classes and keys.
 * - `read`: a tenant's key; reads the tenant's data only.
 *
 * Two middlewares:
 * - `Authentication` (the data endpoints: devices, telemetry, dead letters; `LiveAuthentication`
 *   for the WebSocket) provides `CurrentTenant`: the tenant of an admin or read key, the only
 *   tenant the request can see; no handler takes a tenant from a path, a query or a body. A
 *   missing or unknown key is 401, and so is an operator key (these endpoints' contract has one
 *   refusal: no key that opens a tenant), but with its own message saying why.
 * - `AdminAuthentication` (the admin groups) provides `CurrentPrincipal`; each handler then asks
 *   for the role it needs (`requireOperator`, `requireTenantAdmin`, …): a valid key of the wrong
 *   role is 403, with a message naming the role needed.
 */
import { HttpApiMiddleware, HttpApiSecurity, HttpServerRequest } from "@effect/platform"
import { Context, Effect, Layer, Option } from "effect"
import { type Principal, Tenancy, type TenancyApi, type Tenant } from "../tenancy/Tenancy.js"
import { Forbidden, TenantNotFound, Unauthorized } from "./ApiError.js"

/** The tenant whose API key (admin or read) authenticated the current request. */
export class CurrentTenant extends Context.Tag("sluice/serving/CurrentTenant")<CurrentTenant, Tenant>() {}

/** Who the current request's API key is: an operator, or a tenant's admin or reader. */
export class CurrentPrincipal extends Context.Tag("sluice/serving/CurrentPrincipal")<
  CurrentPrincipal,
  Principal
>() {}

/** `Authorization: Bearer <api key>`. */
const bearer = HttpApiSecurity.bearer
/** `X-Api-Key: <api key>`, for clients that cannot set Authorization. */
const apiKeyHeader = HttpApiSecurity.apiKey({ in: "header", key: "X-Api-Key" })
/**
 * `?api_key=<api key>`: browsers cannot set headers on a WebSocket, so the live feed (and only the
 * live feed: keys in URLs end up in proxy logs) also takes the key from the query.
 */
const apiKeyQuery = HttpApiSecurity.apiKey({ in: "query", key: "api_key" })

/** Tenant authentication of the REST data endpoints: bearer or X-Api-Key, an admin or read key. */
export class Authentication extends HttpApiMiddleware.Tag<Authentication>()("sluice/serving/Authentication", {
  provides: CurrentTenant,
  failure: Unauthorized,
  security: { bearer, apiKey: apiKeyHeader },
}) {}

/** Tenant authentication of the WebSocket live feed: bearer, X-Api-Key or `?api_key=`. */
export class LiveAuthentication extends HttpApiMiddleware.Tag<LiveAuthentication>()(
  "sluice/serving/LiveAuthentication",
  {
    provides: CurrentTenant,
    failure: Unauthorized,
    security: { bearer, apiKey: apiKeyHeader, apiKeyQuery },
  },
) {}

/** Authentication of the admin endpoints: any valid key (bearer or X-Api-Key), with its role. */
export class AdminAuthentication extends HttpApiMiddleware.Tag<AdminAuthentication>()(
  "sluice/serving/AdminAuthentication",
  {
    provides: CurrentPrincipal,
    failure: Unauthorized,
    security: { bearer, apiKey: apiKeyHeader },
  },
) {}

const unauthorized = new Unauthorized({ message: "missing or invalid API key" })

const operatorReadsNoDataMessage =
  "an operator key manages tenants and their keys and reads no tenant's data: use an admin or read key of the tenant"

/**
 * An operator key at a data endpoint: 401, the status these endpoints have always had for a key
 * that opens no tenant (so their contract is unchanged), with the reason in the message.
 */
export const operatorHasNoData = new Unauthorized({ message: operatorReadsNoDataMessage })

/** An operator key at an admin endpoint that reads a tenant's rows: the key is valid, the role is not. */
const operatorReadsNoData = new Forbidden({ message: operatorReadsNoDataMessage })

/**
 * The key a request carries: `Authorization: Bearer`, else `X-Api-Key`, else (the live feed only)
 * `?api_key=`. Read from the request whichever security scheme HttpApi is trying: it tries them
 * in turn and answers with the last one's failure, so a scheme judging only its own header would
 * turn the 403 of an operator key sent as a bearer into the 401 of a missing X-Api-Key.
 */
const keyOf = (request: HttpServerRequest.HttpServerRequest, query: boolean): string => {
  const authorization = request.headers.authorization ?? ""
  if (/^bearer /i.test(authorization)) return authorization.slice("bearer ".length).trim()
  const header = request.headers["x-api-key"]
  if (header !== undefined && header !== "") return header
  if (!query) return ""
  const param = new URL(request.url, "http://localhost").searchParams.get("api_key")
  return param ?? ""
}

const principalOf =
  (tenancy: TenancyApi, query = false) =>
  (_scheme: unknown): Effect.Effect<Principal, Unauthorized, HttpServerRequest.HttpServerRequest> =>
    Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
      const key = keyOf(request, query)
      return key === ""
        ? Effect.fail(unauthorized)
        : Option.match(tenancy.principal(key), {
            onNone: () => Effect.fail(unauthorized),
            onSome: Effect.succeed,
          })
    })

const tenantOf = (tenancy: TenancyApi, query = false) => {
  const principal = principalOf(tenancy, query)
  return (scheme: unknown) =>
    Effect.flatMap(principal(scheme), (p) =>
      p.tenantId === null ? Effect.fail(operatorHasNoData) : Effect.succeed<Tenant>({ tenantId: p.tenantId }),
    )
}

/** The three authentication middlewares, checking keys against Tenancy. */
export const layer = Layer.mergeAll(
  Layer.effect(
    Authentication,
    Effect.map(Tenancy, (tenancy) => {
      const authenticate = tenantOf(tenancy)
      return Authentication.of({ bearer: authenticate, apiKey: authenticate })
    }),
  ),
  Layer.effect(
    LiveAuthentication,
    Effect.map(Tenancy, (tenancy) => {
      const authenticate = tenantOf(tenancy, true)
      return LiveAuthentication.of({ bearer: authenticate, apiKey: authenticate, apiKeyQuery: authenticate })
    }),
  ),
  Layer.effect(
    AdminAuthentication,
    Effect.map(Tenancy, (tenancy) => {
      const authenticate = principalOf(tenancy)
      return AdminAuthentication.of({ bearer: authenticate, apiKey: authenticate })
    }),
  ),
)

// What each admin endpoint needs of the key. Each refusal says what the key is and what it would need.

/** A read key at a write. */
export const readOnly = new Forbidden({
  message: "this key can only read: writes need an admin key of the tenant",
})

const operatorHasNoTenant = new Forbidden({
  message:
    "an operator key manages tenants and their keys; a tenant's devices and device classes are managed with an admin key of that tenant",
})

const operatorsOnly = new Forbidden({ message: "managing tenants needs an operator key" })

/** Tenant management: operator keys only. */
export const requireOperator: Effect.Effect<void, Forbidden, CurrentPrincipal> = Effect.flatMap(
  CurrentPrincipal,
  (p) => (p.role === "operator" ? Effect.void : Effect.fail(operatorsOnly)),
)

/** A tenant's writes (devices, classes): the tenant of an admin key. */
export const requireTenantAdmin: Effect.Effect<string, Forbidden, CurrentPrincipal> = Effect.flatMap(
  CurrentPrincipal,
  (p) =>
    p.role === "admin" && p.tenantId !== null
      ? Effect.succeed(p.tenantId)
      : Effect.fail(p.role === "read" ? readOnly : operatorHasNoTenant),
)

/** A tenant's reads at the admin endpoints (device classes): the tenant of an admin or read key. */
export const requireTenantReader: Effect.Effect<string, Forbidden, CurrentPrincipal> = Effect.flatMap(
  CurrentPrincipal,
  (p) => (p.tenantId !== null ? Effect.succeed(p.tenantId) : Effect.fail(operatorReadsNoData)),
)

/**
 * A tenant's keys (`/v1/tenants/{tenantId}/keys`): an operator key, or an admin key of that very
 * tenant. A tenant key naming another tenant is answered as if that tenant did not exist (it
 * learns nothing of other tenants); a read key of the tenant is refused, listing included.
 */
export const requireKeyManager = (
  tenantId: string,
): Effect.Effect<void, Forbidden | TenantNotFound, CurrentPrincipal> =>
  Effect.flatMap(
    CurrentPrincipal,
    (p): Effect.Effect<void, Forbidden | TenantNotFound> =>
      p.role === "operator"
        ? Effect.void
        : p.tenantId !== tenantId
          ? Effect.fail(TenantNotFound.instance)
          : p.role === "admin"
            ? Effect.void
            : Effect.fail(
                new Forbidden({ message: "this key can only read: managing keys needs an admin key" }),
              ),
  )
