/**
 * The web console end to end, in real Chromium (Debian's `/usr/bin/chromium`, driven by
 * playwright-core: no browser download) against the real platform as `npm start` runs it
 * (supervisor, ingress and processor+serving in their own processes), with devices publishing
 * over real MQTT. Each step is bounded; a screenshot of every page lands in
 * `test-results/console/`, and the device page's also in `docs/console-device.png` for the README.
 */
import { execFileSync } from "node:child_process"
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import mqtt from "mqtt"
import type { Browser, Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { launchChromium } from "../support/chromium.js"
import { DEMO_KEY, eventually, type Platform, startPlatform } from "./platform.js"

const root = fileURLToPath(new URL("../..", import.meta.url))
const shots = join(root, "test-results", "console")

let platform: Platform
let browser: Browser
let page: Page

/** What the test reads of the page's DOM (the test is compiled without the DOM types). */
interface Queryable {
  querySelector: (selector: string) => { getAttribute: (name: string) => string | null } | null
}

/** How many entries the page's sessionStorage and localStorage hold. */
const storedKeys = (p: Page) =>
  p.evaluate(() => {
    const g = globalThis as unknown as {
      sessionStorage: { length: number }
      localStorage: { length: number }
    }
    return [g.sessionStorage.length, g.localStorage.length]
  })

const screenshot = (name: string) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true })

/** Connects as a device over MQTT, retrying while the registry change reaches ingress (bounded). */
const connectDevice = async (deviceId: string, password: string, withinMs = 5_000) => {
  const deadline = Date.now() + withinMs
  for (;;) {
    try {
      return await mqtt.connectAsync(platform.mqttUrl, {
        username: deviceId,
        password,
        clientId: deviceId,
        reconnectPeriod: 0,
        connectTimeout: 3_000,
      })
    } catch (error) {
      if (Date.now() > deadline) throw error
      await new Promise((r) => setTimeout(r, 200))
    }
  }
}

/** A thermostat message as its class expects it (temp_f converts to °C). */
const thermostat = (id: string, ts: number, tempF: number, humidity: number) =>
  JSON.stringify({ id, ts, temp_f: tempF, humidity, battery: 90 })

beforeAll(async () => {
  mkdirSync(shots, { recursive: true })
  // The console as its sources are now (`npm install` built it once; a change since would be missed).
  execFileSync(join(root, "node_modules", ".bin", "vite"), ["build", "console", "--logLevel", "warn"], {
    cwd: root,
    timeout: 60_000,
    stdio: "inherit",
  })
  ;[platform, browser] = await Promise.all([startPlatform(), launchChromium()])
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } })
  page = await context.newPage()
  page.setDefaultTimeout(10_000)
}, 90_000)

afterAll(async () => {
  await browser?.close()
  await platform?.stop()
})

const signIn = async (key: string) => {
  await page.getByLabel("API key").fill(key)
  await page.getByRole("button", { name: "Sign in" }).click()
}

