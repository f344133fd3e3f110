/**
 * Shard leases in the embedded log's own database (`stream.sqlite`), so the processor processes
 * of one machine share the embedded log's shards through the file they already open. One
 * `leases` table holds every consumer application's leases, keyed by application name: each
 * application (processor fleet) sees only its own rows, as each would have its own DynamoDB table.
 *
 * Each operation is one conditional statement in a BEGIN IMMEDIATE transaction, so the check
 * (owner and counter as the caller saw them) and the write cannot be split by another process;
 * `RETURNING` hands back the row as stored, so the caller's next condition is exactly the truth.
 */
import { Effect, Layer, Schema } from "effect"
import {
  type Lease,
  LeaseCheckpoint,
  LeaseLost,
  LeaseStoreUnavailable,
  ShardLeases,
  type ShardLeasesApi,
} from "./ShardLeases.js"
import { connect } from "./SqliteShards.js"
import * as StreamConfig from "./StreamConfig.js"

export interface SqliteShardLeasesConfig {
  /** Directory of the embedded log (`stream.sqlite` in it). */
  readonly dataDir: string
  /** The consumer application (processor fleet) whose lease table this is. */
  readonly application: string
  /**
   * `true` (default): fsync every lease write (synchronous=FULL), as the log's default. A lost
   * checkpoint only replays records the storage tier deduplicates, but a lost take could let a
   * restarted worker believe in a lease another took; FULL costs little at lease-write rates.
   */
  readonly fsync?: boolean
}

interface Row {
  readonly shard_id: string
  readonly owner: string | null
  readonly counter: number
  readonly checkpoint: string
  readonly parents: string
}

const StoredCheckpoint = Schema.parseJson(LeaseCheckpoint)
const encodeCheckpoint = Schema.encodeSync(StoredCheckpoint)
const decodeCheckpoint = Schema.decodeUnknownSync(StoredCheckpoint)
const StoredParents = Schema.parseJson(Schema.Array(Schema.String))
const encodeParents = Schema.encodeSync(StoredParents)
const decodeParents = Schema.decodeUnknownSync(StoredParents)

const toLease = (row: Row): Lease => ({
  shardId: row.shard_id,
  owner: row.owner,
  counter: row.counter,
  checkpoint: decodeCheckpoint(row.checkpoint),
  parentShardIds: decodeParents(row.parents),
})

// Every failure of the store itself (SQLITE_BUSY past the busy timeout, SQLITE_LOCKED, I/O) is
// "did not answer": the caller retries, and its lease is still whatever the store holds.
const unavailable = (operation: string) => (cause: unknown) =>
  new LeaseStoreUnavailable({ operation, reason: cause instanceof Error ? cause.message : String(cause) })

const COLUMNS = "shard_id, owner, counter, checkpoint, parents"

