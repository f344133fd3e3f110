/**
 * Where processed telemetry lands and is read back. Every read takes the tenant first: queries
 * are tenant-scoped by construction. Writes are idempotent: a row is identified by (tenant,
 * device, device time, message id), so a redelivered batch lands once.
 */
import { Context, type Effect, type Option, Schema } from "effect"

/** A field value after the device class transform. */
export type FieldValue = number | boolean | string

/** One decoded, transformed reading. */
export interface TelemetryRow {
  readonly tenantId: string
  readonly deviceId: string
  readonly deviceClass: string
  /** The version of the class that decoded it (registry class versions); absent: not recorded. */
  readonly classVersion?: number | undefined
  readonly msgId: string
  /** Device time, epoch ms, within the storable range (`isStorableTime`). */
  readonly ts: number
  /** Ingress time, epoch ms. */
  readonly receivedAt: number
  /** Numbers (including NaN and ±Infinity), booleans and strings all read back with their type. */
  readonly values: Readonly<Record<string, FieldValue>>
}

/** A message that failed its class, kept with the reason and the raw payload. */
export interface DeadLetter {
  readonly tenantId: string
  readonly deviceId: string
  readonly receivedAt: number
  /** Stream position of the record: where to find it for replay. */
  readonly shardId: string
  readonly sequenceNumber: string
  readonly reason: string
  readonly raw: string
}

export interface TimeRange {
  /** Inclusive, epoch ms. */
  readonly from: number
  /** Exclusive, epoch ms. */
  readonly to: number
}

export interface HistoryPage {
  readonly rows: ReadonlyArray<TelemetryRow>
  /** Pass back as `cursor` for the next page; absent on the last page. */
  readonly nextCursor?: string | undefined
}

export type AggregateFn = "avg" | "min" | "max" | "sum" | "count"

export interface AggregateBucket {
  /** Bucket start, epoch ms. */
  readonly start: number
  /**
   * `${fn}_${field}` -> value: null when the bucket has no value for the field, except `count`,
   * which is 0 then. Booleans count as 0/1, so `avg` of a boolean is the fraction that was true.
   */
  readonly values: Readonly<Record<string, number | null>>
}

export interface DeviceActivity {
  readonly deviceId: string
  /** Newest ingress time stored for the device, epoch ms. */
  readonly lastSeen: number
}

/** Where a dead letter sits in the newest-first order: the row itself names it. */
export interface DeadLetterPosition {
  readonly receivedAt: number
  readonly shardId: string
  readonly sequenceNumber: string
}

/** Which dead letters to read (every field optional). */
export interface DeadLetterFilter {
  /** Only those after this one in the newest-first order (keyset pagination). */
  readonly after?: DeadLetterPosition | undefined
  /** Only this device's. */
  readonly deviceId?: string | undefined
  /** Only those whose reason contains this, ignoring case. */
  readonly reason?: string | undefined
}

/** The store failed or is unreachable; the caller retries (the stream holds the data meanwhile). */
export class StorageUnavailable extends Schema.TaggedError<StorageUnavailable>()("StorageUnavailable", {
  operation: Schema.String,
  reason: Schema.String,
}) {
  override get message() {
    return `storage ${this.operation} failed: ${this.reason}`
  }
}

/** A history cursor that this store did not hand out (corrupt, truncated or from elsewhere). */
export class InvalidCursor extends Schema.TaggedError<InvalidCursor>()("InvalidCursor", {
  cursor: Schema.String,
}) {
  override get message() {
    return `invalid history cursor ${JSON.stringify(this.cursor.slice(0, 64))}: pass back a nextCursor unchanged`
  }
}

/** A query argument out of its domain (a limit, an interval, an aggregate function). */
export class InvalidQuery extends Schema.TaggedError<InvalidQuery>()("InvalidQuery", {
  reason: Schema.String,
}) {
  override get message() {
    return `invalid query: ${this.reason}`
  }
}

/** The most rows one `history` or `deadLetters` call returns. */
export const maxPageSize = 10_000

/**
 * Device times ClickHouse's DateTime64 is specified for: 1900-01-01 to 2299-12-31 UTC. Outside,
 * this store still keeps and returns the exact milliseconds (DateTime64 is Int64 ticks), but
 * ClickHouse renders and date-computes them wrongly, so a device class should dead-letter a
 * reading whose time is not storable (typically seconds or microseconds sent as milliseconds).
 */
export const isStorableTime = (ms: number): boolean =>
  Number.isInteger(ms) && ms >= minStorableTime && ms <= maxStorableTime

/** 1900-01-01T00:00:00.000Z, the earliest storable time, epoch ms. */
export const minStorableTime = -2_208_988_800_000
/** 2299-12-31T23:59:59.999Z, the latest storable time, epoch ms. */
export const maxStorableTime = 10_413_791_999_999

