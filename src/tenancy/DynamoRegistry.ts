/**
 * The device registry on DynamoDB (or an emulator such as dynalite, through `endpoint`): one table
 * shared by every process on every node, chosen with SLUICE_REGISTRY_TABLE (`RegistryBackend.ts`),
 * created on demand with on-demand capacity. `SqliteRegistry.ts` is its sibling on one machine;
 * both run the contract suite, and both decode and check rows with `RegistryRows.ts`.
 *
 * The difficulty: a commit may hold 10,000 rows and more (the admin API's bulk create) and must be
 * atomic and optimistic, while a DynamoDB transaction takes at most 100 items. So rows are never
 * updated in place: every commit writes new row versions, and one conditional write of one item
 * decides whether they exist.
 *
 * Items (partition key `pk`, sort key `sk`, both strings):
 * - A row version: pk `<kind>#<id>`, sk `<revision>#<commit id>` (the revision zero-padded to 16
 *   digits, the commit id a random UUID of the writer's), with `rev` (N), `cid` (S), and `body`
 *   (S, the row's JSON, as the embedded store keeps it) or `gone` (BOOL, a tombstone).
 * - The commit log: pk `@commit`, sk `<revision>` zero-padded, with `rev`, `cid` (the commit id
 *   that made this revision), `at` (the writer's clock, epoch ms) and `count` (its row versions).
 *   The registry's revision is the newest entry: one Query (newest first, Limit 1, strongly
 *   consistent) is what every process polls; no entry is revision 0.
 *
 * A commit at `expectedRevision` = E: (1) read the revision, RegistryConflict unless it is E
 * (nothing written yet: a stale writer costs one read); (2) write its versions at E + 1 under a new
 * commit id, BatchWriteItem 25 at a time, `writeConcurrency` calls in flight, unprocessed items
 * retried with backoff; (3) commit: ONE PutItem of the log entry E + 1 with
 * `attribute_not_exists(pk)`. That put is the commit point: DynamoDB lets exactly one writer
 * create the entry, so of writers racing from E exactly one wins, and nothing else ever changes
 * what a revision means. Entries stay contiguous — a writer only puts E + 1 after it saw E as the
 * newest entry, and entries are never deleted — so a writer ahead of the store fails in (1) and
 * one behind fails in (3). Readers take a row version into account only if the log entry of its
 * revision carries its commit id: the versions of a loser (or of a writer that died between (2)
 * and (3)) are never visible. A loser deletes its versions before it reports the conflict (best
 * effort); compaction removes whatever is left. A put whose answer was lost is resolved by reading
 * the entry back: our commit id is a win, another's a conflict, none at all RegistryUnavailable
 * (the outcome is unknown; the caller reads again before retrying).
 *
 * This is simpler than a TransactWriteItems moving a meta item from E to E + 1 and putting the log
 * entry (the design first proposed): the log entry alone carries both facts, one write instead of
 * a transaction (half the cost), and it runs on emulators without transactions (dynalite).
 *
 * `load` and `changesSince(r)`: read the revision R (the Query above), then Scan the table with
 * ConsistentRead (paginated, in parallel segments; `changesSince` filters on `rev > r`, which
 * spares the transfer, not the read capacity); per row, the newest committed version at or below
 * R is its state; a tombstone is a removal. Every commit ≤ R finished writing its versions before
 * its log entry, which was there before R was read, so a strongly consistent Scan sees them all.
 * `changesSince` reports the rows whose newest committed version is above r. Unlike the embedded
 * store, which keeps a tombstone only for a row that was there, a commit here does not read before
 * it writes, so removing a row that never existed is reported as a removal too (harmless: a reader
 * forgets a row it never had).
 *
 * Cost of reading: `revision` is one Query, all a process does per poll while nothing changes;
 * a change costs every process a Scan of the whole table, fine for thousands of rows, not for a
 * million. What would make `changesSince` cheap: a global secondary index on the revision (say
 * partition key `rev`, or `cid` to spread a bulk commit), queried for each commit the log lists
 * after r and checked complete against the entry's `count`, since index reads are only eventually
 * consistent — future work. A `load` at start-up stays a Scan.
 *
 * Every call is bounded (10 s); every failure of DynamoDB is RegistryUnavailable with the AWS code
 * in the reason; a lost race is RegistryConflict.
 *
 * Compaction. Versions pile up: every change of a row leaves its previous version behind. A writer
 * whose commit lands on a multiple of `compactEvery` (32) compacts in the background, one pass at a
 * time per process, best effort (failures are logged): it reads the revision H, scans, and deletes
 * at most `compactMaxDeletes` items: versions of losers and dead writers (a log entry at or below H
 * names another commit), and committed versions older than a newer committed version of the same
 * row that is at least `keepRevisions` (32) behind H and was committed at least `keepMs` (10 min)
 * ago. The newest committed version of every row stays, tombstones included (as the embedded store
 * keeps its tombstones: `changesSince` cannot tell a reader that history it needs was pruned), and
 * so do the log entries. A read that needs a version compaction may delete is a read that took over
 * `keepMs` / 2 while the head moved `keepRevisions` on; a read checks the revision again when it is
 * done and starts over in that case (at most 3 times, then RegistryUnavailable).
 *
 * Limits: a row's JSON must fit in an item (380 KB; a device class with hundreds of versions would
 * not), and its kind and id in a partition key (2 KB); a commit that breaks either fails before it
 * writes anything, naming the row.
 *
 * Permissions on the table: readers (ingress, processor, serving) dynamodb:DescribeTable, Query,
 * Scan; writers (serving — the admin API — and `sluice apply`) also PutItem, GetItem and
 * BatchWriteItem (its deletes are compaction's and a loser's); CreateTable unless the table is
 * made beforehand.
 */
