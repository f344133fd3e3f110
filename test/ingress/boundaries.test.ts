/** Ingestion never writes to storage directly (guarantee 2) and knows nothing of the actors. */
import { readdirSync, readFileSync } from "node:fs"
import { dirname, join, relative, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "@effect/vitest"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
const ingress = join(root, "src/ingress")

/** Every module specifier of a file: static imports and re-exports, side-effect imports, dynamic imports. */
const specifiers = (source: string) =>
  [
    ...source.matchAll(/\b(?:import|export)\s[^'"]*?\bfrom\s*["']([^"']+)["']/g),
    ...source.matchAll(/\bimport\s*["']([^"']+)["']/g),
    ...source.matchAll(/\bimport\s*\(\s*["']([^"']+)["']\s*\)/g),
  ].map((m) => m[1]!)

const files = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? files(join(dir, entry.name))
      : entry.name.endsWith(".ts")
        ? [join(dir, entry.name)]
        : [],
  )

describe("src/ingress", () => {
  it("imports nothing from src/storage or src/actors", () => {
    const sources = files(ingress)
    expect(sources.length).toBeGreaterThan(0)
    const offending: Array<string> = []
    let relativeImports = 0
    for (const file of sources) {
      for (const specifier of specifiers(readFileSync(file, "utf8"))) {
        if (!specifier.startsWith(".")) continue
        relativeImports++
        const target = relative(join(root, "src"), resolve(dirname(file), specifier))
        if (/^(storage|actors)([/\\]|$)/.test(target))
          offending.push(`${relative(root, file)} -> ${specifier}`)
      }
    }
    // The scan sees the imports it should (ingress does import the stream and tenancy).
    expect(relativeImports).toBeGreaterThan(5)
    expect(offending).toEqual([])
  })

  it("the scan catches every import form", () => {
    const sample = [
      'import { A } from "../storage/TelemetryStore.js"',
      'import type { B } from "../actors/LiveFeed.js"',
      'export * from "../storage/X.js"',
      'import "../actors/Y.js"',
      'const z = await import("../storage/Z.js")',
      "import {\n  C,\n  D,\n} from '../actors/W.js'",
    ].join("\n")
    expect(specifiers(sample)).toHaveLength(6)
  })
})
