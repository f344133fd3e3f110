/**
 * The device registry on one machine: `$SLUICE_DATA_DIR/registry.sqlite`, a file of its own that
 * every process of the machine opens — ingress workers, the processor and serving read it; the
 * admin API and `sluice apply` write it. WAL, so readers never wait for the writer.
 *
 * Three tables:
 * - `rows (kind, id, body, revision)`: every live row, its value as JSON, and the revision that
 *   last wrote it (primary key kind + id; an index on revision for `changesSince`).
 * - `removed (kind, id, revision)`: a tombstone per row removed, at the revision that removed it,
 *   so a reader catching up learns of removals. A (kind, id) is in one table or the other: a put
 *   deletes the row's tombstone, a remove deletes the row — so a row removed and put again is
 *   reported as put, and one put and removed again as removed, by whichever came last.
 * - `meta (key, value)`: `revision`, the registry's revision (0 when new).
 *
 * A commit is one BEGIN IMMEDIATE transaction (one writer at a time across processes): it reads
 * the revision, fails RegistryConflict unless it is the one the writer expected, writes the rows
 * and tombstones at expected + 1 and stores that revision; with synchronous=FULL (the default)
 * it is on disk when the commit returns. An empty batch writes nothing, but is still checked:
 * it fails RegistryConflict unless the registry is at `expectedRevision`, so "nothing to change"
 * is never concluded from a stale read. Reads (`load`, `changesSince`) are one read transaction
 * each, so they see one revision and its rows together.
 *
 * A stored body is checked as it is read: valid JSON of its kind's shape (the types of every
 * field, not the content rules `RegistryState.ts` enforces before a write) with the id it is
 * stored under. One that is not is corruption — reported as RegistryUnavailable naming the kind
 * and id, for every read that meets it, rather than a crash or a silently missing row. A commit
 * checks each row it puts the same way before it takes the lock, so a value JSON cannot carry
 * (NaN, a cast) fails its writer (RegistryUnavailable, naming the row) instead of every reader.
 *
 * Tombstones are kept for good (a few dozen bytes per removed row): `changesSince` has no way to
 * tell a reader that history it needs was pruned.
 */
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import Database from "better-sqlite3"
import { Effect, Layer, type Scope } from "effect"
import { dataDir as dataDirConfig } from "../platform/DataDir.js"
import {
  type Changes,
  type Kind,
  Registry,
  type RegistryApi,
  RegistryConflict,
  RegistryUnavailable,
} from "./Registry.js"
import { KINDS, type StoredRow, stateOf, toRows, toStored } from "./RegistryRows.js"

export interface SqliteRegistryConfig {
  /** The data directory (`registry.sqlite` in it). */
  readonly dataDir: string
  /**
   * `true` (default): fsync every commit (synchronous=FULL). Commits are rare (an admin call, an
   * apply) and a device created and acknowledged must not vanish in a power loss.
   */
  readonly fsync?: boolean
  /**
   * How long a statement waits for another process's write transaction, ms (default 5,000, as
   * the embedded log). Only writers wait on each other: in WAL, reads never wait for a writer.
   * The wait blocks the event loop (better-sqlite3 is synchronous).
   */
  readonly busyTimeoutMs?: number
}

/** The registry's file in a data directory. */
export const FILE_NAME = "registry.sqlite"

export const DEFAULT_BUSY_TIMEOUT_MS = 5_000

// Every failure of the store itself (SQLITE_BUSY past the busy timeout, I/O, a malformed file)
// is "did not answer": the caller retries.
const unavailable = (operation: string) => (cause: unknown) =>
  new RegistryUnavailable({ operation, reason: cause instanceof Error ? cause.message : String(cause) })

/** Creates what is missing; run in one immediate transaction so concurrent openers see all or nothing. */
const createSchema = (db: Database.Database) => {
  db.exec(`CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
  ) WITHOUT ROWID`)
  db.exec("INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0)")
  db.exec(`CREATE TABLE IF NOT EXISTS rows (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    revision INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
  ) WITHOUT ROWID`)
  db.exec("CREATE INDEX IF NOT EXISTS rows_by_revision ON rows (revision)")
  db.exec(`CREATE TABLE IF NOT EXISTS removed (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
  ) WITHOUT ROWID`)
  db.exec("CREATE INDEX IF NOT EXISTS removed_by_revision ON removed (revision)")
}