import { randomUUID } from "node:crypto"
import {
  type AttributeValue,
  BatchWriteItemCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  ScanCommand,
  type WriteRequest,
} from "@aws-sdk/client-dynamodb"
import { Duration, Effect, Layer, Schedule, type Scope } from "effect"
import { ensureTable } from "../stream/dynamoTable.js"
import { AwsError, awsClientOptions, call, isThrottling } from "../stream/kinesisClient.js"
import {
  type Changes,
  type Kind,
  Registry,
  type RegistryApi,
  RegistryConflict,
  RegistryUnavailable,
} from "./Registry.js"
import type { DynamoRegistryConfig } from "./RegistryConfig.js"
import { describe, KINDS, type StoredRow, stateOf, toRows, toStored } from "./RegistryRows.js"

/** Test hooks: what a test needs to look between the steps of a commit. */
export interface DynamoRegistryOptions {
  /** After each BatchWriteItem of a commit's versions: `written` of `total` are in the table. */
  readonly onVersionsWritten?: (written: number, total: number) => Effect.Effect<void>
  /** After every version of a commit is written, before its commit point. */
  readonly beforeCommitPoint?: Effect.Effect<void>
}

/** What one compaction pass deleted. */
export interface CompactReport {
  /** Versions of commits that lost (or never happened). */
  readonly garbage: number
  /** Committed versions superseded long enough ago. */
  readonly superseded: number
}

export interface DynamoRegistryApi extends RegistryApi {
  /** One compaction pass now (writers also run them by themselves, see the header). */
  readonly compact: Effect.Effect<CompactReport, RegistryUnavailable>
}

