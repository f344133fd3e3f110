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
    },
  ) => Effect.Effect<ReadonlyArray<AggregateBucket>, StorageUnavailable | InvalidQuery>
  /** The newest reading by device time (not by arrival). */
  readonly latest: (
    tenantId: string,
    deviceId: string,
  ) => Effect.Effect<Option.Option<TelemetryRow>, StorageUnavailable>
  /** Last ingress time per device of the tenant that has stored data. */
  readonly activity: (tenantId: string) => Effect.Effect<ReadonlyArray<DeviceActivity>, StorageUnavailable>
  /** The tenant's dead letters, newest first. */
  readonly deadLetters: (
    tenantId: string,
    limit: number,
  ) => Effect.Effect<ReadonlyArray<DeadLetter>, StorageUnavailable | InvalidQuery>
}

/** The TelemetryStore service. Backend: `ClickHouseTelemetryStore` (chDB in-process or a server). */
export class TelemetryStore extends Context.Tag("sluice/TelemetryStore")<
  TelemetryStore,
  TelemetryStoreApi
>() {}
