/**
 * The web console at 100,000 devices: API time of the device list, and time to first render of
 * the fleet page and of the device page of a device with 10 million stored readings, in real
 * Chromium (Debian's `/usr/bin/chromium` driven by playwright-core) against the real platform as
 * `npm start` runs it (supervisor, ingress and processor+serving processes).
 *
 * 1. Builds the console from its sources into `DIR/console-dist` (served via SLUICE_CONSOLE_DIR,
 *    so `console/dist` is left alone) and prepares DIR in a process of its own (`prepare.ts`: a
 *    fleet of 100,000 devices in the configuration file, 10,000,000 readings of `dev-1`, ten of
 *    every other device, half the fleet heard from now), then starts the platform on it.
 * 2. API: each request `--requests` times after 5 warm-ups, one at a time over a kept-alive
 *    connection; median and p99 of the wall time from `fetch` to the whole body read (with 50
 *    requests, p99 is the slowest).
 * 3. Chromium: `--loads` loads of each page (plus one discarded warm-up), each in a fresh page
 *    (tab), signed in through sessionStorage by an init script. The same init script records, on
 *    the page's own clock (`performance.now()`, 0 = navigation start), when the element appears
 *    (a MutationObserver) and the start of the next animation frame after it (the frame that
 *    paints it); the history plot counts as drawn at uPlot's first series stroke (a `Path2D`
 *    stroke on the plot's canvas) once the plot holds data. "warm": tabs of one browser context,
 *    so the hashed assets come from its HTTP cache, as for a returning user; "cold": a new
 *    context (empty cache) per load. Resource Timing of each request splits the wait (sent, on
 *    the wire, first byte, answered), each load re-sends its page's main request once idle, and
 *    the CPU of the platform's processes and of Chromium's (from /proc) is taken per load, beside
 *    a baseline of fresh tabs loading a small static file: where a page's time goes.
 *
 * Usage: npx tsx bench/console/index.ts [--dir DIR] [--devices 100000] [--readings 10000000]
 *          [--loads 10] [--requests 50]
 * With --dir the prepared data is kept and reused by the next run with the same --dir
 * (generating takes ~1–2 min); without it a temporary directory is used and removed.
 */
import { execFileSync, spawn } from "node:child_process"
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { cpus, loadavg, tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import type { Browser, BrowserContext } from "playwright-core"
import { type Platform, startPlatform } from "../../test/e2e/platform.js"
import { launchChromium } from "../../test/support/chromium.js"

const { values: args } = parseArgs({
  options: {
    dir: { type: "string" },
    devices: { type: "string", default: "100000" },
    readings: { type: "string", default: "10000000" },
    loads: { type: "string", default: "10" },
    requests: { type: "string", default: "50" },
  },
})
const root = fileURLToPath(new URL("../..", import.meta.url))
const loads = Number(args.loads)
const requests = Number(args.requests)
const KEY = "bench-console-key-0123456789"
const HEAVY = "dev-1"
const dir = args.dir ?? mkdtempSync(join(tmpdir(), "sluice-bench-console-"))
mkdirSync(dir, { recursive: true })

// The whole run is bounded: 15 minutes, then everything this process started is stopped.
let platform: Platform | undefined
let browser: Browser | undefined
const watchdog = setTimeout(() => {
  console.error("bench/console: over 15 minutes, stopping")
  if (platform !== undefined) process.kill(-platform.pid, "SIGKILL")
  process.exit(2)
}, 15 * 60_000)

const quantile = (sorted: ReadonlyArray<number>, q: number) =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? Number.NaN
const median = (xs: ReadonlyArray<number>) =>
  quantile(
    [...xs].sort((a, b) => a - b),
    0.5,
  )
const ms = (n: number) => (Number.isFinite(n) ? `${n.toFixed(n < 10 ? 1 : 0)} ms` : "–")

/** Runs `tsx prepare.ts` to its end (bounded: 12 min), echoing its output; returns its summary. */
const prepare = () =>
  new Promise<Record<string, unknown>>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        join(root, "bench/console/prepare.ts"),
        "--dir",
        dir,
        "--devices",
        args.devices,
        "--readings",
        args.readings,
      ],
      { cwd: root, stdio: ["ignore", "pipe", "inherit"] },
    )
    let last = ""
    child.stdout.on("data", (chunk: Buffer) => {
      const text = chunk.toString("utf8")
      process.stdout.write(text)
      last = (last + text).slice(-10_000)
    })
    const timer = setTimeout(() => child.kill("SIGKILL"), 12 * 60_000)
    child.once("exit", (code) => {
      clearTimeout(timer)
      const line = last.trim().split("\n").at(-1) ?? ""
      if (code === 0) resolve(JSON.parse(line) as Record<string, unknown>)
      else reject(new Error(`prepare exited with ${code}`))
    })
  })

