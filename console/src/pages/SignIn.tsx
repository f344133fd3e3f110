/**
 * Sign-in with an API key. The key is checked against the API before it is kept (in
 * sessionStorage, for this tab only): a wrong key is refused here, with the reason.
 */
import { useState } from "preact/hooks"
import { ApiError, request, type Session } from "../api"
import { ErrorNote } from "../components/Common"

/** Which kind of key this is: a tenant's key reads its classes; an operator key lists tenants. */
const identify = async (key: string): Promise<Session> => {
  try {
    await request("GET", "/v1/device-classes", { key })
    return { key, kind: "tenant" }
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 403) throw error
    await request("GET", "/v1/tenants", { key })
    return { key, kind: "operator" }
  }
}

export const SignIn = (props: { notice: string | undefined; onSignedIn: (session: Session) => void }) => {
  const [key, setKey] = useState("")
  const [error, setError] = useState<ApiError | undefined>(undefined)
  const [busy, setBusy] = useState(false)
  return (
    <main id="main" class="signin">
      <form
        aria-labelledby="signin-title"
        onSubmit={(e) => {
          e.preventDefault()
          const trimmed = key.trim()
          if (trimmed === "") {
            setError(
              new ApiError(
                400,
                "Empty",
                "Enter an API key: a tenant's admin or read key, or an operator key.",
              ),
            )
            return
          }
          setBusy(true)
          setError(undefined)
          identify(trimmed).then(
            (session) => props.onSignedIn(session),
            (err: unknown) => {
              setBusy(false)
              setError(
                err instanceof ApiError && err.status === 401
                  ? new ApiError(
                      401,
                      "Unauthorized",
                      "This API key was refused: it is wrong, or it was revoked.",
                    )
                  : err instanceof ApiError
                    ? err
                    : new ApiError(0, "Error", String(err)),
              )
            },
          )
        }}
      >
        <h1 id="signin-title">Sign in to Sluice</h1>
        {props.notice && (
          <p class="notice" role="status">
            {props.notice}
          </p>
        )}
        <label for="api-key">API key</label>
        <input
          id="api-key"
          name="api-key"
          type="password"
          autoComplete="off"
          spellcheck={false}
          value={key}
          onInput={(e) => setKey(e.currentTarget.value)}
          aria-describedby="api-key-help"
          // biome-ignore lint/a11y/noAutofocus: the sign-in form is the whole page
          autoFocus
        />
        <p id="api-key-help" class="muted">
          A tenant's admin or read key, or an operator key. It is kept for this browser tab only and forgotten
          when the tab closes or you sign out.
        </p>
        <ErrorNote error={error} />
        <button type="submit" class="primary" disabled={busy}>
          {busy ? "Checking…" : "Sign in"}
        </button>
      </form>
    </main>
  )
}
