/**
 * The web console (`console/`, built into `console/dist` by `npm install`) served at `/` by the
 * serving listener, beside the API (`/v1`), its reference (`/docs`) and the probes. Every asset
 * comes from this process: the console works on a closed network.
 *
 * Client routes (`/devices/thermo-1`) are the console's, so any other GET that is not a file of
 * the build answers `index.html` and the console's router takes it from there; a path that looks
 * like a file (`/assets/x.js`) and is missing is a plain 404 instead, so a stale page never runs
 * HTML as a script. Vite names every asset under `assets/` by its content hash: those are cached
 * for a year, `index.html` never, so a new build is picked up on the next load.
 */
import { readFile, stat } from "node:fs/promises"
import { extname, join, normalize, sep } from "node:path"
import { fileURLToPath } from "node:url"
import { HttpApiBuilder, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Config, Effect } from "effect"

/** Where the built console is (SLUICE_CONSOLE_DIR). Default: `console/dist` of this checkout. */
export const directory = Config.string("dir").pipe(
  Config.withDefault(fileURLToPath(new URL("../../console/dist", import.meta.url))),
  Config.nested("console"),
  Config.nested("sluice"),
)

const contentTypes: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".webmanifest": "application/manifest+json",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
}

/** Paths the console never answers: they belong to the API and the probes, even when unknown there. */
const reserved = /^\/(v1|docs|openapi\.json|healthz|readyz|metrics)(\/|$)/

/**
 * The console's own pages may load only what this listener serves. uPlot and Preact set styles
 * through the DOM, which CSP does not restrict; `'unsafe-inline'` for styles covers the `style`
 * attributes in the few places they are rendered.
 */
const securityHeaders = {
  "content-security-policy":
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self' 'unsafe-inline'; " +
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
}

const notBuilt = (dir: string) =>
  HttpServerResponse.text(
    "The Sluice console is not built.\n\n" +
      `Expected its build in ${dir}. Build it with:\n\n    npm run build:console\n\n` +
      "(`npm install` builds it too.) The API is under /v1, its reference at /docs.\n",
    { status: 503, headers: { "cache-control": "no-store" } },
  )

/** A file of the build, or undefined if there is none at that path (or it is a directory). */
const readBuilt = (path: string) =>
  Effect.promise(() =>
    stat(path).then(
      (s) => (s.isFile() ? readFile(path) : undefined),
      () => undefined,
    ),
  )

const respond = (dir: string, url: string) =>
  Effect.gen(function* () {
    const pathname = decodeURIComponent(new URL(url, "http://console").pathname)
    if (reserved.test(pathname)) {
      return HttpServerResponse.unsafeJson(
        { _tag: "RouteNotFound", message: `no API route ${pathname}` },
        { status: 404 },
      )
    }
    // normalize() resolves `..`; anything that still escapes the build directory is refused.
    const file = normalize(join(dir, pathname))
    if (file !== dir && !file.startsWith(dir.endsWith(sep) ? dir : dir + sep)) {
      return HttpServerResponse.text("not found\n", { status: 404 })
    }
    const ext = extname(pathname)
    const body = pathname === "/" || ext === "" ? undefined : yield* readBuilt(file)
    if (body !== undefined) {
      const hashed = pathname.startsWith("/assets/")
      return HttpServerResponse.uint8Array(body, {
        contentType: contentTypes[ext] ?? "application/octet-stream",
        headers: {
          ...securityHeaders,
          "cache-control": hashed ? "public, max-age=31536000, immutable" : "no-cache",
        },
      })
    }
    if (ext !== "") return HttpServerResponse.text(`not found: ${pathname}\n`, { status: 404 })
    const index = yield* readBuilt(join(dir, "index.html"))
    if (index === undefined) return notBuilt(dir)
    return HttpServerResponse.uint8Array(index, {
      contentType: contentTypes[".html"]!,
      headers: { ...securityHeaders, "cache-control": "no-cache" },
    })
  })

/** Mounts the console on the API's router: GET of any path the API does not route. */
export const layer = HttpApiBuilder.Router.use((router) =>
  Effect.gen(function* () {
    const dir = normalize(yield* Effect.orDie(directory))
    yield* router.get(
      "/*",
      Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
        respond(dir, request.url).pipe(
          // A malformed %-escape in the path.
          Effect.catchAllDefect(() => Effect.succeed(HttpServerResponse.text("bad path\n", { status: 400 }))),
        ),
      ),
    )
  }),
)