const COMMIT_PK = "@commit"
const DEFAULT_WRITE_CONCURRENCY = 8
const DEFAULT_COMPACT_EVERY = 32
const DEFAULT_KEEP_REVISIONS = 32
const DEFAULT_KEEP_MS = 600_000
const DEFAULT_COMPACT_MAX_DELETES = 10_000
const DEFAULT_CALL_TIMEOUT_MS = 10_000
const DEFAULT_SCAN_SEGMENTS = 4
/** Items per BatchWriteItem: DynamoDB's limit. */
const BATCH = 25
/** Attempts at a batch's unprocessed items (throttling) before the commit gives up. */
const BATCH_ATTEMPTS = 10
/** A read that finds the head moved `keepRevisions` on (and took long) starts over this often. */
const READ_ATTEMPTS = 3
/** A row's JSON at most (an item holds 400 KB, names and keys included). */
const MAX_BODY_BYTES = 380_000
/** DynamoDB's limit on a partition key. */
const MAX_PK_BYTES = 2_048

const CONDITION_FAILED = "ConditionalCheckFailedException"

const pad = (revision: number) => String(revision).padStart(16, "0")
const rowPk = (kind: string, id: string) => `${kind}#${id}`

const unavailable = (operation: string) => (e: AwsError) =>
  new RegistryUnavailable({ operation, reason: e.reason })

/** A row version as read. */
interface Version {
  readonly pk: string
  readonly sk: string
  readonly rev: number
  readonly cid: string
  /** The row's JSON, or undefined for a tombstone. */
  readonly body: string | undefined
}

interface LogEntry {
  readonly cid: string
  readonly at: number
}

/** Items of a Scan, split into the commit log and row versions; a malformed one is corruption. */
const classify = (operation: string, items: ReadonlyArray<Record<string, AttributeValue>>) =>
  Effect.suspend(() => {
    const log = new Map<number, LogEntry>()
    const versions: Array<Version> = []
    for (const item of items) {
      const pk = item.pk?.S
      const sk = item.sk?.S
      const rev = Number(item.rev?.N)
      const cid = item.cid?.S
      if (pk === undefined || sk === undefined || !Number.isSafeInteger(rev) || cid === undefined) {
        const reason = `item ${JSON.stringify(pk)} ${JSON.stringify(sk)} is corrupt: missing pk, sk, rev or cid`
        return Effect.fail(new RegistryUnavailable({ operation, reason }))
      }
      if (pk === COMMIT_PK) {
        log.set(rev, { cid, at: Number(item.at?.N ?? 0) })
        continue
      }
      const body = item.body?.S
      if (body === undefined && item.gone?.BOOL !== true) {
        const reason = `row ${pk} version ${sk} is corrupt: neither a body nor a tombstone`
        return Effect.fail(new RegistryUnavailable({ operation, reason }))
      }
      versions.push({ pk, sk, rev, cid, body })
    }
    return Effect.succeed({ log, versions })
  })

/** Per row, its newest version committed at or below `revision`. */
const newestCommitted = (
  log: ReadonlyMap<number, LogEntry>,
  versions: ReadonlyArray<Version>,
  revision: number,
): Map<string, Version> => {
  const newest = new Map<string, Version>()
  for (const v of versions) {
    if (v.rev > revision || log.get(v.rev)?.cid !== v.cid) continue
    const current = newest.get(v.pk)
    if (current === undefined || current.rev < v.rev) newest.set(v.pk, v)
  }
  return newest
}

const splitPk = (pk: string) => {
  const at = pk.indexOf("#")
  return at < 0 ? { kind: pk, id: "" } : { kind: pk.slice(0, at), id: pk.slice(at + 1) }
}