const get = async (path: string) => {
  const response = await fetch(`${platform!.httpUrl}${path}`, {
    headers: { authorization: `Bearer ${KEY}` },
    signal: AbortSignal.timeout(30_000),
  })
  const body = await response.text()
  if (response.status !== 200) throw new Error(`${path}: ${response.status} ${body.slice(0, 300)}`)
  return JSON.parse(body) as Record<string, unknown>
}

/**
 * p50/p99 of `requests` GETs of `paths` after 5 warm-ups, wall time to the whole body; the paths
 * of one entry are sent at once (as a page sends them) and timed until the last is answered.
 */
const timeApi = async (paths: ReadonlyArray<string>) => {
  for (let i = 0; i < 5; i++) await Promise.all(paths.map(get))
  const times: Array<number> = []
  for (let i = 0; i < requests; i++) {
    const started = performance.now()
    await Promise.all(paths.map(get))
    times.push(performance.now() - started)
  }
  times.sort((a, b) => a - b)
  return { p50: quantile(times, 0.5), p99: quantile(times, 0.99), max: times.at(-1)! }
}

/**
 * The init script of every page: signs in (sessionStorage, as the sign-in form does) and records
 * marks on the page's clock. Written as a string: it runs in the page, not here.
 */
const initScript = `(() => {
  sessionStorage.setItem("sluice.session", JSON.stringify({ key: ${JSON.stringify(KEY)}, kind: "tenant" }))
  const marks = {}
  globalThis.__bench = marks
  const mark = (name) => {
    if (marks[name] !== undefined) return
    marks[name] = performance.now()
    requestAnimationFrame(() => { marks[name + "Frame"] = performance.now() })
  }
  const check = () => {
    if (marks.app === undefined && document.querySelector("#app > *") !== null) mark("app")
    if (marks.fleetRow === undefined) {
      const row = document.querySelector('[data-testid="fleet"] tbody tr')
      if (row !== null && row.getBoundingClientRect().height > 0) mark("fleetRow")
    }
    if (marks.latest === undefined) {
      const values = document.querySelector('[data-testid="latest-values"] dd')
      if (values !== null && values.getBoundingClientRect().height > 0) mark("latest")
    }
    if (marks.historyData === undefined) {
      const plot = document.querySelector('[data-testid="history-plot"]')
      if (plot !== null && Number(plot.getAttribute("data-points")) > 0) mark("historyData")
    }
  }
  new MutationObserver(check).observe(document, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["data-points"],
  })
  // uPlot strokes each series' Path2D (axes and grid are strokes without an argument).
  const stroke = CanvasRenderingContext2D.prototype.stroke
  CanvasRenderingContext2D.prototype.stroke = function (...a) {
    if (marks.historyDrawn === undefined && a.length > 0) {
      const plot = this.canvas.closest('[data-testid="history-plot"]')
      if (plot !== null && Number(plot.getAttribute("data-points")) > 0) mark("historyDrawn")
    }
    return stroke.apply(this, a)
  }
})()`

interface Load {
  /** Marks on the page's clock (ms since navigation start). */
  readonly marks: Record<string, number>
  /** The harness's wall time from just before page.goto to the wait seeing the last mark. */
  readonly harnessMs: number
  /** Navigation and resource timings, ms since navigation start. */
  readonly timing: Record<string, number>
}

