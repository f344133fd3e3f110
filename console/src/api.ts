/**
 * The console's only way to the platform: the same REST API every client uses, with the key the
 * person signed in with. The key lives in sessionStorage, so it is gone when the tab closes and
 * never shared between tabs or written to disk by us.
 */

const KEY = "sluice.session"

/** Who signed in: a tenant's key (admin or read) or an operator key. */
export interface Session {
  readonly key: string
  readonly kind: "tenant" | "operator"
}

export const loadSession = (): Session | null => {
  try {
    const raw = sessionStorage.getItem(KEY)
    if (raw === null) return null
    const parsed = JSON.parse(raw) as Partial<Session>
    return typeof parsed.key === "string" && (parsed.kind === "tenant" || parsed.kind === "operator")
      ? { key: parsed.key, kind: parsed.kind }
      : null
  } catch {
    return null
  }
}

export const saveSession = (session: Session | null) => {
  if (session === null) sessionStorage.removeItem(KEY)
  else sessionStorage.setItem(KEY, JSON.stringify(session))
}

/** A refused or failed request, with a message a person can act on. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly tag: string,
    message: string,
    readonly problems: ReadonlyArray<{ field: string; reason: string }> = [],
  ) {
    super(message)
  }
}

/** What to tell a person for each kind of refusal; the server's own message is kept where it helps. */
const explain = (status: number, tag: string, message: string): string => {
  if (status === 0)
    return "Sluice did not answer: check that the platform is running and the network is up, then retry."
  if (status === 401)
    return tag === "Unauthorized" && /operator/.test(message)
      ? `This page needs a tenant's key: ${message}.`
      : "Your API key was refused: it is wrong, or it was revoked. Sign in again with a valid key."
  if (status === 403) return `Not allowed with this key: ${message}.`
  if (tag === "StorageUnavailable" || (status === 503 && /storage|clickhouse/i.test(message)))
    return "Storage is unavailable right now (ClickHouse did not answer). Nothing is lost: readings wait in the stream. Retry in a moment."
  if (status === 503) return `The platform is busy or unavailable: ${message || "retry in a moment"}.`
  if (tag === "DeviceNotFound") return "No such device in this tenant (it may have been deleted)."
  if (status === 429) return "Too many requests: wait a moment and retry."
  return message || `The request failed (HTTP ${status}).`
}

/** Called with every 401 from a key that used to work, so the app can sign out and say why. */
let onRefused: (message: string) => void = () => {}
export const setOnRefused = (handler: (message: string) => void) => {
  onRefused = handler
}

/** A JSON request to the API with the session's key; throws ApiError with a person-readable message. */
export const request = async <A>(
  method: "GET" | "POST" | "DELETE",
  path: string,
  options: { readonly body?: unknown; readonly key?: string } = {},
): Promise<A> => {
  const key = options.key ?? loadSession()?.key ?? ""
  let response: Response
  try {
    response = await fetch(path, {
      method,
      headers: {
        authorization: `Bearer ${key}`,
        ...(options.body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
    })
  } catch {
    throw new ApiError(0, "NetworkError", explain(0, "", ""))
  }
  const text = await response.text()
  let body: unknown
  try {
    body = text === "" ? undefined : JSON.parse(text)
  } catch {
    body = undefined
  }
  if (response.ok) return body as A
  const fields = (body ?? {}) as {
    _tag?: string
    message?: string
    problems?: Array<{ field: string; reason: string }>
  }
  const tag = fields._tag ?? ""
  const error = new ApiError(
    response.status,
    tag,
    explain(response.status, tag, fields.message ?? ""),
    fields.problems,
  )
  // A key given explicitly is being tried (sign-in): its refusal is that form's to show.
  if (response.status === 401 && options.key === undefined && !/operator/.test(fields.message ?? ""))
    onRefused(error.message)
  throw error
}

/** A query string from the defined, non-empty entries. */
export const query = (params: Record<string, string | number | undefined | null>): string => {
  const search = new URLSearchParams()
  for (const [k, v] of Object.entries(params))
    if (v !== undefined && v !== null && v !== "") search.set(k, String(v))
  const s = search.toString()
  return s === "" ? "" : `?${s}`
}

/** The live feed's WebSocket URL: browsers cannot set headers on a WebSocket, so the key rides in the query. */
export const liveUrl = (deviceId: string): string => {
  const scheme = location.protocol === "https:" ? "wss" : "ws"
  return `${scheme}://${location.host}/v1/live${query({ device: deviceId, api_key: loadSession()?.key })}`
}
