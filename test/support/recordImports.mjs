// Records every module a process loads (its resolved URL, one per line) into the file named by
// SLUICE_IMPORT_LOG: `node --import tsx --import ./test/support/recordImports.mjs ...`. Tests use it
// to prove what a role's process does not load.
import { register } from "node:module"

register("./recordImportsHooks.mjs", import.meta.url)
