/**
 * One device: its latest values with their units (updated by the live feed), the live plot, the
 * stored history over a chosen range, its recent dead letters and its administration.
 */
import { useEffect, useState } from "preact/hooks"
import { ApiError, query, request } from "../api"
import { ErrorNote, Page, useAsync } from "../components/Common"
import { DeadLetterTable } from "../components/DeadLetterTable"
import { DeviceActions } from "../components/DeviceActions"
import { HistoryPlot } from "../components/HistoryPlot"
import { LivePlot } from "../components/LivePlot"
import type { PlotSeries } from "../components/Plot"
import { ago, dateTime, number } from "../format"
import { Link } from "../router"
import type {
  ClassSummary,
  DeadLetterPage,
  DevicePage as DevicePageAnswer,
  DeviceRow,
  Reading,
} from "../types"

const plottable = new Set(["number", "integer", "boolean"])

/**
 * The device's row: the list filtered by its id as prefix, then the exact id. A device created a
 * moment ago reaches this process within the registry's poll interval (1 s), so a miss is asked
 * again once before it is called missing.
 */
const findDevice = async (deviceId: string, again = true): Promise<DeviceRow> => {
  const page = await request<DevicePageAnswer>("GET", `/v1/devices${query({ prefix: deviceId, limit: 10 })}`)
  const row = page.devices.find((d) => d.deviceId === deviceId)
  if (row !== undefined) return row
  if (again) {
    await new Promise((r) => setTimeout(r, 1_500))
    return findDevice(deviceId, false)
  }
  throw new ApiError(
    404,
    "DeviceNotFound",
    `No device "${deviceId}" in this tenant (it may have been deleted).`,
  )
}

/** The latest reading, or null when the device has stored none yet. */
const latestOf = (deviceId: string) =>
  request<Reading>("GET", `/v1/devices/${encodeURIComponent(deviceId)}/latest`).catch((e: unknown) => {
    if (e instanceof ApiError && e.tag === "NoReadings") return null
    throw e
  })

const display = (value: unknown) =>
  typeof value === "number"
    ? number(value, 3)
    : typeof value === "boolean"
      ? value
        ? "true"
        : "false"
      : String(value)

export const DevicePage = (props: { deviceId: string }) => {
  const { deviceId } = props
  const device = useAsync(() => findDevice(deviceId), [deviceId])
  const classes = useAsync(
    () => request<{ deviceClasses: ReadonlyArray<ClassSummary> }>("GET", "/v1/device-classes"),
    [],
  )
  const stored = useAsync(() => latestOf(deviceId), [deviceId])
  // The live feed carries only what arrives after it opened: a reading stored in between (or
  // while the socket reconnects) shows through this refresh.
  const reloadStored = stored.reload
  useEffect(() => {
    const timer = setInterval(reloadStored, 5_000)
    return () => clearInterval(timer)
  }, [reloadStored])
  const deadLetters = useAsync(
    () => request<DeadLetterPage>("GET", `/v1/dead-letters${query({ deviceId, limit: 10 })}`),
    [deviceId],
  )
  const [live, setLive] = useState<Reading | undefined>(undefined)
  const [enabled, setEnabled] = useState<boolean | undefined>(undefined)

  const latest = live !== undefined && (stored.data == null || live.ts >= stored.data.ts) ? live : stored.data
  // The reading names its class too, so units show even before the device row is in.
  const className = device.data?.deviceClass ?? latest?.deviceClass
  const cls = classes.data?.deviceClasses.find((c) => c.name === className)
  const fields = Object.entries(cls?.definition.fields ?? {})
  const series: ReadonlyArray<PlotSeries> = fields
    .filter(([, f]) => plottable.has(f.type))
    .map(([name, f]) => ({ name, unit: f.unit }))
  const unitOf = (name: string) => cls?.definition.fields[name]?.unit

  const isEnabled = enabled ?? device.data?.enabled
  // The row was read when the page opened; readings since then are newer news.
  const lastSeen = Math.max(device.data?.lastSeen ?? -1, latest?.receivedAt ?? -1)
  const lastSeenOrNull = lastSeen < 0 ? null : lastSeen
  return (
    <Page title={deviceId}>
      <p>
        <Link href="/">← All devices</Link>
      </p>
      <ErrorNote error={device.error} retry={device.reload} />
      {device.data && (
        <p class="muted">
          Class{" "}
          <Link href={`/classes/${encodeURIComponent(device.data.deviceClass)}`}>
            {device.data.deviceClass}
          </Link>
          {cls ? ` (version ${cls.version})` : ""} ·{" "}
          {isEnabled === false ? "disabled" : isEnabled ? "enabled" : ""}
          {" · "}last seen {lastSeenOrNull === null ? "never" : ago(lastSeenOrNull)}
        </p>
      )}
      <section aria-labelledby="latest-title" class="card">
        <h2 id="latest-title">Latest values</h2>
        <ErrorNote error={stored.error} retry={stored.reload} />
        {latest == null ? (
          <p class="muted">{stored.loading ? "Loading…" : "No reading stored yet."}</p>
        ) : (
          <>
            <dl class="values" data-testid="latest-values">
              {Object.entries(latest.values).map(([name, value]) => (
                <div key={name}>
                  <dt>{name}</dt>
                  <dd>
                    {display(value)}
                    {unitOf(name) ? <span class="unit"> {unitOf(name)}</span> : null}
                  </dd>
                </div>
              ))}
            </dl>
            <p class="muted">
              Device time {dateTime(latest.ts)} · received {ago(latest.receivedAt)} · message {latest.msgId}
            </p>
          </>
        )}
      </section>
      {device.data && classes.data && (
        <>
          <section aria-labelledby="live-title" class="card">
            <h2 id="live-title">Live</h2>
            <LivePlot deviceId={deviceId} series={series} onReading={setLive} />
          </section>
          <section aria-labelledby="history-title" class="card">
            <h2 id="history-title">History</h2>
            <HistoryPlot deviceId={deviceId} series={series} />
          </section>
        </>
      )}
      <section aria-labelledby="dl-title" class="card">
        <h2 id="dl-title">Recent dead letters</h2>
        <ErrorNote error={deadLetters.error} retry={deadLetters.reload} />
        <DeadLetterTable
          rows={(deadLetters.data?.deadLetters ?? []).filter((d) => d.deviceId === deviceId)}
          showDevice={false}
        />
        <p>
          <Link href={`/dead-letters?deviceId=${encodeURIComponent(deviceId)}`}>
            All of this device's dead letters
          </Link>
        </p>
      </section>
      {device.data && (
        <DeviceActions deviceId={deviceId} enabled={isEnabled} onChanged={(s) => setEnabled(s.enabled)} />
      )}
    </Page>
  )
}