/** One load of `path` in a fresh tab of `context`, waiting for `until` marks (bounded: 20 s). */
const load = async (
  context: BrowserContext,
  path: string,
  until: ReadonlyArray<string>,
  again: string,
): Promise<Load> => {
  const page = await context.newPage()
  try {
    const started = performance.now()
    await page.goto(`${platform!.httpUrl}${path}`, { waitUntil: "commit", timeout: 20_000 })
    await page.waitForFunction(
      (names) => {
        const marks = (globalThis as unknown as { __bench?: Record<string, number> }).__bench
        return marks !== undefined && names.every((n) => marks[n] !== undefined)
      },
      until,
      { timeout: 20_000, polling: 10 },
    )
    const harnessMs = performance.now() - started
    const result = await page.evaluate(() => {
      const g = globalThis as unknown as {
        __bench: Record<string, number>
        performance: {
          getEntriesByType: (type: string) => ReadonlyArray<Record<string, number | string>>
        }
      }
      const timing: Record<string, number> = {}
      const nav = g.performance.getEntriesByType("navigation")[0]
      if (nav !== undefined) {
        timing.html = nav.responseEnd as number
        timing.domContentLoaded = nav.domContentLoadedEventEnd as number
      }
      for (const r of g.performance.getEntriesByType("resource")) {
        const url = new URL(r.name as string)
        const name = url.pathname.startsWith("/assets/")
          ? `asset ${url.pathname.endsWith(".js") ? "js" : "css"}`
          : url.pathname.startsWith("/v1/")
            ? `${url.pathname.replace(/\/devices\/[^/]+\//, "/devices/ID/")}${url.search.includes("prefix=") ? "?prefix" : url.search.includes("status=") ? "?status" : ""}`
            : url.pathname
        // The first request of each kind (later ones are refreshes).
        if (timing[`${name} start`] !== undefined) continue
        timing[`${name} start`] = r.startTime as number
        timing[`${name} request`] = r.requestStart as number
        timing[`${name} first byte`] = r.responseStart as number
        timing[`${name} end`] = r.responseEnd as number
      }
      return { marks: { ...g.__bench }, timing }
    })
    // The page's main request once more from the loaded page, idle: the request alone, without
    // the page load's work competing for the two cores.
    await new Promise((r) => setTimeout(r, 200))
    result.timing.again = await page.evaluate(
      async ([url, key]) => {
        const started = performance.now()
        await (await fetch(url, { headers: { authorization: `Bearer ${key}` } })).text()
        return performance.now() - started
      },
      [again, KEY] as const,
    )
    return { ...result, harnessMs }
  } finally {
    await page.close()
  }
}

/** CPU time (user + system, reaped children included) of `root` and its live descendants, ms. */
const treeCpuMs = (root: (p: { pid: number; ppid: number; comm: string }) => boolean): number => {
  const procs: Array<{ pid: number; ppid: number; comm: string; ticks: number }> = []
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8")
      const close = stat.lastIndexOf(")")
      const comm = stat.slice(stat.indexOf("(") + 1, close)
      const f = stat.slice(close + 2).split(" ")
      // Fields after the name, from 3 (state): ppid is 4, utime 14, stime 15, cutime 16, cstime 17.
      const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])
      procs.push({ pid: Number(entry), ppid: Number(f[1]), comm, ticks })
    } catch {
      // Gone in between.
    }
  }
  const inTree = new Set(procs.filter(root).map((p) => p.pid))
  for (let grew = true; grew; ) {
    grew = false
    for (const p of procs)
      if (!inTree.has(p.pid) && inTree.has(p.ppid)) {
        inTree.add(p.pid)
        grew = true
      }
  }
  // 100 clock ticks a second on Linux.
  return procs.filter((p) => inTree.has(p.pid)).reduce((sum, p) => sum + p.ticks * 10, 0)
}
const platformCpuMs = () => treeCpuMs((p) => p.pid === platform!.pid)
/** Chromium: its top process is a child of this one. */
const chromiumCpuMs = () => treeCpuMs((p) => p.ppid === process.pid && /chrom/i.test(p.comm))

