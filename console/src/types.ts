/** The API's answers as the console reads them (see /docs). Fields a server may not send yet are optional. */

export type FieldValue = number | boolean | string

export interface DeviceRow {
  readonly deviceId: string
  readonly deviceClass: string
  readonly enabled?: boolean
  readonly lastSeen: number | null
  readonly online?: boolean
}

export interface DevicePage {
  readonly devices: ReadonlyArray<DeviceRow>
  readonly nextCursor?: string
  readonly total?: number
  readonly onlineWindowMs?: number
}

export interface Reading {
  readonly deviceId: string
  readonly deviceClass: string
  readonly classVersion?: number
  readonly msgId: string
  readonly ts: number
  readonly receivedAt: number
  readonly values: Readonly<Record<string, FieldValue>>
}

export interface Aggregates {
  readonly from: number
  readonly to: number
  readonly intervalMs: number
  readonly buckets: ReadonlyArray<{ start: number; values: Readonly<Record<string, number | null>> }>
}

export interface DeadLetter {
  readonly deviceId: string
  readonly receivedAt: number
  readonly shardId: string
  readonly sequenceNumber: string
  readonly reason: string
  readonly raw: string
}

export interface DeadLetterPage {
  readonly deadLetters: ReadonlyArray<DeadLetter>
  readonly nextCursor?: string
}

export interface FieldDefinition {
  readonly type: string
  readonly from?: string
  readonly unit?: string
  readonly min?: number
  readonly max?: number
  readonly [other: string]: unknown
}

export interface ClassDefinition {
  readonly fields: Readonly<Record<string, FieldDefinition>>
  readonly time_field?: string
  readonly time_format?: string
  readonly message_id_field?: string
}

export interface ClassSummary {
  readonly name: string
  readonly shared: boolean
  readonly source: "config" | "api"
  readonly version: number
  readonly definition: ClassDefinition
}

export interface ClassDetail {
  readonly name: string
  readonly shared: boolean
  readonly source: "config" | "api"
  readonly versions: ReadonlyArray<{ version: number; definition: ClassDefinition }>
}

export interface DeviceState {
  readonly id: string
  readonly class: string
  readonly enabled: boolean
  readonly source: "config" | "api"
}

export interface Overview {
  readonly at: number
  readonly source: "machine" | "process"
  readonly ingestedTotal: number | null
  readonly storedTotal: number | null
  readonly deadLettersTotal: number | null
  readonly streamLagMs: number | null
  readonly liveSubscribers: number | null
  readonly tenant: {
    readonly devices: number
    readonly online: number
    readonly onlineWindowMs: number
  } | null
}
