/**
 * The platform at a glance, from its own metrics (`GET /v1/overview`, polled every 2 s). The
 * server sends counters; a rate is a counter's change over the samples of the last minute this
 * page has seen, so rates appear from the second answer on. Which numbers are the machine's,
 * this process's or the tenant's is said on the page.
 */
import { useEffect, useState } from "preact/hooks"
import { ApiError, request } from "../api"
import { ErrorNote, Page } from "../components/Common"
import { number } from "../format"
import type { Overview } from "../types"

const POLL_MS = 2_000
const WINDOW_MS = 60_000

type Counter = (o: Overview) => number | null

/** The change of `pick` per `perMs` between the oldest and newest sample; undefined before two samples. */
const rate = (samples: ReadonlyArray<Overview>, pick: Counter, perMs: number) => {
  const first = samples[0]
  const last = samples[samples.length - 1]
  if (first === undefined || last === undefined || first === last) return undefined
  const a = pick(first)
  const b = pick(last)
  const dt = last.at - first.at
  if (a === null || b === null || dt <= 0) return null
  // A restarted process starts its counters again: no negative rates.
  return (Math.max(0, b - a) / dt) * perMs
}

const Tile = (props: {
  label: string
  value: number | null | undefined
  unit: string
  note?: string | undefined
  testId?: string
}) => (
  <div class="tile" data-testid={props.testId}>
    <span class="tile-label">{props.label}</span>
    <span class="tile-value">
      {props.value === undefined ? "…" : props.value === null ? "n/a" : number(props.value, 1)}
      <span class="unit"> {props.unit}</span>
    </span>
    {props.note && <span class="muted">{props.note}</span>}
  </div>
)

const totalNote = (samples: ReadonlyArray<Overview>, pick: Counter) => {
  const last = samples[samples.length - 1]
  const value = last === undefined ? null : pick(last)
  return value === null ? undefined : `${value.toLocaleString()} in all`
}

export const OverviewPage = (props: { operator: boolean }) => {
  const [samples, setSamples] = useState<ReadonlyArray<Overview>>([])
  const [error, setError] = useState<ApiError | undefined>(undefined)

  useEffect(() => {
    let stopped = false
    const poll = () =>
      request<Overview>("GET", "/v1/overview").then(
        (o) => {
          if (stopped) return
          setSamples((before) => [...before.filter((s) => o.at - s.at <= WINDOW_MS), o])
          setError(undefined)
        },
        (e: unknown) => !stopped && setError(e instanceof ApiError ? e : new ApiError(0, "Error", String(e))),
      )
    void poll()
    const timer = setInterval(poll, POLL_MS)
    return () => {
      stopped = true
      clearInterval(timer)
    }
  }, [])

  const now = samples[samples.length - 1]
  const span = samples.length < 2 ? 0 : Math.round((now!.at - samples[0]!.at) / 1000)
  const scope =
    now?.source === "machine"
      ? "the whole machine (every process, gathered by the supervisor)"
      : "this serving process only (ingest counts only if ingress runs in it)"
  const ingested: Counter = (o) => o.ingestedTotal
  const stored: Counter = (o) => o.storedTotal
  const dead: Counter = (o) => o.deadLettersTotal
  return (
    <Page title="Overview">
      <ErrorNote error={error} />
      {now && (
        <>
          <h2>Platform</h2>
          <p class="muted">
            Every tenant, from {scope}. Rates over the last {span} s (up to a minute) this page has watched.
          </p>
          <div class="tiles">
            <Tile
              label="Ingest rate"
              value={rate(samples, ingested, 1000)}
              unit="msg/s"
              note={totalNote(samples, ingested)}
              testId="ingest-rate"
            />
            <Tile
              label="Stored rate"
              value={rate(samples, stored, 1000)}
              unit="readings/s"
              note={totalNote(samples, stored)}
              testId="stored-rate"
            />
            <Tile
              label="Dead letters"
              value={rate(samples, dead, 60_000)}
              unit="/min"
              note={totalNote(samples, dead)}
            />
            <Tile
              label="Stream lag"
              value={now.streamLagMs}
              unit="ms"
              note="the slowest shard, behind the newest record"
            />
            <Tile label="Live subscribers" value={now.liveSubscribers} unit="sockets" />
          </div>
          {!props.operator && now.tenant && (
            <>
              <h2>This tenant</h2>
              <div class="tiles">
                <Tile
                  label="Connected devices"
                  value={now.tenant.online}
                  unit={`of ${now.tenant.devices.toLocaleString()}`}
                  note={`heard from within ${Math.round(now.tenant.onlineWindowMs / 60_000)} min`}
                  testId="connected-devices"
                />
              </div>
            </>
          )}
        </>
      )}
    </Page>
  )
}
