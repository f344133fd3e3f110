/**
 * Who is calling: every API request carries a tenant API key, and the tenant it belongs to is the
 * only tenant the request can see. Handlers read it from `CurrentTenant`; no handler takes a
 * tenant from a path, a query or a body.
 */
import { HttpApiMiddleware, HttpApiSecurity } from "@effect/platform"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { Tenancy, type TenancyApi, type Tenant } from "../tenancy/Tenancy.js"
import { Unauthorized } from "./ApiError.js"

/** The tenant whose API key authenticated the current request. */
export class CurrentTenant extends Context.Tag("sluice/serving/CurrentTenant")<CurrentTenant, Tenant>() {}

/** `Authorization: Bearer <api key>`. */
const bearer = HttpApiSecurity.bearer
/** `X-Api-Key: <api key>`, for clients that cannot set Authorization. */
const apiKeyHeader = HttpApiSecurity.apiKey({ in: "header", key: "X-Api-Key" })
/**
 * `?api_key=<api key>`: browsers cannot set headers on a WebSocket, so the live feed (and only the
 * live feed: keys in URLs end up in proxy logs) also takes the key from the query.
 */
const apiKeyQuery = HttpApiSecurity.apiKey({ in: "query", key: "api_key" })

/** Tenant authentication of the REST endpoints: bearer or X-Api-Key. */
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

const unauthorized = new Unauthorized({ message: "missing or invalid API key" })

const authenticateWith = (tenancy: TenancyApi) => (key: Redacted.Redacted) => {
  const value = Redacted.value(key)
  return value === ""
    ? Effect.fail(unauthorized)
    : Option.match(tenancy.authenticateApiKey(value), {
        onNone: () => Effect.fail(unauthorized),
        onSome: Effect.succeed,
      })
}

/** Both authentication middlewares, checking keys against Tenancy. */
export const layer = Layer.mergeAll(
  Layer.effect(
    Authentication,
    Effect.map(Tenancy, (tenancy) => {
      const authenticate = authenticateWith(tenancy)
      return Authentication.of({ bearer: authenticate, apiKey: authenticate })
    }),
  ),
  Layer.effect(
    LiveAuthentication,
    Effect.map(Tenancy, (tenancy) => {
      const authenticate = authenticateWith(tenancy)
      return LiveAuthentication.of({ bearer: authenticate, apiKey: authenticate, apiKeyQuery: authenticate })
    }),
  ),
)
