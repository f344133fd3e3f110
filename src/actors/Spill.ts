/**
 * Where a tenant's stored-to-be readings wait when its inserts keep failing, so that one
 * tenant's storage trouble does not hold the shared shard checkpoints (and with them every other
 * tenant). A put returns only once the batch is durable, so its shard may checkpoint past it: from
 * then on the spill, not the stream, holds it. Two backends keep this contract:
 *
 * - `SqliteSpill.ts` (default): a SQLite file beside the log (`$SLUICE_DATA_DIR/spill.sqlite`),
 *   fsync'd on every put. It is as durable as that machine's disk, and only a processor that
 *   opens the same directory again drains it.
 * - `S3Spill.ts` (`SLUICE_SPILL_BUCKET` set): one object per entry in a bucket every processor
 *   sees, `<prefix><tenant>/<time>-<instance>-<sequence>`; durable once PutObject succeeds, so a
 *   processor lost for good loses nothing, and whichever processor starts next drains it.
 *
 * Exactly once. Each entry keeps the dedup token of its batch (derived from the batch's stream
 * positions). Draining an entry is: `oldest` → insert its rows under its token → `remove`, and an
 * entry is removed only after that insert was acknowledged. So every entry is stored at least
 * once: a drainer that dies between the insert and the remove leaves the entry for the next one.
 * And at most once: any second insert of an entry (that next drainer, or several processors
 * draining the same tenant at the same time — every processor may have an actor for the tenant,
 * each with its drain fiber) carries the same token and is dropped by ClickHouse
 * (`insert_deduplication_token` within `non_replicated_deduplication_window`); past that window
 * the rows' ReplacingMergeTree key (tenant, device, ts, msg_id) read through FINAL still counts
 * them once. `remove` of an entry already removed by another drainer succeeds and changes nothing.
 * A crash between a put and its shard's checkpoint replays the batch from the stream as well:
 * same positions, same token when batched alike, and the row key otherwise.
 *
 * Order. `oldest` is the tenant's first entry in id order (SQLite: its autoincrement id; S3: its
 * key, listed in ascending order), and a drainer takes the next entry only after removing the one
 * before, which it removes only once stored. So when any drainer first stores an entry, every
 * older entry of the tenant has already been stored: a tenant's entries are stored oldest first,
 * with at most a deduplicated repeat of an older one by a concurrent drainer. "Oldest" is put
 * order within one process (the tenant actor's puts are sequential); across processors sharing
 * the S3 spill it is their clocks' order, ties broken by instance id.
 */
import { Data, Effect, type Option, type Scope } from "effect"
import type { DeadLetter, TelemetryRow } from "../storage/TelemetryStore.js"
import type { ProcessorConfig } from "./ProcessorConfig.js"

export interface SpillEntry {
  /** The backend's id of the entry: a row id (SQLite) or an object key (S3). */
  readonly id: string
  readonly token: string
  readonly rows: ReadonlyArray<TelemetryRow>
  readonly deadLetters: ReadonlyArray<DeadLetter>
}

/** The spill is at its byte budget: the tenant's batches wait in the stream instead. */
export class SpillFull extends Data.TaggedError("SpillFull")<{ readonly bytes: number }> {}

export class SpillUnavailable extends Data.TaggedError("SpillUnavailable")<{ readonly reason: string }> {}

export interface Spill {
  /** Stores a batch durably; fails when the spill is at its budget or its storage fails. */
  readonly put: (
    tenantId: string,
    entry: Omit<SpillEntry, "id">,
  ) => Effect.Effect<void, SpillFull | SpillUnavailable>
  /** The tenant's oldest spilled batch. */
  readonly oldest: (tenantId: string) => Effect.Effect<Option.Option<SpillEntry>, SpillUnavailable>
  /** Removes an entry; removing one that is already gone succeeds. */
  readonly remove: (id: string) => Effect.Effect<void, SpillUnavailable>
  /** Tenants with spilled batches (their actors must start and drain them after a restart). */
  readonly tenants: Effect.Effect<ReadonlyArray<string>, SpillUnavailable>
}

/**
 * An entry's rows and dead letters as the JSON both backends keep. A reading's number may be NaN
 * or ±Infinity, which JSON has no literal for (JSON.stringify writes null): those are kept as
 * `{"$number":"NaN"}`, which no reading or dead letter holds otherwise (values are plain).
 */
export const encodeBody = <A extends Pick<SpillEntry, "rows" | "deadLetters">>(body: A): string =>
  JSON.stringify(body, (_key, value: unknown) =>
    typeof value === "number" && !Number.isFinite(value) ? { $number: String(value) } : value,
  )

/** The inverse of `encodeBody` (also reads bodies written before non-finite numbers were kept). */
export const decodeBody = <A extends Pick<SpillEntry, "rows" | "deadLetters">>(text: string): A =>
  JSON.parse(text, (_key, value: unknown) =>
    typeof value === "object" &&
    value !== null &&
    Object.keys(value).length === 1 &&
    typeof (value as { $number?: unknown }).$number === "string"
      ? Number((value as { $number: string }).$number)
      : value,
  ) as A

/** The failure of a spill's storage, as SpillUnavailable. */
export const unavailable = (cause: unknown) =>
  new SpillUnavailable({ reason: cause instanceof Error ? cause.message : String(cause) })

/**
 * The spill `config` selects, closed with the scope: the S3 spill when `spillBucket` is set, else
 * the SQLite file in `dataDir`. Each backend's module (and the S3 SDK) is loaded only when chosen.
 */
export const fromConfig = (
  config: Pick<ProcessorConfig, "dataDir" | "spillMaxBytes" | "spillBucket">,
): Effect.Effect<Spill, SpillUnavailable, Scope.Scope> => {
  const bucket = config.spillBucket
  return bucket === undefined
    ? Effect.flatMap(
        Effect.promise(() => import("./SqliteSpill.js")),
        (backend) => backend.make(config.dataDir, config.spillMaxBytes),
      )
    : Effect.flatMap(
        Effect.promise(() => import("./S3Spill.js")),
        (backend) => backend.make({ ...bucket, maxBytes: config.spillMaxBytes }),
      )
}