/** A page's loads, with the CPU the platform and Chromium spent per load (warm-up included). */
interface Series {
  readonly loads: ReadonlyArray<Load>
  readonly platformCpuMs: number
  readonly chromiumCpuMs: number
  /** Wall time per load, the harness's pauses and the tab's opening and closing included. */
  readonly wallMs: number
}

/** `loads` loads after one discarded warm-up; warm: tabs of one context; cold: a context each. */
const loadsOf = async (
  path: string,
  until: ReadonlyArray<string>,
  again: string,
  cold: boolean,
): Promise<Series> => {
  const out: Array<Load> = []
  const cpu0 = [platformCpuMs(), chromiumCpuMs()]
  const started = performance.now()
  let shared: BrowserContext | undefined
  const context = async () => {
    const c = await browser!.newContext({ viewport: { width: 1280, height: 800 } })
    await c.addInitScript(initScript)
    return c
  }
  try {
    for (let i = 0; i <= loads; i++) {
      if (!cold && shared === undefined) shared = await context()
      const c = cold || shared === undefined ? await context() : shared
      try {
        const l = await load(c, path, until, again)
        if (i > 0) out.push(l)
      } finally {
        if (cold) await c.close()
      }
    }
  } finally {
    await shared?.close()
  }
  return {
    loads: out,
    platformCpuMs: (platformCpuMs() - cpu0[0]!) / (loads + 1),
    chromiumCpuMs: (chromiumCpuMs() - cpu0[1]!) / (loads + 1),
    wallMs: (performance.now() - started) / (loads + 1),
  }
}

type Pick = (l: Load) => number | undefined
const medianOf = (ls: ReadonlyArray<Load>, pick: Pick) =>
  median(ls.map(pick).filter((n): n is number => n !== undefined))

