/** `npm start` with a bad configuration file refuses to start, naming the file, the path and the reason. */
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const root = fileURLToPath(new URL("../..", import.meta.url))

describe("start-up with a bad configuration file", () => {
  it("exits 1 with the file, the path inside it and the reason", () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-badconfig-"))
    const file = join(dir, "bad.yaml")
    writeFileSync(
      file,
      readFileSync(join(root, "config/demo.yaml"), "utf8").replace(
        "tenant: demo, class: power_meter",
        "tenant: demo, class: power_metre",
      ),
    )
    const run = spawnSync(
      process.execPath,
      [
        "--import",
        "tsx",
        "src/main.ts",
        "--config",
        file,
        "--data-dir",
        join(dir, "data"),
        "--mqtt-port",
        "0",
        "--http-port",
        "0",
      ],
      { cwd: root, encoding: "utf8", timeout: 60_000 },
    )
    expect(run.status).toBe(1)
    expect(run.stderr).toContain(`${file}: devices[3].class: unknown device class "power_metre"`)
  })
})
