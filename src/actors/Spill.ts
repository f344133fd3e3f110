/**
 * Where a tenant's stored-to-be readings wait when its inserts keep failing, so that one
 * tenant's storage trouble does not hold the shared shard checkpoints (and with them every other
 * tenant). A SQLite file beside the log (`$SLUICE_DATA_DIR/spill.sqlite`), fsync'd on every put:
 * a spilled batch is as durable as the stream record it came from, so its shard may checkpoint.
 * Each entry keeps its insert dedup token, so draining it is exactly-once like a normal insert.
 */
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import Database from "better-sqlite3"
import { Data, Effect, Option, type Scope } from "effect"
import type { DeadLetter, TelemetryRow } from "../storage/TelemetryStore.js"

export interface SpillEntry {
  readonly id: number
  readonly token: string
  readonly rows: ReadonlyArray<TelemetryRow>
  readonly deadLetters: ReadonlyArray<DeadLetter>
}

/** The spill is at its byte budget: the tenant's batches wait in the stream instead. */
export class SpillFull extends Data.TaggedError("SpillFull")<{ readonly bytes: number }> {}

export interface Spill {
  /** Stores a batch durably; fails when the spill is at its budget or the disk fails. */
  readonly put: (
    tenantId: string,
    entry: Omit<SpillEntry, "id">,
  ) => Effect.Effect<void, SpillFull | SpillUnavailable>
  /** The tenant's oldest spilled batch. */
  readonly oldest: (tenantId: string) => Effect.Effect<Option.Option<SpillEntry>, SpillUnavailable>
  readonly remove: (id: number) => Effect.Effect<void, SpillUnavailable>
  /** Tenants with spilled batches (their actors must start and drain them after a restart). */
  readonly tenants: Effect.Effect<ReadonlyArray<string>, SpillUnavailable>
}

export class SpillUnavailable extends Data.TaggedError("SpillUnavailable")<{ readonly reason: string }> {}

const failure = (cause: unknown) =>
  new SpillUnavailable({ reason: cause instanceof Error ? cause.message : String(cause) })

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
        catch: failure,
      }),
      (db) => Effect.sync(() => db.close()),
    )
    const insert = db.prepare<[string, string, string]>(
      "INSERT INTO spill (tenant_id, token, body) VALUES (?, ?, ?)",
    )
    const first = db.prepare<[string], { id: number; token: string; body: string }>(
      "SELECT id, token, body FROM spill WHERE tenant_id = ? ORDER BY id LIMIT 1",
    )
    const remove = db.prepare<[number]>("DELETE FROM spill WHERE id = ?")
    const tenants = db.prepare<[], { tenant_id: string }>("SELECT DISTINCT tenant_id FROM spill")
    let bytes = (db.prepare("SELECT coalesce(sum(length(body)), 0) AS n FROM spill").get() as { n: number }).n

    const spill: Spill = {
      put: (tenantId, entry) =>
        Effect.suspend((): Effect.Effect<void, SpillFull | SpillUnavailable> => {
          const body = JSON.stringify({ rows: entry.rows, deadLetters: entry.deadLetters })
          if (bytes + body.length > maxBytes) return Effect.fail(new SpillFull({ bytes }))
          return Effect.try({
            try: () => {
              insert.run(tenantId, entry.token, body)
              bytes += body.length
            },
            catch: failure,
          })
        }),
      oldest: (tenantId) =>
        Effect.try({
          try: () =>
            Option.map(Option.fromNullable(first.get(tenantId)), (row) => {
              const { rows, deadLetters } = JSON.parse(row.body) as Pick<SpillEntry, "rows" | "deadLetters">
              return { id: row.id, token: row.token, rows, deadLetters }
            }),
          catch: failure,
        }),
      remove: (id) =>
        Effect.try({
          try: () => {
            const row = db
              .prepare<[number], { n: number }>("SELECT length(body) AS n FROM spill WHERE id = ?")
              .get(id)
            remove.run(id)
            bytes -= row?.n ?? 0
          },
          catch: failure,
        }),
      tenants: Effect.try({ try: () => tenants.all().map((r) => r.tenant_id), catch: failure }),
    }
    return spill
  })
