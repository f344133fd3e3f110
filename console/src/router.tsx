/**
 * A router of plain links: pages are real URLs (`/devices/thermo-1`), so a reload, a bookmark or
 * "open in new tab" lands on the same page (the server answers index.html for them). Links are
 * `<a href>`, so they work with the keyboard and a middle click.
 */
import type { ComponentChildren } from "preact"
import { useEffect, useState } from "preact/hooks"

const listeners = new Set<() => void>()

/** Goes to `path` inside the console without reloading. */
export const navigate = (path: string, replace = false) => {
  if (replace) history.replaceState(null, "", path)
  else history.pushState(null, "", path)
  for (const l of listeners) l()
}

/** The current location (path and query), re-rendering on every navigation. */
export const useLocation = (): URL => {
  const [, setTick] = useState(0)
  useEffect(() => {
    const update = () => setTick((n) => n + 1)
    listeners.add(update)
    addEventListener("popstate", update)
    return () => {
      listeners.delete(update)
      removeEventListener("popstate", update)
    }
  }, [])
  return new URL(location.href)
}

/** An in-console link: a plain left click navigates in place; anything else is the browser's. */
export const Link = (props: {
  readonly href: string
  readonly children: ComponentChildren
  readonly class?: string
  readonly "aria-current"?: "page" | undefined
}) => (
  <a
    href={props.href}
    class={props.class}
    aria-current={props["aria-current"]}
    onClick={(e) => {
      if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return
      e.preventDefault()
      navigate(props.href)
    }}
  >
    {props.children}
  </a>
)