describe("the web console in Chromium", () => {
  it("is served at / with its assets, and refuses a wrong key at sign-in", async () => {
    const response = await page.goto(platform.httpUrl)
    expect(response?.status()).toBe(200)
    expect(response?.headers()["cache-control"]).toBe("no-cache")
    // Hashed assets are cached for good and typed; a missing one is a 404, never index.html;
    // a client route is index.html; an unknown API path stays the API's.
    const script = await page.locator("script[type=module]").getAttribute("src")
    const asset = await fetch(`${platform.httpUrl}${script}`)
    expect([asset.status, asset.headers.get("content-type"), asset.headers.get("cache-control")]).toEqual([
      200,
      "text/javascript; charset=utf-8",
      "public, max-age=31536000, immutable",
    ])
    expect((await fetch(`${platform.httpUrl}/assets/missing-0000.js`)).status).toBe(404)
    const route = await fetch(`${platform.httpUrl}/devices/thermo-1`)
    expect([route.status, route.headers.get("content-type")]).toEqual([200, "text/html; charset=utf-8"])
    expect((await fetch(`${platform.httpUrl}/v1/no-such-endpoint`)).status).toBe(404)

    // From the keyboard: the key field has focus, Enter submits.
    await page.keyboard.type("not-a-key-0123456789")
    await page.keyboard.press("Enter")
    await expect.poll(() => page.getByRole("alert").textContent()).toContain("This API key was refused")
    expect((await storedKeys(page))[0]).toBe(0)
    await screenshot("sign-in-refused")
  }, 20_000)

  it("signs in with a tenant key, kept in sessionStorage only, and lists the fleet, paginated and filtered", async () => {
    await signIn(DEMO_KEY)
    const rows = page.locator('[data-testid="fleet"] tbody tr')
    await expect.poll(() => rows.count()).toBe(100)
    expect(await storedKeys(page)).toEqual([1, 0])
    await expect.poll(() => page.getByRole("button", { name: "Next" }).isEnabled()).toBe(true)
    await screenshot("fleet")

    await page.getByLabel("Device id starts with").fill("thermo-")
    await expect
      .poll(async () => (await rows.locator("td:first-child").allTextContents()).join(","))
      .toBe("thermo-1,thermo-2,thermo-3")
    await page.setViewportSize({ width: 390, height: 844 })
    await screenshot("fleet-phone")
    await page.setViewportSize({ width: 1280, height: 800 })
  }, 30_000)

  it("shows a reading published over MQTT on the device page's live plot within 2 s, and stored history", async () => {
    await page.getByRole("link", { name: "thermo-1", exact: true }).click()
    await expect.poll(() => page.getByTestId("live-state").textContent()).toBe("connected")
    const device = await connectDevice("thermo-1", "thermo-1-secret")
    try {
      // History over the last 10 minutes (device time), then one reading now.
      const now = Date.now()
      for (let i = 10; i >= 1; i--)
        await device.publishAsync(
          "devices/thermo-1/telemetry",
          thermostat(`console-h-${i}`, now - i * 60_000, 68 + (i % 4), 40 + i),
          { qos: 1 },
        )
      const published = Date.now()
      await device.publishAsync(
        "devices/thermo-1/telemetry",
        thermostat("console-live", Date.now(), 77, 42.5),
        {
          qos: 1,
        },
      )
      // Polled in the page every 20 ms: the live plot's newest point is the reading just published.
      await page.waitForFunction(
        () => {
          const el = (globalThis as unknown as { document: Queryable }).document.querySelector(
            '[data-testid="live-plot"]',
          )
          const latest = JSON.parse(el?.getAttribute("data-latest") ?? "{}") as Record<string, number>
          return latest.humidity === 42.5 && Math.abs(latest.temperature! - 25) < 1e-6
        },
        undefined,
        { timeout: 2_000, polling: 20 },
      )
      expect(Date.now() - published).toBeLessThan(2_000)
    } finally {
      await device.endAsync()
    }
    // The latest values carry their units; the history plot (refreshed every 5 s) shows stored buckets.
    await expect.poll(() => page.getByTestId("latest-values").textContent()).toContain("42.5 %")
    expect(await page.getByTestId("latest-values").textContent()).toContain("25 °C")
    await expect
      .poll(async () => Number(await page.getByTestId("history-plot").getAttribute("data-points")), {
        timeout: 15_000,
      })
      .toBeGreaterThanOrEqual(5)
    await screenshot("device")
    await page.screenshot({ path: join(root, "docs", "console-device.png") })
  }, 40_000)

  it("creates a device, shows its credential once with a publish line, and the device publishes with it", async () => {
    await page.getByRole("link", { name: "Add device" }).first().click()
    await page.getByLabel("Device id").fill("console-made-1")
    await page.getByLabel("Device class").selectOption("thermostat")
    await page.getByRole("button", { name: "Create device" }).click()
    const credential = (await page.getByTestId("credential").textContent()) ?? ""
    expect(credential.length).toBeGreaterThan(10)
    const line = (await page.getByTestId("mosquitto-line").textContent()) ?? ""
    expect(line).toContain(`-u console-made-1 -P '${credential}'`)
    expect(line).toContain("-t devices/console-made-1/telemetry")
    await screenshot("add-device")

    // Connected: ingress has the new device (within its registry poll). One session per client
    // id: this one ends before mosquitto_pub takes the id.
    await (await connectDevice("console-made-1", credential)).endAsync()

    // The shown lines run as they are, once pointed at this platform's ports.
    await page.getByLabel("MQTT broker (host:port)").fill(`127.0.0.1:${platform.ports.mqtt}`)
    await page.getByLabel("HTTP ingest URL").fill(platform.ingestUrl)
    const mosquitto = (await page.getByTestId("mosquitto-line").textContent()) ?? ""
    const curl = (await page.getByTestId("curl-line").textContent()) ?? ""
    expect(mosquitto).toContain(`-p ${platform.ports.mqtt}`)
    execFileSync("bash", ["-c", mosquitto], { timeout: 10_000, stdio: "pipe" })
    const status = execFileSync("bash", ["-c", `${curl} -sS -o /dev/null -w '%{http_code}'`], {
      timeout: 10_000,
      encoding: "utf8",
    })
    expect(status).toBe("202")

    // The newest reading by device time, so the device page shows it as latest.
    const device = await connectDevice("console-made-1", credential)
    await device.publishAsync(
      "devices/console-made-1/telemetry",
      thermostat("made-1", Date.now(), 50, 33.3),
      {
        qos: 1,
      },
    )
    await device.endAsync()
    await page.getByRole("link", { name: "Open console-made-1" }).click()
    await expect
      .poll(() => page.getByTestId("latest-values").textContent(), { timeout: 10_000 })
      .toContain("33.3 %")
  }, 30_000)

  it("lists dead letters with their reason and raw payload, filtered by device", async () => {
    const device = await connectDevice("thermo-2", "thermo-2-secret")
    await device.publishAsync("devices/thermo-2/telemetry", thermostat("bad-1", Date.now(), 9_999, 40), {
      qos: 1,
    })
    await device.endAsync()
    await page.getByRole("link", { name: "Dead letters", exact: true }).click()
    await page.getByLabel("Device id (exact)").fill("thermo-2")
    const table = page.getByTestId("dead-letters")
    await eventually(
      async () => {
        await page.getByRole("button", { name: "Filter" }).click()
        return (await table.count()) > 0 ? ((await table.textContent()) ?? "") : ""
      },
      (text) => text.includes("9999"),
    )
    const text = (await table.textContent()) ?? ""
    expect(text).toContain("thermo-2")
    expect(text).toMatch(/temperature/i)
    await screenshot("dead-letters")
  }, 40_000)

  it("says so when a device does not exist, and sends a revoked key back to sign-in with the reason", async () => {
    const made = await fetch(`${platform.httpUrl}/v1/tenants/demo/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${DEMO_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ role: "read", name: "console-test" }),
    })
    const key = (await made.json()) as { key: string; id: string }
    // A new key opens the API once the registry poll (1 s) brought it to the serving process.
    await eventually(
      () =>
        fetch(`${platform.httpUrl}/v1/device-classes`, { headers: { authorization: `Bearer ${key.key}` } }),
      (r) => r.status === 200,
    )
    const context = await browser.newContext({ viewport: { width: 390, height: 844 } })
    const other = await context.newPage()
    try {
      await other.goto(`${platform.httpUrl}/devices/no-such-device`)
      await other.getByLabel("API key").fill(key.key)
      await other.getByRole("button", { name: "Sign in" }).click()
      await expect
        .poll(() => other.getByRole("alert").first().textContent(), { timeout: 8_000 })
        .toContain('No device "no-such-device" in this tenant')

      const revoked = await fetch(`${platform.httpUrl}/v1/tenants/demo/keys/${key.id}`, {
        method: "DELETE",
        headers: { authorization: `Bearer ${DEMO_KEY}` },
      })
      expect(revoked.status).toBe(204)
      // Revocation reaches the serving process within its registry poll (1 s); each page change asks again.
      let turn = 0
      await eventually(
        async () => {
          if (await other.getByLabel("API key").isVisible()) return true
          const name = ++turn % 2 === 0 ? "Dead letters" : "Device classes"
          await other.getByRole("link", { name, exact: true }).click()
          await new Promise((r) => setTimeout(r, 300))
          return other.getByLabel("API key").isVisible()
        },
        (signedOut) => signedOut,
      )
      expect(await other.getByRole("status").textContent()).toContain("Your API key was refused")
      expect((await storedKeys(other))[0]).toBe(0)
      await other.screenshot({ path: join(shots, "key-revoked-phone.png"), fullPage: true })
    } finally {
      await context.close()
    }
  }, 30_000)

  it("shows device classes and the overview from the platform's metrics, then signs out", async () => {
    await page.getByRole("link", { name: "Device classes" }).click()
    await expect.poll(() => page.locator("table").textContent()).toContain("power_meter")
    await screenshot("classes")

    await page.getByRole("link", { name: "Overview" }).click()
    // Rates are counters' change while the page watches: publish while it does.
    await expect
      .poll(() => page.getByTestId("ingest-rate").textContent(), { timeout: 5_000 })
      .toMatch(/^Ingest rate0 msg\/s/)
    const device = await connectDevice("thermo-3", "thermo-3-secret")
    for (let i = 0; i < 20; i++)
      await device.publishAsync("devices/thermo-3/telemetry", thermostat(`ov-${i}`, Date.now(), 70, 40), {
        qos: 1,
      })
    await device.endAsync()
    const positive = /^[A-Za-z ]+(0\.\d*[1-9]|[1-9][\d,.]*) /
    await expect
      .poll(() => page.getByTestId("ingest-rate").textContent(), { timeout: 8_000 })
      .toMatch(positive)
    await expect
      .poll(() => page.getByTestId("stored-rate").textContent(), { timeout: 8_000 })
      .toMatch(positive)
    expect(await page.getByTestId("connected-devices").textContent()).toMatch(/^Connected devices[1-9]/)
    await screenshot("overview")

    await page.getByRole("button", { name: "Sign out" }).click()
    await expect.poll(() => page.getByLabel("API key").isVisible()).toBe(true)
    expect((await storedKeys(page))[0]).toBe(0)
  }, 30_000)
})
