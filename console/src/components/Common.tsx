/** Small pieces every page uses: loading a request's answer, and showing an error a person can act on. */
import type { ComponentChildren } from "preact"
import { useCallback, useEffect, useRef, useState } from "preact/hooks"
import { ApiError } from "../api"

export interface Async<A> {
  readonly data: A | undefined
  readonly error: ApiError | undefined
  readonly loading: boolean
  readonly reload: () => void
}

/**
 * Runs `load` now and whenever `deps` change; an answer that arrives after a newer request was
 * made is dropped, so fast typing in a filter never shows an older result last.
 */
export const useAsync = <A,>(load: () => Promise<A>, deps: ReadonlyArray<unknown>): Async<A> => {
  const [state, setState] = useState<{ data: A | undefined; error: ApiError | undefined; loading: boolean }>({
    data: undefined,
    error: undefined,
    loading: true,
  })
  const generation = useRef(0)
  const [tick, setTick] = useState(0)
  useEffect(() => {
    const mine = ++generation.current
    setState((s) => ({ ...s, loading: true }))
    load().then(
      (data) => {
        if (mine === generation.current) setState({ data, error: undefined, loading: false })
      },
      (error: unknown) => {
        if (mine !== generation.current) return
        const e = error instanceof ApiError ? error : new ApiError(0, "Error", String(error))
        setState((s) => ({ data: s.data, error: e, loading: false }))
      },
    )
  }, [...deps, tick])
  const reload = useCallback(() => setTick((t) => t + 1), [])
  return { ...state, reload }
}

/** An error with its advice; `retry` adds a button. Announced to screen readers as it appears. */
export const ErrorNote = (props: { error: ApiError | undefined; retry?: () => void }) =>
  props.error === undefined ? null : (
    <div class="error" role="alert">
      <p>{props.error.message}</p>
      {props.error.problems.length > 0 && (
        <ul>
          {props.error.problems.map((p) => (
            <li key={p.field + p.reason}>
              {p.field === "" ? "" : <code>{p.field}</code>} {p.reason}
            </li>
          ))}
        </ul>
      )}
      {props.retry && (
        <button type="button" onClick={props.retry}>
          Retry
        </button>
      )}
    </div>
  )

/** A page's heading and body. Focus moves to the heading on navigation, so keyboard and screen-reader users start there. */
export const Page = (props: { title: string; actions?: ComponentChildren; children: ComponentChildren }) => {
  const heading = useRef<HTMLHeadingElement>(null)
  useEffect(() => {
    document.title = `${props.title} · Sluice`
    heading.current?.focus({ preventScroll: true })
  }, [props.title])
  return (
    <section class="page">
      <header class="page-head">
        <h1 ref={heading} tabIndex={-1}>
          {props.title}
        </h1>
        {props.actions && <div class="actions">{props.actions}</div>}
      </header>
      {props.children}
    </section>
  )
}

/** A secret shown once, with a button to copy it. */
export const Copyable = (props: { label: string; value: string; testId?: string }) => {
  const [copied, setCopied] = useState(false)
  return (
    <div class="copyable">
      <span class="label">{props.label}</span>
      <pre data-testid={props.testId}>{props.value}</pre>
      <button
        type="button"
        onClick={() =>
          navigator.clipboard?.writeText(props.value).then(
            () => setCopied(true),
            () => setCopied(false),
          )
        }
      >
        {copied ? "Copied" : "Copy"}
      </button>
    </div>
  )
}
