/**
 * Mutual exclusion for migration programs (`Migration.program`), which, unlike statements, are
 * not safe to run twice at once: migration 4's EXCHANGE TABLES would swap back, or a drop would
 * take the other run's table. Concurrent starts (a processor and a serving process on one server,
 * several processors) therefore take turns:
 * - in one process, a semaphore;
 * - across processes, a table `<db>.schema_migration_lock` created without IF NOT EXISTS (a CREATE
 *   is atomic: one creator wins), its owner (host, pid) in its comment, dropped when done.
 * A waiter polls every second. A lock whose owner is this host and a pid that no longer runs, or
 * this very process (a container restarts as the same pid), was left by a killed run and is
 * taken over. Any other lock is waited for up to 15 minutes, then the start stops saying which
 * table to drop if no other Sluice is migrating.
 */
import { hostname } from "node:os"
import { Duration, Effect } from "effect"

/** What the lock runs SQL with (the migration's runner, failures already mapped to `E`). */
export interface LockSql<E> {
  readonly tryCommand: (statement: string) => Effect.Effect<boolean, E>
  readonly command: (statement: string) => Effect.Effect<void, E>
  readonly comment: (table: string) => Effect.Effect<string | undefined, E>
  readonly fail: (reason: string) => Effect.Effect<never, E>
}

const inProcess = Effect.unsafeMakeSemaphore(1)
const maxWait = Duration.minutes(15)

interface Owner {
  readonly host: string
  readonly pid: number
}

const isRunning = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    // EPERM: it runs, as another user.
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

const isStale = (owner: Owner | undefined) =>
  owner !== undefined && owner.host === hostname() && (owner.pid === process.pid || !isRunning(owner.pid))

const parseOwner = (comment: string | undefined): Owner | undefined => {
  try {
    const o = JSON.parse(comment ?? "") as Partial<Owner>
    return typeof o.host === "string" && typeof o.pid === "number" ? { host: o.host, pid: o.pid } : undefined
  } catch {
    return undefined
  }
}

/** Runs `program` holding the database's migration lock. */
export const withLock = <A, E>(sql: LockSql<E>, db: string, program: Effect.Effect<A, E>) => {
  const table = `${db}.schema_migration_lock`
  const owner = JSON.stringify({ host: hostname(), pid: process.pid }).replaceAll("'", "")
  const acquire = Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(maxWait)
    while (true) {
      const won = yield* sql.tryCommand(
        `CREATE TABLE ${table} (held UInt8) ENGINE = Memory COMMENT '${owner}'`,
      )
      if (won) return
      const held = yield* sql.comment("schema_migration_lock")
      if (isStale(parseOwner(held))) {
        yield* Effect.logWarning(`taking over the schema migration lock left by a stopped run: ${held}`)
        yield* sql.command(`DROP TABLE IF EXISTS ${table} SYNC`)
        continue
      }
      if (Date.now() > deadline) {
        return yield* sql.fail(
          `another Sluice holds the schema migration lock (${held ?? "owner unknown"}) for over 15 minutes; ` +
            `if none is migrating (a run was killed), DROP TABLE ${table} and start again`,
        )
      }
      yield* Effect.sleep("1 second")
    }
  })
  return inProcess.withPermits(1)(
    Effect.acquireUseRelease(
      acquire,
      () => program,
      () => Effect.ignore(sql.command(`DROP TABLE IF EXISTS ${table} SYNC`)),
    ),
  )
}
