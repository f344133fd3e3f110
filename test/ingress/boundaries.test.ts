/**
 * Ingestion never writes to storage directly (guarantee 2) and knows nothing of the actors; the
 * serving tier knows nothing of ingress (device ingest is the ingress role's listener).
 */
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

/** Relative imports of the files under `dir` whose target (relative to src/) matches `forbidden`. */
const importsInto = (dir: string, forbidden: RegExp) => {
  const sources = files(dir)
  expect(sources.length).toBeGreaterThan(0)
  const offending: Array<string> = []
  let relativeImports = 0
  for (const file of sources) {
    for (const specifier of specifiers(readFileSync(file, "utf8"))) {
      if (!specifier.startsWith(".")) continue
      relativeImports++
      const target = relative(join(root, "src"), resolve(dirname(file), specifier))
      if (forbidden.test(target)) offending.push(`${relative(root, file)} -> ${specifier}`)
    }
  }
  return { relativeImports, offending }
}

describe("tier boundaries", () => {
  it("src/ingress imports nothing from src/storage or src/actors", () => {
    const { relativeImports, offending } = importsInto(ingress, /^(storage|actors)([/\\]|$)/)
    // The scan sees the imports it should (ingress does import the stream and tenancy).
    expect(relativeImports).toBeGreaterThan(5)
    expect(offending).toEqual([])
  })

  it("src/serving imports nothing from src/ingress", () => {
    const { relativeImports, offending } = importsInto(join(root, "src/serving"), /^ingress([/\\]|$)/)
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