const main = async () => {
  console.log(
    `bench/console: ${cpus().length} × ${cpus()[0]?.model ?? "?"}, Node ${process.version}, load ${loadavg()
      .map((n) => n.toFixed(1))
      .join(" ")}; data in ${dir}`,
  )
  const consoleDir = join(dir, "console-dist")
  let t = performance.now()
  execFileSync(
    join(root, "node_modules/.bin/vite"),
    ["build", "console", "--outDir", consoleDir, "--emptyOutDir", "--logLevel", "warn"],
    { cwd: root, timeout: 120_000, stdio: "inherit" },
  )
  console.log(`console built in ${((performance.now() - t) / 1000).toFixed(1)} s`)

  t = performance.now()
  const prepared = await prepare()
  console.log(`prepared in ${((performance.now() - t) / 1000).toFixed(1)} s`)

  t = performance.now()
  platform = await startPlatform({
    dataDir: dir,
    args: ["--config", join(dir, "config.json")],
    env: { SLUICE_CONSOLE_DIR: consoleDir },
  })
  const startSeconds = (performance.now() - t) / 1000
  console.log(`platform ready in ${startSeconds.toFixed(1)} s (configuration applied, every process up)`)

  // What the pages will show, checked once: the list is the 100,000-device registry.
  const first = await get("/v1/devices?limit=100")
  const online = await get("/v1/devices?limit=100&status=online")
  const firstDevices = first.devices as ReadonlyArray<{ lastSeen: number | null }>
  const onlineDevices = online.devices as ReadonlyArray<{ online: boolean }>
  console.log(
    `first page: ${firstDevices.length} of total ${first.total}, ${firstDevices.filter((d) => d.lastSeen !== null).length} with last seen; status=online: ${onlineDevices.filter((d) => d.online).length} online`,
  )
  if (first.total !== Number(args.devices) || firstDevices.length !== 100 || onlineDevices.length !== 100)
    throw new Error("the device list is not what was prepared")

  // The device page's own requests, as the console sends them (history: the last 15 min at 5 s).
  const now = Date.now()
  const aggregates = `/v1/devices/${HEAVY}/aggregates?from=${now - 900_000}&to=${now}&interval=5s&fn=avg&fields=temperature,humidity,battery`
  const points = ((await get(aggregates)).buckets as ReadonlyArray<unknown>).length
  console.log(`history of ${HEAVY}, last 15 min at 5 s: ${points} buckets`)

  const prefixed = "/v1/devices?prefix=dev-1&limit=10"
  const latest = `/v1/devices/${HEAVY}/latest`
  const classes = "/v1/device-classes"
  const deadLetters = `/v1/dead-letters?deviceId=${HEAVY}&limit=10`
  const api: Array<[string, ReadonlyArray<string>]> = [
    ["/v1/devices first page (limit 100)", ["/v1/devices?limit=100"]],
    ["/v1/devices status=online", ["/v1/devices?limit=100&status=online"]],
    ["/v1/devices status=offline", ["/v1/devices?limit=100&status=offline"]],
    ["fleet page's two at once (+ /v1/device-classes)", ["/v1/devices?limit=100", classes]],
    ["device page: /v1/devices?prefix=dev-1&limit=10", [prefixed]],
    ["device page: /latest of dev-1", [latest]],
    ["device page: /aggregates, 15 min at 5 s", [aggregates]],
    ["device page: /v1/device-classes", [classes]],
    ["device page: /v1/dead-letters?deviceId", [deadLetters]],
    ["device page's first four at once", [prefixed, classes, latest, deadLetters]],
  ]
  const apiRows: Array<[string, { p50: number; p99: number; max: number }]> = []
  for (const [label, paths] of api) {
    const r = await timeApi(paths)
    apiRows.push([label, r])
    console.log(`  ${label.padEnd(50)} p50 ${ms(r.p50).padStart(8)}  p99 ${ms(r.p99).padStart(8)}`)
  }

  browser = await launchChromium()
  // The platform's CPU at rest (the processor polls its shards, the registry is polled): 3 s.
  const idle0 = [platformCpuMs(), performance.now()]
  await new Promise((r) => setTimeout(r, 3_000))
  const idleCpuPerMs = (platformCpuMs() - idle0[0]!) / (performance.now() - idle0[1]!)
  const pages = {
    // Baseline: a fresh tab loading a small static file: what a tab costs Chromium without the console.
    blankWarm: await loadsOf("/favicon.svg", [], classes, false),
    blankCold: await loadsOf("/favicon.svg", [], classes, true),
    fleetWarm: await loadsOf("/", ["fleetRowFrame"], "/v1/devices?limit=100", false),
    fleetCold: await loadsOf("/", ["fleetRowFrame"], "/v1/devices?limit=100", true),
    deviceWarm: await loadsOf(`/devices/${HEAVY}`, ["latestFrame", "historyDrawnFrame"], latest, false),
    deviceCold: await loadsOf(`/devices/${HEAVY}`, ["latestFrame", "historyDrawnFrame"], latest, true),
  }

  console.log(
    `\nResults (${Number(args.devices).toLocaleString("en")} devices; ${HEAVY}: ${Number(prepared.heavyReadings).toLocaleString("en")} stored readings)\n`,
  )
  console.log("API (one after another, keep-alive)                  p50        p99")
  for (const [label, r] of apiRows)
    console.log(`${label.padEnd(50)} ${ms(r.p50).padStart(9)}  ${ms(r.p99).padStart(9)}`)

  console.log(`\nChromium, median of ${loads} loads, ms since navigation start          warm       cold`)
  const row = (label: string, ls: readonly [ReadonlyArray<Load>, ReadonlyArray<Load>], pick: Pick) =>
    console.log(
      `${label.padEnd(64)} ${ms(medianOf(ls[0], pick)).padStart(9)}  ${ms(medianOf(ls[1], pick)).padStart(9)}`,
    )
  /** A request's timeline: sent by the page, on the wire, first byte, whole answer. */
  const request = (label: string, ls: readonly [ReadonlyArray<Load>, ReadonlyArray<Load>], name: string) => {
    row(`    ${label} sent`, ls, (l) => l.timing[`${name} start`])
    row(`    ${label} request on the wire`, ls, (l) => l.timing[`${name} request`])
    row(`    ${label} first byte`, ls, (l) => l.timing[`${name} first byte`])
    row(`    ${label} answered`, ls, (l) => l.timing[`${name} end`])
  }
  const cpu = (warm: Series, cold: Series) => {
    for (const [label, pick] of [
      ["wall time per load (tab open to close)", (x: Series) => x.wallMs],
      ["platform CPU, above its rest rate", (x: Series) => x.platformCpuMs - idleCpuPerMs * x.wallMs],
      ["Chromium CPU (all its processes)", (x: Series) => x.chromiumCpuMs],
    ] as const)
      console.log(
        `  per load: ${label}`.padEnd(65) + `${ms(pick(warm)).padStart(9)}  ${ms(pick(cold)).padStart(9)}`,
      )
  }
  const fleet = [pages.fleetWarm.loads, pages.fleetCold.loads] as const
  const device = [pages.deviceWarm.loads, pages.deviceCold.loads] as const
  console.log(`platform at rest: ${(idleCpuPerMs * 1000).toFixed(0)} ms CPU a second`)
  console.log("baseline: a fresh tab loading /favicon.svg")
  cpu(pages.blankWarm, pages.blankCold)
  console.log("fleet page (/)")
  row("  first device row in the DOM", fleet, (l) => l.marks.fleetRow)
  row("  first device row painted (next frame)  <- time to first render", fleet, (l) => l.marks.fleetRowFrame)
  row("  harness: before page.goto -> seen by waitForFunction", fleet, (l) => l.harnessMs)
  row("    index.html received", fleet, (l) => l.timing.html)
  row("    app script received", fleet, (l) => l.timing["asset js end"])
  row("    app's first render in the DOM", fleet, (l) => l.marks.app)
  request("GET /v1/devices", fleet, "/v1/devices")
  row("  the same GET again from the loaded page, idle (duration)", fleet, (l) => l.timing.again)
  cpu(pages.fleetWarm, pages.fleetCold)
  console.log(`device page (/devices/${HEAVY})`)
  row("  latest values in the DOM", device, (l) => l.marks.latest)
  row("  latest values painted (next frame)  <- time to latest shown", device, (l) => l.marks.latestFrame)
  row("  history plot has data (data-points > 0)", device, (l) => l.marks.historyData)
  row("  history series stroked on the canvas", device, (l) => l.marks.historyDrawn)
  row("  history plot painted (next frame)  <- time to plot drawn", device, (l) => l.marks.historyDrawnFrame)
  row("  harness: before page.goto -> both seen by waitForFunction", device, (l) => l.harnessMs)
  row("    app script received", device, (l) => l.timing["asset js end"])
  row("    app's first render in the DOM", device, (l) => l.marks.app)
  request("GET /latest", device, "/v1/devices/ID/latest")
  row("    GET /v1/devices?prefix answered", device, (l) => l.timing["/v1/devices?prefix end"])
  row("    GET /v1/device-classes answered", device, (l) => l.timing["/v1/device-classes end"])
  request("GET /aggregates", device, "/v1/devices/ID/aggregates")
  row("  GET /latest again from the loaded page, idle (duration)", device, (l) => l.timing.again)
  cpu(pages.deviceWarm, pages.deviceCold)
  const spread = (ls: ReadonlyArray<Load>, name: string) => {
    const xs = ls.map((l) => l.marks[name]!).sort((a, b) => a - b)
    return `${ms(xs[0]!)}–${ms(xs.at(-1)!)}`
  }
  console.log(
    `\nranges (warm): fleet row painted ${spread(pages.fleetWarm.loads, "fleetRowFrame")}; latest painted ${spread(pages.deviceWarm.loads, "latestFrame")}; plot painted ${spread(pages.deviceWarm.loads, "historyDrawnFrame")}`,
  )
  console.log(`prepared: ${JSON.stringify(prepared)}; platform start ${startSeconds.toFixed(1)} s`)
}

try {
  await main()
} finally {
  await browser?.close().catch(() => {})
  const code = await platform?.stop()
  if (code !== undefined && code !== 0) console.error(`platform exited with ${code}:\n${platform?.output()}`)
  clearTimeout(watchdog)
  if (args.dir === undefined) rmSync(dir, { recursive: true, force: true })
}
