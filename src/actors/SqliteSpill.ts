/**
 * The spill in a SQLite file beside the log (`$SLUICE_DATA_DIR/spill.sqlite`), the default: WAL,
 * synchronous=FULL, so a put is fsync'd before it returns. Entries are rows with an autoincrement
 * id, so a tenant's oldest is its smallest id. The byte budget is the bodies' total length,
 * counted from the file at open and kept by this process's puts and removes. Durable as this
 * machine's disk: see `Spill.ts` for the contract and `S3Spill.ts` for the shared backend.
 */
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import Database from "better-sqlite3"
import { Effect, Option, type Scope } from "effect"
import {
  decodeBody,
  encodeBody,
  type Spill,
  type SpillEntry,
  SpillFull,
  type SpillUnavailable,
  unavailable,
} from "./Spill.js"

/** Opens the spill in `dataDir`, closed with the scope. */
export const make = (
  dataDir: string,
  maxBytes: number,
): Effect.Effect<Spill, SpillUnavailable, Scope.Scope> =>
  Effect.gen(function* () {
    const db = yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          mkdirSync(dataDir, { recursive: true })
          const db = new Database(join(dataDir, "spill.sqlite"))
          db.pragma("journal_mode = WAL")
          db.pragma("synchronous = FULL")
          db.exec(`CREATE TABLE IF NOT EXISTS spill (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            tenant_id TEXT NOT NULL,
            token TEXT NOT NULL,
            body TEXT NOT NULL
          )`)
          db.exec("CREATE INDEX IF NOT EXISTS spill_tenant ON spill (tenant_id, id)")
          return db
        },
        catch: unavailable,
      }),
      (db) => Effect.sync(() => db.close()),
    )
    const insert = db.prepare<[string, string, string]>(
      "INSERT INTO spill (tenant_id, token, body) VALUES (?, ?, ?)",
    )
    const first = db.prepare<[string], { id: number; token: string; body: string }>(
      "SELECT id, token, body FROM spill WHERE tenant_id = ? ORDER BY id LIMIT 1",
    )
    const remove = db.prepare<[number], { n: number }>(
      "DELETE FROM spill WHERE id = ? RETURNING length(body) AS n",
    )
    const tenants = db.prepare<[], { tenant_id: string }>("SELECT DISTINCT tenant_id FROM spill")
    let bytes = (db.prepare("SELECT coalesce(sum(length(body)), 0) AS n FROM spill").get() as { n: number }).n

    const spill: Spill = {
      put: (tenantId, entry) =>
        Effect.suspend((): Effect.Effect<void, SpillFull | SpillUnavailable> => {
          const body = encodeBody({ rows: entry.rows, deadLetters: entry.deadLetters })
          if (bytes + body.length > maxBytes) return Effect.fail(new SpillFull({ bytes }))
          return Effect.try({
            try: () => {
              insert.run(tenantId, entry.token, body)
              bytes += body.length
            },
            catch: unavailable,
          })
        }),
      oldest: (tenantId) =>
        Effect.try({
          try: () =>
            Option.map(Option.fromNullable(first.get(tenantId)), (row) => {
              const { rows, deadLetters } = decodeBody<Pick<SpillEntry, "rows" | "deadLetters">>(row.body)
              return { id: String(row.id), token: row.token, rows, deadLetters }
            }),
          catch: unavailable,
        }),
      remove: (id) =>
        Effect.try({
          try: () => {
            // Gone already (removed by another connection to the file): nothing to subtract.
            bytes -= remove.get(Number(id))?.n ?? 0
          },
          catch: unavailable,
        }),
      tenants: Effect.try({ try: () => tenants.all().map((r) => r.tenant_id), catch: unavailable }),
    }
    return spill
  })