/** Connects to the registry table, creating it if missing and waiting until it is ACTIVE. */
export const make = (
  config: DynamoRegistryConfig,
  options: DynamoRegistryOptions = {},
): Effect.Effect<DynamoRegistryApi, RegistryUnavailable, Scope.Scope> =>
  Effect.gen(function* () {
    const client = yield* Effect.acquireRelease(
      Effect.sync(() => new DynamoDBClient(awsClientOptions(config))),
      (client) => Effect.sync(() => client.destroy()),
    )
    const scope = yield* Effect.scope
    const TableName = config.table
    const writeConcurrency = Math.max(1, config.writeConcurrency ?? DEFAULT_WRITE_CONCURRENCY)
    const compactEvery = config.compactEvery ?? DEFAULT_COMPACT_EVERY
    const keepRevisions = Math.max(1, config.keepRevisions ?? DEFAULT_KEEP_REVISIONS)
    const keepMs = Math.max(0, config.keepMs ?? DEFAULT_KEEP_MS)
    const compactMaxDeletes = config.compactMaxDeletes ?? DEFAULT_COMPACT_MAX_DELETES
    const scanSegments = Math.max(1, config.scanSegments ?? DEFAULT_SCAN_SEGMENTS)

    /** One SDK call, bounded: a call DynamoDB never answers must not hang a poll or a commit. */
    const send = <A>(f: (abortSignal: AbortSignal) => Promise<A>): Effect.Effect<A, AwsError> =>
      call(f).pipe(
        Effect.timeoutFail({
          duration: Duration.millis(DEFAULT_CALL_TIMEOUT_MS),
          onTimeout: () =>
            new AwsError({
              name: "TimeoutError",
              message: `no answer within ${DEFAULT_CALL_TIMEOUT_MS} ms`,
              fault: "network",
            }),
        }),
      )

    yield* ensureTable(client, {
      table: TableName,
      key: "pk",
      sortKey: "sk",
      activeTimeoutMs: config.activeTimeoutMs,
    }).pipe(Effect.mapError(unavailable("start")), Effect.withSpan("DynamoRegistry.start"))

    /** The newest log entry's revision (0: none). */
    const head = (operation: string) =>
      send((abortSignal) =>
        client.send(
          new QueryCommand({
            TableName,
            KeyConditionExpression: "#pk = :log",
            ExpressionAttributeNames: { "#pk": "pk" },
            ExpressionAttributeValues: { ":log": { S: COMMIT_PK } },
            ScanIndexForward: false,
            Limit: 1,
            ConsistentRead: true,
          }),
          { abortSignal },
        ),
      ).pipe(
        Effect.map((out) => Number(out.Items?.[0]?.rev?.N ?? 0)),
        Effect.mapError(unavailable(operation)),
      )

    /** The log entry of `revision`, if any (strongly consistent). */
    const logEntry = (revision: number) =>
      send((abortSignal) =>
        client.send(
          new GetItemCommand({
            TableName,
            Key: { pk: { S: COMMIT_PK }, sk: { S: pad(revision) } },
            ConsistentRead: true,
          }),
          { abortSignal },
        ),
      ).pipe(Effect.map((out) => out.Item?.cid?.S))

    /**
     * Every item (or every item with `rev` above `since`), strongly consistent, page by page, in
     * `scanSegments` parallel segments (a registry of a million devices loads in a fraction of
     * the time one sequential Scan takes).
     */
    const scan = (operation: string, since?: number) =>
      Effect.forEach(
        Array.from({ length: scanSegments }, (_, segment) => segment),
        (segment) =>
          Effect.gen(function* () {
            const items: Array<Record<string, AttributeValue>> = []
            let start: Record<string, AttributeValue> | undefined
            do {
              const page = yield* send((abortSignal) =>
                client.send(
                  new ScanCommand({
                    TableName,
                    ConsistentRead: true,
                    ExclusiveStartKey: start,
                    Limit: config.scanPageItems,
                    ...(scanSegments > 1 ? { Segment: segment, TotalSegments: scanSegments } : {}),
                    ...(since === undefined
                      ? {}
                      : {
                          FilterExpression: "#rev > :since",
                          ExpressionAttributeNames: { "#rev": "rev" },
                          ExpressionAttributeValues: { ":since": { N: String(since) } },
                        }),
                  }),
                  { abortSignal },
                ),
              )
              for (const item of page.Items ?? []) items.push(item)
              start = page.LastEvaluatedKey
            } while (start !== undefined)
            return items
          }),
        { concurrency: "unbounded" },
      ).pipe(
        Effect.map((segments) => segments.flat()),
        Effect.mapError(unavailable(operation)),
      )

    /**
     * The revision R and, per row (changed after `since`, if given), its newest version committed
     * at or below R; started over if compaction may have deleted a version it needed (see header).
     */
    const snapshot = (operation: string, since?: number) =>
      Effect.gen(function* () {
        for (let attempt = 1; ; attempt++) {
          const started = Date.now()
          const revision = yield* head(operation)
          const { log, versions } = yield* Effect.flatMap(scan(operation, since), (items) =>
            classify(operation, items),
          )
          const rows = newestCommitted(log, versions, revision)
          if (Date.now() - started < keepMs / 2) return { revision, rows }
          const after = yield* head(operation)
          if (after - revision < keepRevisions) return { revision, rows }
          if (attempt >= READ_ATTEMPTS) {
            const reason = `the registry moved from revision ${revision} to ${after} during a read, ${READ_ATTEMPTS} times`
            return yield* Effect.fail(new RegistryUnavailable({ operation, reason }))
          }
        }
      })

    /** Decodes the bodies of `versions` (tombstones left out), as the embedded store does. */
    const decode = (operation: string, versions: Iterable<Version>) => {
      const stored: Array<StoredRow> = []
      for (const v of versions) {
        if (v.body !== undefined) stored.push({ ...splitPk(v.pk), body: v.body })
      }
      return toRows(operation, stored)
    }

    /** BatchWriteItem of `requests` (at most 25), retrying unprocessed items and throttling. */
    const batchWrite = (requests: ReadonlyArray<WriteRequest>) =>
      Effect.gen(function* () {
        let pending: ReadonlyArray<WriteRequest> = requests
        for (let attempt = 1; pending.length > 0; attempt++) {
          const out = yield* send((abortSignal) =>
            client.send(new BatchWriteItemCommand({ RequestItems: { [TableName]: [...pending] } }), {
              abortSignal,
            }),
          ).pipe(
            Effect.retry({
              while: (e) => isThrottling(e.name),
              schedule: Schedule.exponential("50 millis").pipe(Schedule.compose(Schedule.recurs(5))),
            }),
          )
          pending = out.UnprocessedItems?.[TableName] ?? []
          if (pending.length === 0) return
          if (attempt >= BATCH_ATTEMPTS) {
            return yield* Effect.fail(
              new AwsError({
                name: "UnprocessedItems",
                message: `${pending.length} items still unprocessed after ${attempt} attempts`,
                fault: "server",
              }),
            )
          }
          yield* Effect.sleep(Duration.millis(Math.min(2_000, 25 * 2 ** attempt)))
        }
      })

    const chunks = <A>(all: ReadonlyArray<A>): Array<ReadonlyArray<A>> => {
      const out: Array<ReadonlyArray<A>> = []
      for (let i = 0; i < all.length; i += BATCH) out.push(all.slice(i, i + BATCH))
      return out
    }

    /** Deletes items by key, 25 per call; best effort left to the caller. */
    const deleteKeys = (keys: ReadonlyArray<{ readonly pk: string; readonly sk: string }>) =>
      Effect.forEach(
        chunks(keys),
        (chunk) =>
          batchWrite(
            chunk.map(({ pk, sk }) => ({ DeleteRequest: { Key: { pk: { S: pk }, sk: { S: sk } } } })),
          ),
        { concurrency: writeConcurrency, discard: true },
      )

    const compact: Effect.Effect<CompactReport, RegistryUnavailable> = Effect.gen(function* () {
      const revision = yield* head("compact")
      const { log, versions } = yield* Effect.flatMap(scan("compact"), (items) => classify("compact", items))
      const now = Date.now()
      const byRow = new Map<string, Array<Version>>()
      const garbage: Array<Version> = []
      for (const v of versions) {
        if (v.rev > revision) continue // perhaps a writer still at work
        const entry = log.get(v.rev)
        if (entry === undefined) continue // cannot be: entries up to the head are contiguous
        if (entry.cid !== v.cid) garbage.push(v)
        else byRow.set(v.pk, [...(byRow.get(v.pk) ?? []), v])
      }
      const superseded: Array<Version> = []
      for (const committed of byRow.values()) {
        if (committed.length < 2) continue
        committed.sort((a, b) => b.rev - a.rev)
        const settled = committed.find(
          (v) => v.rev <= revision - keepRevisions && (log.get(v.rev)?.at ?? now) <= now - keepMs,
        )
        if (settled !== undefined) superseded.push(...committed.filter((v) => v.rev < settled.rev))
      }
      const doomed = [...garbage, ...superseded].slice(0, compactMaxDeletes)
      yield* deleteKeys(doomed).pipe(Effect.mapError(unavailable("compact")))
      const garbageDeleted = Math.min(garbage.length, doomed.length)
      return { garbage: garbageDeleted, superseded: doomed.length - garbageDeleted }
    }).pipe(Effect.withSpan("DynamoRegistry.compact"))

    let compacting = false
    /** A compaction pass in the background, unless one of this process is under way. */
    const compactInBackground = Effect.suspend(() => {
      if (compacting) return Effect.void
      compacting = true
      return compact.pipe(
        Effect.tap((r) => Effect.logDebug(`registry compaction: deleted ${r.garbage + r.superseded} items`)),
        Effect.catchAll((e) => Effect.logWarning(`registry compaction failed: ${e.message}`)),
        Effect.ensuring(Effect.sync(() => (compacting = false))),
        Effect.forkIn(scope),
        Effect.asVoid,
      )
    })

    const commit: RegistryApi["commit"] = (mutations, expectedRevision) =>
      Effect.gen(function* () {
        const stored = yield* toStored(mutations)
        // The last mutation of each row wins; a batch writes one version per row.
        const last = new Map<string, { readonly body: string | undefined }>()
        for (const s of stored) {
          const pk = rowPk(s.kind, s.id)
          last.delete(pk)
          last.set(pk, { body: s.body })
        }
        for (const [pk, { body }] of last) {
          const { kind, id } = splitPk(pk)
          const tooLarge =
            Buffer.byteLength(pk) > MAX_PK_BYTES
              ? `its kind and id exceed ${MAX_PK_BYTES} bytes`
              : body !== undefined && Buffer.byteLength(body) > MAX_BODY_BYTES
                ? `its JSON exceeds ${MAX_BODY_BYTES} bytes`
                : undefined
          if (tooLarge !== undefined) {
            const reason = `row ${describe(kind, id)} does not fit in a DynamoDB item: ${tooLarge}`
            return yield* Effect.fail(new RegistryUnavailable({ operation: "commit", reason }))
          }
        }
        const current = yield* head("commit")
        if (current !== expectedRevision) {
          return yield* Effect.fail(new RegistryConflict({ expected: expectedRevision, actual: current }))
        }
        if (last.size === 0) return current

        const revision = expectedRevision + 1
        const cid = randomUUID()
        const sk = `${pad(revision)}#${cid}`
        const keys = [...last.keys()].map((pk) => ({ pk, sk }))
        const puts: Array<WriteRequest> = [...last].map(([pk, { body }]) => ({
          PutRequest: {
            Item: {
              pk: { S: pk },
              sk: { S: sk },
              rev: { N: String(revision) },
              cid: { S: cid },
              ...(body === undefined ? { gone: { BOOL: true } } : { body: { S: body } }),
            },
          },
        }))
        const cleanUp = deleteKeys(keys).pipe(
          Effect.catchAll((e) =>
            Effect.logWarning(`registry: could not delete the versions of a failed commit: ${e.reason}`),
          ),
        )

        let written = 0
        yield* Effect.forEach(
          chunks(puts),
          (chunk) =>
            Effect.zipRight(
              batchWrite(chunk),
              Effect.suspend(() => {
                written += chunk.length
                return options.onVersionsWritten?.(written, puts.length) ?? Effect.void
              }),
            ),
          { concurrency: writeConcurrency, discard: true },
        ).pipe(
          Effect.tapError(() => cleanUp),
          Effect.mapError(unavailable("commit")),
        )
        if (options.beforeCommitPoint !== undefined) yield* options.beforeCommitPoint

        // The commit point.
        const outcome = yield* send((abortSignal) =>
          client.send(
            new PutItemCommand({
              TableName,
              Item: {
                pk: { S: COMMIT_PK },
                sk: { S: pad(revision) },
                rev: { N: String(revision) },
                cid: { S: cid },
                at: { N: String(Date.now()) },
                count: { N: String(puts.length) },
              },
              ConditionExpression: "attribute_not_exists(#pk)",
              ExpressionAttributeNames: { "#pk": "pk" },
            }),
            { abortSignal },
          ),
        ).pipe(
          Effect.as("won" as const),
          // Lost, or no answer: the entry says which (a retried put may have landed the first time).
          Effect.catchAll((error) =>
            logEntry(revision).pipe(
              Effect.mapError(unavailable("commit")),
              Effect.flatMap((found) =>
                found === cid
                  ? Effect.succeed("won" as const)
                  : found !== undefined
                    ? Effect.succeed("lost" as const)
                    : Effect.fail(
                        new RegistryUnavailable({
                          operation: "commit",
                          reason:
                            error.name === CONDITION_FAILED
                              ? "the commit log entry vanished"
                              : `${error.reason} (the commit may or may not have landed: read again)`,
                        }),
                      ),
              ),
            ),
          ),
        )
        if (outcome === "lost") {
          yield* cleanUp
          const actual = yield* head("commit")
          return yield* Effect.fail(new RegistryConflict({ expected: expectedRevision, actual }))
        }
        if (compactEvery > 0 && revision % compactEvery === 0) yield* compactInBackground
        return revision
      }).pipe(Effect.withSpan("DynamoRegistry.commit"))

    const api: DynamoRegistryApi = {
      load: Effect.gen(function* () {
        const { revision, rows } = yield* snapshot("load")
        return stateOf(revision, yield* decode("load", rows.values()))
      }).pipe(Effect.withSpan("DynamoRegistry.load")),
      revision: head("revision"),
      changesSince: (since) =>
        Effect.gen(function* () {
          const { revision, rows } = yield* snapshot("changesSince", since)
          const changed = [...rows.values()]
            .filter((v) => v.rev > since)
            .sort((a, b) => a.rev - b.rev || (a.pk < b.pk ? -1 : a.pk > b.pk ? 1 : 0))
          const removed: Array<{ kind: Kind; id: string }> = []
          for (const v of changed) {
            if (v.body !== undefined) continue
            const { kind, id } = splitPk(v.pk)
            if (!KINDS.includes(kind)) {
              const reason = `tombstone ${kind} ${JSON.stringify(id)} is corrupt: unknown kind`
              return yield* Effect.fail(new RegistryUnavailable({ operation: "changesSince", reason }))
            }
            removed.push({ kind: kind as Kind, id })
          }
          const put = yield* decode("changesSince", changed)
          const changes: Changes = { revision, put, removed }
          return changes
        }).pipe(Effect.withSpan("DynamoRegistry.changesSince")),
      commit,
      compact,
    }
    return api
  })

/** The registry on `config.table`; the DynamoDB client lives as long as the layer. */
export const layerWith = (
  config: DynamoRegistryConfig,
  options: DynamoRegistryOptions = {},
): Layer.Layer<Registry, RegistryUnavailable> => Layer.scoped(Registry, make(config, options))
