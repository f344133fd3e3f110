/**
 * One page of a tenant's device list. The registry says which devices exist (`DeviceIndex`,
 * sorted by id once per registry revision); the store says when each was last heard from. So a
 * page is a binary search and a slice of the index, and the store is asked only about the page:
 *
 * - no status: the slice, and one `lastSeen` query for its ids;
 * - `online`: the store lists the devices heard from within the window after the cursor, in id
 *   order (`seenSince`), and the index keeps those that exist and are of the class;
 * - `offline`: the index is walked from the cursor, each chunk's last-seen times fetched, and
 *   the online ones dropped.
 *
 * The two status filters may have to look past many devices that do not match (a fleet nearly
 * all online, listed `offline`), so each request examines at most `scanBudget` devices, in chunks
 * that start at the page size and double up to `maxChunk`: a page that hits the budget comes back
 * short (even empty), with a cursor where it stopped. Whatever the fleet, a request is at most 15
 * store queries (9 at the default page size) about at most 20,000 devices: ~100 ms on chDB.
 */
import { Effect } from "effect"
import type { StorageUnavailable, TelemetryStoreApi } from "../../storage/TelemetryStore.js"
import type { DeviceIndex, IndexedDevice } from "../../tenancy/Tenancy.js"

/** Most devices one status-filtered request examines. */
export const scanBudget = 20_000
/** Most devices one store query of a status-filtered request asks about. */
const maxChunk = 5_000

export type Status = "online" | "offline"

export interface ListQuery {
  readonly limit: number
  /** Start strictly after this device id. */
  readonly after?: string | undefined
  readonly prefix: string
  readonly deviceClass?: string | undefined
  readonly status?: Status | undefined
  /** Devices last heard from at or after this instant (epoch ms) are online. */
  readonly onlineSince: number
}

export interface ListedDevice {
  readonly deviceId: string
  readonly deviceClass: string
  readonly enabled: boolean
  readonly lastSeen: number | null
  readonly online: boolean
}

export interface ListPage {
  readonly devices: ReadonlyArray<ListedDevice>
  /** The device id the next page starts after; absent on the last page. */
  readonly after?: string | undefined
  /** Devices matching the prefix and class, whatever their status. */
  readonly total: number
}

/** The first index at which `holds` is false, for a `holds` true on a prefix of `list` only. */
const partition = (list: ReadonlyArray<IndexedDevice>, holds: (id: string) => boolean): number => {
  let lo = 0
  let hi = list.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (holds(list[mid]!.deviceId)) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** The devices matching the filters, as a range of a sorted list, and where the page starts. */
const candidates = (index: DeviceIndex, query: ListQuery) => {
  const list = query.deviceClass === undefined ? index.all : (index.byClass.get(query.deviceClass) ?? [])
  const { prefix, after } = query
  // Sorted ids starting with `prefix` are contiguous: after those below it, before those above.
  const start = partition(list, (id) => id < prefix)
  const end = partition(list, (id) => id < prefix || id.startsWith(prefix))
  const from =
    after === undefined
      ? start
      : Math.max(
          start,
          partition(list, (id) => id <= after),
        )
  return { list, start, end, from }
}

const listed = (d: IndexedDevice, lastSeen: number | undefined, onlineSince: number): ListedDevice => ({
  deviceId: d.deviceId,
  deviceClass: d.deviceClass,
  enabled: d.enabled,
  lastSeen: lastSeen ?? null,
  online: lastSeen !== undefined && lastSeen >= onlineSince,
})

/** The page `query` asks for, of the devices in `index`. */
export const page = (
  store: TelemetryStoreApi,
  tenantId: string,
  index: DeviceIndex,
  query: ListQuery,
): Effect.Effect<ListPage, StorageUnavailable> =>
  Effect.gen(function* () {
    const range = candidates(index, query)
    const total = range.end - range.start
    const run = query.status === undefined ? all : query.status === "online" ? online : offline
    const result = yield* run(store, tenantId, range, query)
    return { ...result, total }
  }).pipe(
    // Every argument is checked before it reaches the store: a refusal there is a bug here.
    Effect.catchTag("InvalidQuery", (e) => Effect.die(e)),
  )

type Range = ReturnType<typeof candidates>
type Part = { readonly devices: ReadonlyArray<ListedDevice>; readonly after?: string | undefined }

const all = (store: TelemetryStoreApi, tenantId: string, range: Range, query: ListQuery) =>
  Effect.gen(function* () {
    const slice = range.list.slice(range.from, Math.min(range.from + query.limit, range.end))
    const seen = yield* store.lastSeen(
      tenantId,
      slice.map((d) => d.deviceId),
    )
    const devices = slice.map((d) => listed(d, seen.get(d.deviceId), query.onlineSince))
    const more = range.from + slice.length < range.end
    return { devices, after: more ? slice.at(-1)?.deviceId : undefined } satisfies Part
  })

const offline = (store: TelemetryStoreApi, tenantId: string, range: Range, query: ListQuery) =>
  Effect.gen(function* () {
    const devices: Array<ListedDevice> = []
    let pos = range.from
    let chunk = query.limit + 1
    while (pos < range.end && pos - range.from < scanBudget) {
      const slice = range.list.slice(pos, Math.min(pos + chunk, range.end, range.from + scanBudget))
      const seen = yield* store.lastSeen(
        tenantId,
        slice.map((d) => d.deviceId),
      )
      for (const d of slice) {
        pos++
        const device = listed(d, seen.get(d.deviceId), query.onlineSince)
        if (device.online) continue
        devices.push(device)
        if (devices.length === query.limit) {
          return { devices, after: pos < range.end ? d.deviceId : undefined } satisfies Part
        }
      }
      chunk = Math.min(chunk * 2, maxChunk)
    }
    // Out of budget: the next page goes on from the last device looked at.
    return { devices, after: pos < range.end ? range.list[pos - 1]?.deviceId : undefined } satisfies Part
  })

const online = (store: TelemetryStoreApi, tenantId: string, range: Range, query: ListQuery) =>
  Effect.gen(function* () {
    const devices: Array<ListedDevice> = []
    const { list } = range
    // Where the store's next query starts: after the last row looked at.
    let after = query.after
    let examined = 0
    let chunk = query.limit + 1
    while (examined < scanBudget) {
      const size = Math.min(chunk, scanBudget - examined)
      const rows = yield* store.seenSince(tenantId, {
        since: query.onlineSince,
        after,
        prefix: query.prefix,
        limit: size,
      })
      for (const [k, row] of rows.entries()) {
        examined++
        after = row.deviceId
        // Known to the store but not listed: deleted from the registry, or of another class.
        const d = list[partition(list, (id) => id < row.deviceId)]
        if (d === undefined || d.deviceId !== row.deviceId) continue
        devices.push(listed(d, row.lastSeen, query.onlineSince))
        if (devices.length === query.limit) {
          const more = k < rows.length - 1 || rows.length === size
          return { devices, after: more ? row.deviceId : undefined } satisfies Part
        }
      }
      if (rows.length < size) return { devices } satisfies Part
      chunk = Math.min(chunk * 2, maxChunk)
    }
    return { devices, after } satisfies Part
  })
