/**
 * A device's readings as they arrive, over the live WebSocket (`/v1/live?device=`). The feed only
 * carries what arrives after it opens, so the plot starts empty and fills; it keeps the newest
 * `KEEP` points. The socket reconnects (1 s, doubling to 15 s) until the page is left.
 */
import { useEffect, useRef, useState } from "preact/hooks"
import type uPlot from "uplot"
import { liveUrl } from "../api"
import type { Reading } from "../types"
import { Plot, type PlotSeries } from "./Plot"

const KEEP = 600

type State = "connecting" | "open" | "closed"

export const LivePlot = (props: {
  readonly deviceId: string
  readonly series: ReadonlyArray<PlotSeries>
  readonly onReading: (reading: Reading) => void
}) => {
  const [data, setData] = useState<uPlot.AlignedData>(() => [[], ...props.series.map(() => [])])
  const [state, setState] = useState<State>("connecting")
  const rows = useRef<Array<Reading>>([])
  const onReading = useRef(props.onReading)
  onReading.current = props.onReading
  const names = props.series.map((s) => s.name).join(",")

  useEffect(() => {
    rows.current = []
    let socket: WebSocket | undefined
    let retry: ReturnType<typeof setTimeout> | undefined
    let frame: number | undefined
    let delay = 1000
    let left = false
    const fields = props.series.map((s) => s.name)
    setData([[], ...fields.map(() => [])])

    // Many readings per frame redraw once.
    const draw = () => {
      frame = undefined
      const sorted = rows.current
      setData([
        sorted.map((r) => r.ts / 1000),
        ...fields.map((f) =>
          sorted.map((r) => {
            const v = r.values[f]
            return typeof v === "number" ? v : typeof v === "boolean" ? Number(v) : null
          }),
        ),
      ])
    }

    const connect = () => {
      setState("connecting")
      socket = new WebSocket(liveUrl(props.deviceId))
      socket.onopen = () => {
        delay = 1000
        setState("open")
      }
      socket.onmessage = (event) => {
        let reading: Reading
        try {
          reading = JSON.parse(String(event.data)) as Reading
        } catch {
          return
        }
        const list = rows.current
        // Readings arrive in device order; a replayed one (the feed is at-least-once) is skipped.
        if (list.some((r) => r.msgId === reading.msgId)) return
        list.push(reading)
        if (list.length > 1 && list[list.length - 2]!.ts > reading.ts) list.sort((a, b) => a.ts - b.ts)
        if (list.length > KEEP) list.splice(0, list.length - KEEP)
        onReading.current(reading)
        if (frame === undefined) frame = requestAnimationFrame(draw)
      }
      socket.onclose = () => {
        setState("closed")
        if (left) return
        retry = setTimeout(connect, delay)
        delay = Math.min(delay * 2, 15_000)
      }
    }
    connect()
    return () => {
      left = true
      if (retry !== undefined) clearTimeout(retry)
      if (frame !== undefined) cancelAnimationFrame(frame)
      socket?.close()
    }
  }, [props.deviceId, names])

  return (
    <div>
      <p class="muted" role="status">
        Live feed:{" "}
        <span class={`status ${state === "open" ? "online" : "offline"}`} data-testid="live-state">
          {state === "open" ? "connected" : state === "connecting" ? "connecting…" : "disconnected, retrying"}
        </span>{" "}
        · {data[0]?.length ?? 0} readings since this page opened
      </p>
      <Plot
        label={`Live readings of ${props.deviceId}`}
        series={props.series}
        data={data}
        testId="live-plot"
      />
    </div>
  )
}
