// Module resolve hook for recordImports.mjs: runs first in the chain, lets the next hook (tsx)
// resolve, and appends the result.
import { appendFileSync } from "node:fs"

const log = process.env.SLUICE_IMPORT_LOG

export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context)
  if (log) appendFileSync(log, `${resolved.url}\n`)
  return resolved
}
