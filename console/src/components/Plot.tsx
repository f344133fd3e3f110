/**
 * A time plot (uPlot: small, canvas, fast with thousands of points). One y scale per unit, so
 * °C and % share a plot without one flattening the other; the first two units get an axis.
 *
 * The container carries what is drawn as data attributes (`data-points`: how many x values,
 * `data-latest`: the newest value of each series), so a test, or a person with the inspector, can
 * read what the plot shows without decoding a canvas.
 */
import { useEffect, useRef } from "preact/hooks"
import uPlot from "uplot"
import "uplot/dist/uPlot.min.css"

export interface PlotSeries {
  readonly name: string
  readonly unit?: string | undefined
}

const palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04"]

const latestOf = (series: ReadonlyArray<PlotSeries>, data: uPlot.AlignedData) => {
  const latest: Record<string, number | null> = {}
  series.forEach((s, i) => {
    const ys = data[i + 1] ?? []
    let v: number | null = null
    for (let j = ys.length - 1; j >= 0; j--) {
      const y = ys[j]
      if (y !== null && y !== undefined) {
        v = y
        break
      }
    }
    latest[s.name] = v
  })
  return latest
}

const options = (
  series: ReadonlyArray<PlotSeries>,
  width: number,
  onZoom: ((fromMs: number, toMs: number) => void) | undefined,
): uPlot.Options => {
  const units = [...new Set(series.map((s) => s.unit ?? ""))]
  return {
    width,
    height: 240,
    cursor: { drag: { x: onZoom !== undefined, y: false, setScale: false } },
    scales: { x: { time: true } },
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.unit ? `${s.name} (${s.unit})` : s.name,
        scale: s.unit ?? "",
        stroke: palette[i % palette.length]!,
        width: 1.5,
        spanGaps: false,
        points: { size: 4 },
      })),
    ],
    axes: [
      {},
      ...units.slice(0, 2).map((unit, i) => ({
        scale: unit,
        side: i === 0 ? 3 : 1,
        label: unit,
        grid: { show: i === 0 },
        size: 56,
      })),
    ],
    hooks: {
      setSelect: [
        (u: uPlot) => {
          if (onZoom === undefined || u.select.width < 5) return
          const from = u.posToVal(u.select.left, "x") * 1000
          const to = u.posToVal(u.select.left + u.select.width, "x") * 1000
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false)
          onZoom(Math.floor(from), Math.ceil(to))
        },
      ],
    },
  }
}

/** A plot of `data` (x in epoch seconds, then one array per series); `onZoom` gets a dragged range, ms. */
export const Plot = (props: {
  readonly label: string
  readonly series: ReadonlyArray<PlotSeries>
  readonly data: uPlot.AlignedData
  readonly onZoom?: (fromMs: number, toMs: number) => void
  readonly testId?: string
}) => {
  const container = useRef<HTMLDivElement>(null)
  const plot = useRef<uPlot | null>(null)
  const zoom = useRef(props.onZoom)
  zoom.current = props.onZoom
  const shape = props.series.map((s) => `${s.name}/${s.unit ?? ""}`).join(",")

  // Rebuilt only when the series change; new data goes through setData (cheap, no DOM churn).
  useEffect(() => {
    const el = container.current
    if (el === null) return
    const u = new uPlot(
      options(props.series, el.clientWidth || 600, zoom.current && ((f, t) => zoom.current?.(f, t))),
      props.data,
      el,
    )
    plot.current = u
    const resize = new ResizeObserver(() => u.setSize({ width: el.clientWidth, height: 240 }))
    resize.observe(el)
    return () => {
      resize.disconnect()
      u.destroy()
      plot.current = null
    }
  }, [shape])

  useEffect(() => {
    plot.current?.setData(props.data)
  }, [props.data])

  const points = props.data[0]?.length ?? 0
  return (
    <figure class="plot" aria-label={props.label}>
      <div
        ref={container}
        data-testid={props.testId}
        data-points={String(points)}
        data-latest={JSON.stringify(latestOf(props.series, props.data))}
      />
      {points === 0 && <figcaption class="muted">No points in this range yet.</figcaption>}
    </figure>
  )
}