export interface TelemetryStoreApi {
  /**
   * Inserts rows; `dedupToken` is derived from the stream positions the rows came from, so an
   * identical retry is dropped by ClickHouse. Succeeds only once the store acknowledged the rows.
   */
  readonly insert: (
    rows: ReadonlyArray<TelemetryRow>,
    dedupToken: string,
  ) => Effect.Effect<void, StorageUnavailable>
  readonly insertDeadLetters: (
    rows: ReadonlyArray<DeadLetter>,
    dedupToken: string,
  ) => Effect.Effect<void, StorageUnavailable>
  /** A device's readings in a time range, oldest first, `limit` per page. */
  readonly history: (
    tenantId: string,
    deviceId: string,
    range: TimeRange,
    page: { readonly limit: number; readonly cursor?: string | undefined },
  ) => Effect.Effect<HistoryPage, StorageUnavailable | InvalidCursor | InvalidQuery>
  /** Buckets of `intervalMs` over a range, with the chosen functions of the chosen numeric fields. */
  readonly aggregate: (
    tenantId: string,
    deviceId: string,
    range: TimeRange,
    query: {
      readonly intervalMs: number
      readonly fields: ReadonlyArray<string>
      readonly fns: ReadonlyArray<AggregateFn>
      /**
       * Internal (tests, benchmarks; never from HTTP): "raw" computes from the readings even when
       * a rollup could answer; "rollup" reads the coarsest rollup that divides the interval however
       * few rows the range holds. Default "auto": that rollup, unless the range holds fewer stored
       * rows than `Aggregates.rawRowsBelow`, which raw reads faster.
       */
      readonly source?: "auto" | "raw" | "rollup" | undefined
    },
  ) => Effect.Effect<ReadonlyArray<AggregateBucket>, StorageUnavailable | InvalidQuery>
  /** The newest reading by device time (not by arrival). */
  readonly latest: (
    tenantId: string,
    deviceId: string,
  ) => Effect.Effect<Option.Option<TelemetryRow>, StorageUnavailable>
  /**
   * Last ingress time per device of the tenant that has stored data, by device id. Reads every
   * device of the tenant: the device list uses `lastSeen` and `seenSince` instead.
   */
  readonly activity: (tenantId: string) => Effect.Effect<ReadonlyArray<DeviceActivity>, StorageUnavailable>
  /** How many of the tenant's devices were last heard from at or after `since` (epoch ms). */
  readonly countSeenSince: (
    tenantId: string,
    since: number,
  ) => Effect.Effect<number, StorageUnavailable | InvalidQuery>
  /** Last ingress time of those of `deviceIds` (at most `maxPageSize`) that have stored data. */
  readonly lastSeen: (
    tenantId: string,
    deviceIds: ReadonlyArray<string>,
  ) => Effect.Effect<ReadonlyMap<string, number>, StorageUnavailable | InvalidQuery>
  /**
   * Devices last heard from at or after `since` (epoch ms), by device id ascending: ids after
   * `after`, starting with `prefix`, at most `limit` (1..`maxPageSize`) of them.
   */
  readonly seenSince: (
    tenantId: string,
    query: {
      readonly since: number
      readonly after?: string | undefined
      readonly prefix?: string | undefined
      readonly limit: number
    },
  ) => Effect.Effect<ReadonlyArray<DeviceActivity>, StorageUnavailable | InvalidQuery>
  /**
   * The tenant's dead letters, newest first (by arrival, then stream position), at most `limit`:
   * those strictly after `filter.after` in that order, of device `filter.deviceId`, whose reason
   * contains `filter.reason` (case-insensitive).
   */
  readonly deadLetters: (
    tenantId: string,
    limit: number,
    filter?: DeadLetterFilter,
  ) => Effect.Effect<ReadonlyArray<DeadLetter>, StorageUnavailable | InvalidQuery>
  /**
   * Drops, per policy, the tenant's data wholly older than `now` minus its retention: raw readings
   * and dead letters by `rawRetentionDays`, rollups by `rollupRetentionDays`. Whole months go
   * (`Retention.ts`), so data is removed up to a month after it expires. Idempotent.
   */
  readonly expire: (
    now: number,
    policies: ReadonlyArray<RetentionPolicy>,
  ) => Effect.Effect<ReadonlyArray<DroppedPartition>, StorageUnavailable>
  /** Drops every stored row of the tenant, in every table. Idempotent. */
  readonly dropTenant: (
    tenantId: string,
  ) => Effect.Effect<ReadonlyArray<DroppedPartition>, StorageUnavailable>
}

/** How long a tenant's data is kept, in days; absent = forever. */
export interface RetentionPolicy {
  readonly tenantId: string
  readonly rawRetentionDays?: number | undefined
  readonly rollupRetentionDays?: number | undefined
}

/** One partition dropped: a table, its tenant and the partition as ClickHouse names it. */
export interface DroppedPartition {
  readonly table: string
  readonly tenantId: string
  /** e.g. `('acme',202601)`. */
  readonly partition: string
  readonly rows: number
  readonly bytes: number
}

/** The TelemetryStore service. Backend: `ClickHouseTelemetryStore` (chDB in-process or a server). */
export class TelemetryStore extends Context.Tag("sluice/TelemetryStore")<
  TelemetryStore,
  TelemetryStoreApi
>() {}
