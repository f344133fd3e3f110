/**
 * The console's shell: sign-in when there is no session, otherwise the navigation and the page
 * of the current path. Routes are plain paths; the server answers index.html for each of them.
 */
import { useEffect, useState } from "preact/hooks"
import { loadSession, type Session, saveSession, setOnRefused } from "./api"
import { Page } from "./components/Common"
import { ClassesPage } from "./pages/Classes"
import { DeadLettersPage } from "./pages/DeadLetters"
import { DevicePage } from "./pages/Device"
import { FleetPage } from "./pages/Fleet"
import { NewDevicePage } from "./pages/NewDevice"
import { OverviewPage } from "./pages/Overview"
import { SignIn } from "./pages/SignIn"
import { TenantsPage } from "./pages/Tenants"
import { Link, useLocation } from "./router"

const tenantNav = [
  ["/", "Devices"],
  ["/devices/new", "Add device"],
  ["/dead-letters", "Dead letters"],
  ["/classes", "Device classes"],
  ["/overview", "Overview"],
] as const

const operatorNav = [
  ["/", "Tenants"],
  ["/overview", "Overview"],
] as const

const route = (session: Session, path: string) => {
  const segments = path
    .split("/")
    .filter((s) => s !== "")
    .map(decodeURIComponent)
  const [first, second] = segments
  if (session.kind === "operator") {
    if (segments.length === 0 || first === "tenants") return <TenantsPage />
    if (first === "overview") return <OverviewPage operator />
  } else {
    if (segments.length === 0 || (first === "devices" && second === undefined)) return <FleetPage />
    if (first === "devices" && second === "new" && segments.length === 2) return <NewDevicePage />
    if (first === "devices" && second !== undefined && segments.length === 2)
      return <DevicePage deviceId={second} />
    if (first === "dead-letters") return <DeadLettersPage />
    if (first === "classes") return <ClassesPage name={second} />
    if (first === "overview") return <OverviewPage operator={false} />
  }
  return (
    <Page title="Page not found">
      <p>
        There is no page at <code>{path}</code>. <Link href="/">Go to the start page</Link>.
      </p>
    </Page>
  )
}

export const App = () => {
  const [session, setSession] = useState<Session | null>(loadSession)
  const [notice, setNotice] = useState<string | undefined>(undefined)
  const location = useLocation()

  useEffect(() => {
    // A key that stops working mid-session (revoked, expired): back to sign-in, saying why.
    setOnRefused((message) => {
      saveSession(null)
      setSession(null)
      setNotice(message)
    })
  }, [])

  if (session === null)
    return (
      <SignIn
        notice={notice}
        onSignedIn={(s) => {
          saveSession(s)
          setNotice(undefined)
          setSession(s)
        }}
      />
    )

  const nav = session.kind === "operator" ? operatorNav : tenantNav
  const active = (href: string) =>
    href === "/"
      ? location.pathname === "/" ||
        (location.pathname.startsWith("/devices/") && location.pathname !== "/devices/new")
      : location.pathname.startsWith(href)
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <Link href="/" class="brand">
          Sluice
        </Link>
        <nav aria-label="Main">
          {nav.map(([href, label]) => (
            <Link key={href} href={href} aria-current={active(href) ? "page" : undefined}>
              {label}
            </Link>
          ))}
        </nav>
        <span class="who">{session.kind === "operator" ? "operator key" : "tenant key"}</span>
        <button
          type="button"
          class="signout"
          onClick={() => {
            saveSession(null)
            setNotice("Signed out. The key was removed from this browser tab.")
            setSession(null)
          }}
        >
          Sign out
        </button>
      </header>
      <main id="main">{route(session, location.pathname)}</main>
    </>
  )
}