/** Opens the lease table of `application` in `dataDir/stream.sqlite`; the scope closes it. */
export const make = (config: SqliteShardLeasesConfig) =>
  Effect.gen(function* () {
    const { application } = config
    // A connection of its own: the log's statements and transactions stay untouched, and to
    // SQLite this is just one more process's connection, which the file already serves.
    const db = yield* connect(config.dataDir, config.fsync ?? true, unavailable("open"))
    yield* Effect.try({
      try: () => {
        // Immediate, so processes starting together on a fresh directory cannot race the DDL.
        db.transaction(() =>
          db.exec(`CREATE TABLE IF NOT EXISTS leases (
            application TEXT NOT NULL,
            shard_id TEXT NOT NULL,
            owner TEXT,
            counter INTEGER NOT NULL,
            checkpoint TEXT NOT NULL,
            parents TEXT NOT NULL,
            PRIMARY KEY (application, shard_id)
          ) WITHOUT ROWID`),
        ).immediate()
      },
      catch: unavailable("open"),
    })

    const insert = db.prepare<[string, string, string, string]>(
      "INSERT OR IGNORE INTO leases (application, shard_id, owner, counter, checkpoint, parents) " +
        "VALUES (?, ?, NULL, 0, ?, ?)",
    )
    const selectAll = db.prepare<[string], Row>(
      `SELECT ${COLUMNS} FROM leases WHERE application = ? ORDER BY shard_id`,
    )
    // `owner IS ?` rather than `=`: a free lease's owner is NULL, and `NULL = NULL` is not true.
    const condition = "WHERE application = ? AND shard_id = ? AND owner IS ? AND counter = ?"
    type Condition = [string, string, string | null, number]
    const setOwner = db.prepare<[string | null, ...Condition], Row>(
      `UPDATE leases SET owner = ?, counter = counter + 1 ${condition} RETURNING ${COLUMNS}`,
    )
    const setCheckpoint = db.prepare<[string, ...Condition], Row>(
      `UPDATE leases SET checkpoint = ?, counter = counter + 1 ${condition} RETURNING ${COLUMNS}`,
    )

    const ensureAll = db.transaction((rows: ReadonlyArray<[string, string, string]>) => {
      for (const [shardId, checkpoint, parents] of rows) insert.run(application, shardId, checkpoint, parents)
    })

    /** Runs one conditional write; no row back means the lease is no longer as `lease` says. */
    const conditional = (
      operation: string,
      lease: Lease,
      write: (condition: Condition) => Row | undefined,
      requireOwner = true,
    ): Effect.Effect<Lease, LeaseLost | LeaseStoreUnavailable> => {
      // Only an owner renews, checkpoints or releases: a free lease held by nobody cannot be.
      if (requireOwner && lease.owner === null) {
        return Effect.fail(new LeaseLost({ shardId: lease.shardId, reason: `${operation} of a free lease` }))
      }
      return Effect.try({
        try: () =>
          db.transaction(() => write([application, lease.shardId, lease.owner, lease.counter])).immediate(),
        catch: unavailable(operation),
      }).pipe(
        Effect.flatMap((row) =>
          row === undefined
            ? Effect.fail(
                new LeaseLost({
                  shardId: lease.shardId,
                  reason: `${operation}: no longer held by ${lease.owner ?? "nobody"} at counter ${lease.counter}`,
                }),
              )
            : Effect.succeed(toLease(row)),
        ),
      )
    }

    const api: ShardLeasesApi = {
      ensure: (shards, initial) =>
        Effect.try({
          try: () =>
            ensureAll.immediate(
              shards.map((s) => [
                s.shardId,
                encodeCheckpoint(initial),
                encodeParents(
                  [s.parentShardId, s.adjacentParentShardId].filter((p): p is string => p !== undefined),
                ),
              ]),
            ),
          catch: unavailable("ensure"),
        }),
      list: Effect.try({
        try: () => selectAll.all(application).map(toLease),
        catch: unavailable("list"),
      }),
      take: (lease, owner) => conditional("take", lease, (c) => setOwner.get(owner, ...c), false),
      renew: (lease) => conditional("renew", lease, (c) => setOwner.get(lease.owner, ...c)),
      checkpoint: (lease, checkpoint) =>
        conditional("checkpoint", lease, (c) => setCheckpoint.get(encodeCheckpoint(checkpoint), ...c)),
      release: (lease) => Effect.asVoid(conditional("release", lease, (c) => setOwner.get(null, ...c))),
    }
    return api
  })

/** The lease table of `application`, in the embedded log configured by SLUICE_DATA_DIR / SLUICE_STREAM_FSYNC. */
export const layer = (application: string) =>
  Layer.scoped(
    ShardLeases,
    Effect.flatMap(StreamConfig.embedded, (c) => make({ dataDir: c.dataDir, application, fsync: c.fsync })),
  )

/** The lease table of `config.application` in `config.dataDir`. */
export const layerWith = (config: SqliteShardLeasesConfig) => Layer.scoped(ShardLeases, make(config))