/** Opens (or creates) `dataDir/registry.sqlite`; the scope closes it. */
export const make = (
  config: SqliteRegistryConfig,
): Effect.Effect<RegistryApi, RegistryUnavailable, Scope.Scope> =>
  Effect.gen(function* () {
    const db = yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          mkdirSync(config.dataDir, { recursive: true })
          return new Database(join(config.dataDir, FILE_NAME), {
            timeout: config.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS,
          })
        },
        catch: unavailable("open"),
      }),
      (db) => Effect.sync(() => db.close()),
    )
    yield* Effect.try({
      try: () => {
        db.pragma("journal_mode = WAL")
        db.pragma(`synchronous = ${(config.fsync ?? true) ? "FULL" : "NORMAL"}`)
        // Immediate, so processes starting together on a fresh directory cannot race the DDL.
        db.transaction(createSchema).immediate(db)
      },
      catch: unavailable("open"),
    })

    const selectRevision = db.prepare<[], { value: number }>("SELECT value FROM meta WHERE key = 'revision'")
    const updateRevision = db.prepare<[number]>("UPDATE meta SET value = ? WHERE key = 'revision'")
    const selectAll = db.prepare<[], StoredRow>("SELECT kind, id, body FROM rows ORDER BY kind, id")
    const selectPutSince = db.prepare<[number], StoredRow>(
      "SELECT kind, id, body FROM rows WHERE revision > ? ORDER BY revision, kind, id",
    )
    const selectRemovedSince = db.prepare<[number], { kind: string; id: string }>(
      "SELECT kind, id FROM removed WHERE revision > ? ORDER BY revision, kind, id",
    )
    const upsertRow = db.prepare<[string, string, string, number]>(
      `INSERT INTO rows (kind, id, body, revision) VALUES (?, ?, ?, ?)
       ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, revision = excluded.revision`,
    )
    const deleteRow = db.prepare<[string, string]>("DELETE FROM rows WHERE kind = ? AND id = ?")
    const upsertTombstone = db.prepare<[string, string, number]>(
      `INSERT INTO removed (kind, id, revision) VALUES (?, ?, ?)
       ON CONFLICT (kind, id) DO UPDATE SET revision = excluded.revision`,
    )
    const deleteTombstone = db.prepare<[string, string]>("DELETE FROM removed WHERE kind = ? AND id = ?")

    const currentRevision = () => selectRevision.get()!.value

    /** The new revision, or the one found instead of the expected one (a conflict). */
    const commitTx = db.transaction(
      (
        mutations: Effect.Effect.Success<ReturnType<typeof toStored>>,
        expected: number,
      ): { revision: number } | { actual: number } => {
        const actual = currentRevision()
        if (actual !== expected) return { actual }
        if (mutations.length === 0) return { revision: actual }
        const revision = expected + 1
        for (const m of mutations) {
          if (m.body !== undefined) {
            upsertRow.run(m.kind, m.id, m.body, revision)
            deleteTombstone.run(m.kind, m.id)
          } else if (deleteRow.run(m.kind, m.id).changes > 0) {
            // Only a row that was there: no reader can hold one that was not.
            upsertTombstone.run(m.kind, m.id, revision)
          }
        }
        updateRevision.run(revision)
        return { revision }
      },
    )

    // Deferred (read) transactions: one WAL snapshot for the revision and its rows together.
    const loadTx = db.transaction(() => ({ revision: currentRevision(), rows: selectAll.all() }))
    const changesTx = db.transaction((since: number) => ({
      revision: currentRevision(),
      put: selectPutSince.all(since),
      removed: selectRemovedSince.all(since),
    }))

    const api: RegistryApi = {
      load: Effect.try({ try: () => loadTx.deferred(), catch: unavailable("load") }).pipe(
        Effect.flatMap(({ revision, rows }) =>
          Effect.map(toRows("load", rows), (decoded) => stateOf(revision, decoded)),
        ),
      ),
      revision: Effect.try({ try: currentRevision, catch: unavailable("revision") }),
      changesSince: (since) =>
        Effect.try({ try: () => changesTx.deferred(since), catch: unavailable("changesSince") }).pipe(
          Effect.flatMap(({ revision, put, removed }) => {
            const odd = removed.find((r) => !KINDS.includes(r.kind))
            if (odd !== undefined) {
              return Effect.fail(
                new RegistryUnavailable({
                  operation: "changesSince",
                  reason: `tombstone ${odd.kind} ${JSON.stringify(odd.id)} is corrupt: unknown kind`,
                }),
              )
            }
            return Effect.map(
              toRows("changesSince", put),
              (rows): Changes => ({
                revision,
                put: rows,
                removed: removed.map(({ kind, id }) => ({ kind: kind as Kind, id })),
              }),
            )
          }),
        ),
      commit: (mutations, expectedRevision) =>
        Effect.flatMap(toStored(mutations), (stored) =>
          Effect.try({
            try: () => commitTx.immediate(stored, expectedRevision),
            catch: unavailable("commit"),
          }),
        ).pipe(
          Effect.flatMap((result) =>
            "actual" in result
              ? Effect.fail(new RegistryConflict({ expected: expectedRevision, actual: result.actual }))
              : Effect.succeed(result.revision),
          ),
        ),
    }
    return api
  })

/** The registry in the data directory configured by SLUICE_DATA_DIR (`--data-dir`). */
export const layer = Layer.scoped(
  Registry,
  Effect.flatMap(dataDirConfig, (dataDir) => make({ dataDir })),
)

/** The registry in `config.dataDir`. */
export const layerWith = (config: SqliteRegistryConfig) => Layer.scoped(Registry, make(config))
