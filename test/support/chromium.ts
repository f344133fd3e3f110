/**
 * Debian's Chromium (`/usr/bin/chromium`, installed by `.ci/run`) driven by playwright-core: no
 * browser download. The background-networking flags keep it from calling out of a closed network,
 * where each refused connection would otherwise slow it down.
 */
import { type Browser, chromium } from "playwright-core"

export const launchChromium = (): Promise<Browser> =>
  chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: 30_000,
  })
