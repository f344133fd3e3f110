import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as SqliteStreamLog from "../../src/stream/SqliteStreamLog.js"
import { streamLogContract } from "./contract.js"

streamLogContract("embedded (SQLite)", {
  env: () => ({ id: mkdtempSync(join(tmpdir(), "sluice-stream-")) }),
  open: (env) => SqliteStreamLog.layerWith(SqliteStreamLog.defaults(env.id)),
})
