/**
 * The tenant's dead letters, newest first: messages that failed their device class, with the
 * reason and the payload as received. Filtered by device (exact id) and by a word of the reason;
 * "Load more" follows the server's cursor.
 */
import { useEffect, useState } from "preact/hooks"
import { ApiError, query, request } from "../api"
import { ErrorNote, Page } from "../components/Common"
import { DeadLetterTable } from "../components/DeadLetterTable"
import { navigate, useLocation } from "../router"
import type { DeadLetter, DeadLetterPage } from "../types"

const PAGE = 100

export const DeadLettersPage = () => {
  const location = useLocation()
  const deviceId = location.searchParams.get("deviceId") ?? ""
  const reason = location.searchParams.get("reason") ?? ""
  const [form, setForm] = useState({ deviceId, reason })
  const [rows, setRows] = useState<ReadonlyArray<DeadLetter>>([])
  const [next, setNext] = useState<string | undefined>(undefined)
  const [error, setError] = useState<ApiError | undefined>(undefined)
  const [loading, setLoading] = useState(false)

  const load = async (cursor: string | undefined, append: boolean) => {
    setLoading(true)
    setError(undefined)
    try {
      const page = await request<DeadLetterPage>(
        "GET",
        `/v1/dead-letters${query({ limit: PAGE, cursor, deviceId, reason })}`,
      )
      // A server without these filters yet sends every dead letter: keep the asked ones only.
      const wanted = page.deadLetters.filter(
        (d) =>
          (deviceId === "" || d.deviceId === deviceId) &&
          (reason === "" || d.reason.toLowerCase().includes(reason.toLowerCase())),
      )
      setRows((before) => (append ? [...before, ...wanted] : wanted))
      setNext(page.nextCursor)
    } catch (e) {
      setError(e instanceof ApiError ? e : new ApiError(0, "Error", String(e)))
    } finally {
      setLoading(false)
    }
  }

  useEffect(() => {
    setForm({ deviceId, reason })
    void load(undefined, false)
  }, [deviceId, reason])

  return (
    <Page title="Dead letters">
      <form
        class="filters"
        aria-label="Filters"
        onSubmit={(e) => {
          e.preventDefault()
          // The same filters again: ask again (newer dead letters may have come).
          if (form.deviceId.trim() === deviceId && form.reason.trim() === reason)
            return void load(undefined, false)
          navigate(
            `/dead-letters${query({ deviceId: form.deviceId.trim(), reason: form.reason.trim() })}`,
            true,
          )
        }}
      >
        <label>
          Device id (exact)
          <input
            name="deviceId"
            value={form.deviceId}
            onInput={(e) => setForm({ ...form, deviceId: e.currentTarget.value })}
          />
        </label>
        <label>
          Reason contains
          <input
            name="reason"
            value={form.reason}
            onInput={(e) => setForm({ ...form, reason: e.currentTarget.value })}
          />
        </label>
        <button type="submit">Filter</button>
      </form>
      <ErrorNote error={error} retry={() => void load(undefined, false)} />
      {loading && rows.length === 0 ? (
        <p class="muted">Loading…</p>
      ) : (
        <DeadLetterTable rows={rows} showDevice />
      )}
      {next !== undefined && (
        <button type="button" disabled={loading} onClick={() => void load(next, true)}>
          {loading ? "Loading…" : "Load more"}
        </button>
      )}
    </Page>
  )
}
