/**
 * A device's stored history over a chosen range, as averages per bucket from the aggregates
 * endpoint. The bucket interval follows the range (at most ~400 buckets: a plot's width), so a
 * month costs as little to draw as a minute. Drag across the plot to zoom in; the range buttons,
 * "Zoom out" and the two date fields do the same from the keyboard. A range ending "now" follows
 * the clock and refreshes every 5 s.
 */
import { useEffect, useState } from "preact/hooks"
import type uPlot from "uplot"
import { query, request } from "../api"
import { dateTime, intervalFor, toLocalInput } from "../format"
import type { Aggregates } from "../types"
import { ErrorNote, useAsync } from "./Common"
import { Plot, type PlotSeries } from "./Plot"

const presets: ReadonlyArray<readonly [string, number]> = [
  ["15 min", 15 * 60_000],
  ["1 h", 3_600_000],
  ["6 h", 6 * 3_600_000],
  ["24 h", 24 * 3_600_000],
  ["7 d", 7 * 86_400_000],
  ["30 d", 30 * 86_400_000],
]

/** Either "the last N ms" (follows the clock) or a fixed range, epoch ms. */
type Range =
  | { readonly kind: "last"; readonly ms: number }
  | { readonly kind: "fixed"; readonly from: number; readonly to: number }

const resolve = (range: Range, now: number) =>
  range.kind === "last" ? { from: now - range.ms, to: now } : { from: range.from, to: range.to }

export const HistoryPlot = (props: {
  readonly deviceId: string
  readonly series: ReadonlyArray<PlotSeries>
}) => {
  const [range, setRange] = useState<Range>({ kind: "last", ms: 15 * 60_000 })
  const [now, setNow] = useState(Date.now)
  const { from, to } = resolve(range, now)
  const interval = intervalFor(to - from)

  useEffect(() => {
    if (range.kind !== "last") return
    const timer = setInterval(() => setNow(Date.now()), 5_000)
    return () => clearInterval(timer)
  }, [range])

  const fields = props.series.map((s) => s.name)
  const answer = useAsync(
    () =>
      fields.length === 0
        ? Promise.resolve(undefined)
        : request<Aggregates>(
            "GET",
            `/v1/devices/${encodeURIComponent(props.deviceId)}/aggregates${query({
              from,
              to,
              interval: interval.name,
              fn: "avg",
              fields: fields.join(","),
            })}`,
          ),
    [props.deviceId, from, to, fields.join(",")],
  )

  const buckets = answer.data?.buckets ?? []
  const data: uPlot.AlignedData = [
    buckets.map((b) => b.start / 1000),
    ...fields.map((f) => buckets.map((b) => b.values[`avg_${f}`] ?? null)),
  ]
  const zoomTo = (a: number, b: number) =>
    setRange({ kind: "fixed", from: Math.max(0, a), to: Math.max(a + 1000, b) })

  return (
    <div>
      <fieldset class="range">
        <legend class="visually-hidden">History range</legend>
        {presets.map(([label, ms]) => (
          <button
            key={label}
            type="button"
            aria-pressed={range.kind === "last" && range.ms === ms}
            onClick={() => {
              setNow(Date.now())
              setRange({ kind: "last", ms })
            }}
          >
            {label}
          </button>
        ))}
        <button
          type="button"
          onClick={() => {
            const span = to - from
            zoomTo(from - span / 2, Math.min(Date.now(), to + span / 2))
          }}
        >
          Zoom out
        </button>
      </fieldset>
      <div class="range-fields">
        <label>
          From
          <input
            type="datetime-local"
            value={toLocalInput(from)}
            onChange={(e) => {
              const v = new Date(e.currentTarget.value).getTime()
              if (Number.isFinite(v) && v < to) zoomTo(v, to)
            }}
          />
        </label>
        <label>
          To
          <input
            type="datetime-local"
            value={toLocalInput(to)}
            onChange={(e) => {
              const v = new Date(e.currentTarget.value).getTime()
              if (Number.isFinite(v) && v > from) zoomTo(from, v)
            }}
          />
        </label>
      </div>
      <p class="muted" aria-live="polite">
        {dateTime(from)} – {dateTime(to)} · average per {interval.name} · {buckets.length} buckets
        {answer.loading ? " · loading…" : ""}
      </p>
      <ErrorNote error={answer.error} retry={answer.reload} />
      <Plot
        label={`History of ${props.deviceId}`}
        series={props.series}
        data={data}
        onZoom={zoomTo}
        testId="history-plot"
      />
    </div>
  )
}
