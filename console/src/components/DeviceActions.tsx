/**
 * A device's administration (an admin key of its tenant): disable and enable, and rotate its
 * credential with a grace period. A new credential is shown once, here, and never again.
 */
import { useState } from "preact/hooks"
import { ApiError, request } from "../api"
import type { DeviceState } from "../types"
import { Copyable, ErrorNote } from "./Common"

export const DeviceActions = (props: {
  readonly deviceId: string
  readonly enabled: boolean | undefined
  readonly onChanged: (state: DeviceState) => void
}) => {
  const [error, setError] = useState<ApiError | undefined>(undefined)
  const [busy, setBusy] = useState(false)
  const [grace, setGrace] = useState("3600")
  const [rotated, setRotated] = useState<
    { credential: string; previous_valid_until: number | null } | undefined
  >()
  const path = `/v1/devices/${encodeURIComponent(props.deviceId)}`

  const run = async <A,>(action: () => Promise<A>, done: (a: A) => void) => {
    setBusy(true)
    setError(undefined)
    try {
      done(await action())
    } catch (e) {
      setError(e instanceof ApiError ? e : new ApiError(0, "Error", String(e)))
    } finally {
      setBusy(false)
    }
  }

  return (
    <section aria-labelledby="admin-title" class="card">
      <h2 id="admin-title">Administration</h2>
      <div class="actions">
        {props.enabled !== false && (
          <button
            type="button"
            disabled={busy}
            onClick={() => run(() => request<DeviceState>("POST", `${path}/disable`), props.onChanged)}
          >
            Disable
          </button>
        )}
        {props.enabled !== true && (
          <button
            type="button"
            disabled={busy}
            onClick={() => run(() => request<DeviceState>("POST", `${path}/enable`), props.onChanged)}
          >
            Enable
          </button>
        )}
      </div>
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault()
          const seconds = Number(grace)
          if (!/^\d+$/.test(grace.trim()) || seconds > 30 * 86_400) {
            setError(
              new ApiError(
                400,
                "InvalidBody",
                "Grace must be a whole number of seconds from 0 to 2592000 (30 days).",
              ),
            )
            return
          }
          run(
            () =>
              request<{ credential: string; previous_valid_until: number | null }>("POST", `${path}/rotate`, {
                body: { grace_seconds: seconds },
              }),
            setRotated,
          )
        }}
      >
        <label>
          Old credential keeps working for (seconds)
          <input
            type="number"
            min={0}
            max={2_592_000}
            value={grace}
            onInput={(e) => setGrace(e.currentTarget.value)}
          />
        </label>
        <button type="submit" disabled={busy}>
          Rotate credential
        </button>
      </form>
      {rotated && (
        <div class="secret" role="status">
          <p>
            New credential, shown this once: store it on the device now.{" "}
            {rotated.previous_valid_until === null
              ? "The old one stopped working."
              : `The old one works until ${new Date(rotated.previous_valid_until).toLocaleString()}.`}
          </p>
          <Copyable label="Credential" value={rotated.credential} testId="rotated-credential" />
        </div>
      )}
      <ErrorNote error={error} />
    </section>
  )
}
