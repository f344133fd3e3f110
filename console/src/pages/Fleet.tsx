/**
 * The fleet: the tenant's devices, filtered and paginated by the server (keyset pages of 100, so
 * a tenant of 100,000 devices costs one page per view). The filters live in the URL, so a
 * filtered view can be reloaded, bookmarked and shared.
 */
import { useEffect, useState } from "preact/hooks"
import { query, request } from "../api"
import { ErrorNote, Page, useAsync } from "../components/Common"
import { ago, dateTime } from "../format"
import { Link, navigate, useLocation } from "../router"
import type { ClassSummary, DevicePage, DeviceRow } from "../types"

const PAGE = 100
const DEFAULT_ONLINE_WINDOW_MS = 300_000

/**
 * A server without pagination (before `total` and `nextCursor`) sends every device: filter and
 * page here instead, so the page stays usable against it.
 */
const pageLocally = (
  answer: DevicePage,
  filters: { prefix: string; deviceClass: string; status: string },
  offset: number,
): DevicePage & { offset: number } => {
  const window = answer.onlineWindowMs ?? DEFAULT_ONLINE_WINDOW_MS
  const now = Date.now()
  const online = (d: DeviceRow) => d.online ?? (d.lastSeen !== null && now - d.lastSeen <= window)
  const matching = answer.devices
    .filter((d) => d.deviceId.startsWith(filters.prefix))
    .filter((d) => filters.deviceClass === "" || d.deviceClass === filters.deviceClass)
    .sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0))
  const byStatus = matching.filter(
    (d) => filters.status === "" || online(d) === (filters.status === "online"),
  )
  const devices = byStatus.slice(offset, offset + PAGE).map((d) => ({ ...d, online: online(d) }))
  return {
    devices,
    total: matching.length,
    onlineWindowMs: window,
    offset,
    ...(offset + PAGE < byStatus.length ? { nextCursor: String(offset + PAGE) } : {}),
  }
}

export const FleetPage = () => {
  const location = useLocation()
  const params = location.searchParams
  const prefix = params.get("prefix") ?? ""
  const deviceClass = params.get("class") ?? ""
  const status = params.get("status") ?? ""
  const [typed, setTyped] = useState(prefix)
  // Cursors of the pages before this one, for "Previous"; reset by any filter change.
  const [cursors, setCursors] = useState<ReadonlyArray<string>>([])
  const cursor = cursors[cursors.length - 1]

  const setFilter = (name: string, value: string) => {
    const next = new URLSearchParams(params)
    if (value === "") next.delete(name)
    else next.set(name, value)
    setCursors([])
    const search = next.toString()
    navigate(search === "" ? location.pathname : `${location.pathname}?${search}`, true)
  }

  // Typing in the search box asks the server once the typing pauses, not on every key.
  useEffect(() => {
    if (typed === prefix) return
    const timer = setTimeout(() => setFilter("prefix", typed.trim()), 250)
    return () => clearTimeout(timer)
  }, [typed])

  const classes = useAsync(
    () => request<{ deviceClasses: ReadonlyArray<ClassSummary> }>("GET", "/v1/device-classes"),
    [],
  )
  const page = useAsync(async () => {
    const answer = await request<DevicePage>(
      "GET",
      `/v1/devices${query({ limit: PAGE, cursor, prefix, class: deviceClass, status })}`,
    )
    return answer.total === undefined
      ? pageLocally(answer, { prefix, deviceClass, status }, Number(cursor ?? 0))
      : answer
  }, [prefix, deviceClass, status, cursor])

  const devices = page.data?.devices ?? []
  const now = Date.now()
  return (
    <Page
      title="Devices"
      actions={
        <Link href="/devices/new" class="button">
          Add device
        </Link>
      }
    >
      <form
        class="filters"
        aria-label="Filters"
        onSubmit={(e) => {
          e.preventDefault()
          setFilter("prefix", typed.trim())
        }}
      >
        <label>
          Device id starts with
          <input type="search" name="prefix" value={typed} onInput={(e) => setTyped(e.currentTarget.value)} />
        </label>
        <label>
          Class
          <select
            name="class"
            value={deviceClass}
            onChange={(e) => setFilter("class", e.currentTarget.value)}
          >
            <option value="">Any class</option>
            {(classes.data?.deviceClasses ?? []).map((c) => (
              <option key={c.name} value={c.name}>
                {c.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          Status
          <select name="status" value={status} onChange={(e) => setFilter("status", e.currentTarget.value)}>
            <option value="">Online and offline</option>
            <option value="online">Online</option>
            <option value="offline">Offline</option>
          </select>
        </label>
      </form>
      <ErrorNote error={page.error} retry={page.reload} />
      <p class="muted" aria-live="polite">
        {page.loading
          ? "Loading…"
          : page.data?.total !== undefined
            ? `${page.data.total.toLocaleString()} device${page.data.total === 1 ? "" : "s"} match${status === "" ? "" : " (before the status filter)"}. Online = heard from within ${Math.round((page.data.onlineWindowMs ?? DEFAULT_ONLINE_WINDOW_MS) / 60_000)} min.`
            : ""}
      </p>
      <div class="table-wrap">
        <table data-testid="fleet">
          <thead>
            <tr>
              <th scope="col">Device</th>
              <th scope="col">Class</th>
              <th scope="col">Status</th>
              <th scope="col">Last seen</th>
            </tr>
          </thead>
          <tbody>
            {devices.map((d) => (
              <tr key={d.deviceId}>
                <td>
                  <Link href={`/devices/${encodeURIComponent(d.deviceId)}`}>{d.deviceId}</Link>
                </td>
                <td>{d.deviceClass}</td>
                <td>
                  <span class={`status ${d.online ? "online" : "offline"}`}>
                    {d.online ? "online" : "offline"}
                  </span>
                  {d.enabled === false && <span class="status disabled">disabled</span>}
                </td>
                <td title={d.lastSeen === null ? undefined : dateTime(d.lastSeen)}>
                  {d.lastSeen === null ? "never" : ago(d.lastSeen, now)}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!page.loading && devices.length === 0 && page.error === undefined && (
        <p>No devices match these filters.</p>
      )}
      <div class="pager">
        <button
          type="button"
          disabled={cursors.length === 0}
          onClick={() => setCursors(cursors.slice(0, -1))}
        >
          Previous
        </button>
        <button
          type="button"
          disabled={page.data?.nextCursor === undefined}
          onClick={() => page.data?.nextCursor && setCursors([...cursors, page.data.nextCursor])}
        >
          Next
        </button>
      </div>
    </Page>
  )
}
