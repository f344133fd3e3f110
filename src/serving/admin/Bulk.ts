/**
 * `POST /v1/devices/bulk`: the rows of a JSON array or a CSV file, and each row's problems
 * against a registry state. All or nothing: one bad row refuses the request, listing every bad
 * row (the first `MAX_LISTED`, with the count of all).
 *
 * Row numbers are 1-based positions among the devices: a JSON array's index + 1; in CSV, the line
 * number minus one (the header is line 1; blank lines are skipped but keep the numbering, so row
 * N is always line N + 1 of the file).
 */
import { Either, Schema } from "effect"
import { DeviceConfig } from "../../tenancy/PlatformConfig.js"
import type { RegDeviceClass } from "../../tenancy/Registry.js"
import { BulkRefused } from "../ApiError.js"
import { invalid, parseJson, problemsOf } from "./Body.js"

/** Most devices in one request. */
export const MAX_ROWS = 100_000
/** Most bad rows listed in a refusal. */
export const MAX_LISTED = 100

/** A row as sent: its fields not yet checked. */
export interface RawRow {
  readonly row: number
  readonly id: unknown
  readonly class: unknown
  /** What is wrong with the row's shape (not an object, wrong column count, unknown keys). */
  readonly shape?: string
}

/** A row that passed: what to create. */
export interface GoodRow {
  readonly id: string
  readonly class: string
}

const tooMany = (n: number) =>
  invalid([{ field: "", reason: `at most ${MAX_ROWS} devices per request, got ${n}: split the request` }])

const none = invalid([{ field: "", reason: "no devices in the request" }])

/** The rows of a JSON body: an array of `{id, class}`. */
export const jsonRows = (body: string) =>
  Either.flatMap(
    parseJson(body),
    (value): Either.Either<ReadonlyArray<RawRow>, ReturnType<typeof invalid>> => {
      if (!Array.isArray(value))
        return Either.left(invalid([{ field: "", reason: "expected a JSON array of {id, class}" }]))
      if (value.length === 0) return Either.left(none)
      if (value.length > MAX_ROWS) return Either.left(tooMany(value.length))
      return Either.right(
        value.map((item: unknown, i): RawRow => {
          const row = i + 1
          if (typeof item !== "object" || item === null || Array.isArray(item))
            return { row, id: undefined, class: undefined, shape: "expected an object {id, class}" }
          const record = item as Record<string, unknown>
          const extra = Object.keys(record).filter((k) => k !== "id" && k !== "class")
          return {
            row,
            id: record.id,
            class: record.class,
            ...(extra.length === 0
              ? {}
              : {
                  shape: `unexpected key${extra.length > 1 ? "s" : ""} ${extra.map((k) => JSON.stringify(k)).join(", ")}`,
                }),
          }
        }),
      )
    },
  )

const cell = (s: string) => {
  const t = s.trim()
  return t.length >= 2 && t.startsWith('"') && t.endsWith('"') ? t.slice(1, -1).replaceAll('""', '"') : t
}

/** The rows of a CSV body: a header `id,class` (either order), then one device per line. */
export const csvRows = (body: string): Either.Either<ReadonlyArray<RawRow>, ReturnType<typeof invalid>> => {
  const lines = body.replace(/^\uFEFF/, "").split(/\r?\n/)
  const header = lines[0]?.split(",").map((h) => cell(h).toLowerCase()) ?? []
  const idAt = header.indexOf("id")
  const classAt = header.indexOf("class")
  if (header.length !== 2 || idAt < 0 || classAt < 0)
    return Either.left(
      invalid([
        {
          field: "",
          reason: `the first line must be the header id,class, got ${JSON.stringify(lines[0] ?? "")}`,
        },
      ]),
    )
  const rows: Array<RawRow> = []
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!
    if (line.trim() === "") continue
    const cells = line.split(",")
    rows.push(
      cells.length === 2
        ? { row: i, id: cell(cells[idAt]!), class: cell(cells[classAt]!) }
        : {
            row: i,
            id: cell(cells[idAt] ?? ""),
            class: undefined,
            shape: `expected 2 columns (id,class), got ${cells.length}`,
          },
    )
    if (rows.length > MAX_ROWS) return Either.left(tooMany(lines.length - 1))
  }
  return rows.length === 0 ? Either.left(none) : Either.right(rows)
}

const checkId = Schema.decodeUnknownEither(DeviceConfig.fields.id)

const idReason = (id: unknown): string | undefined => {
  if (typeof id !== "string") return id === undefined ? "id: is missing" : "id: expected a string"
  const decoded = checkId(id)
  return Either.isLeft(decoded) ? `id: ${problemsOf(decoded.left)[0]?.reason ?? "is malformed"}` : undefined
}

/**
 * The rows to create, or the refusal listing each bad row: `classes` are the registry's,
 * `visible` says which the tenant may use, `taken` which ids are registered already.
 */
export const check = (
  rows: ReadonlyArray<RawRow>,
  classes: ReadonlyMap<string, RegDeviceClass>,
  tenantId: string,
  taken: (id: string) => boolean,
): Either.Either<ReadonlyArray<GoodRow>, BulkRefused> => {
  const errors: Array<{ row: number; id: string | null; reason: string }> = []
  let errorCount = 0
  const firstRow = new Map<string, number>()
  const good: Array<GoodRow> = []
  for (const r of rows) {
    const reasons: Array<string> = []
    if (r.shape !== undefined) reasons.push(r.shape)
    const idProblem = idReason(r.id)
    if (idProblem !== undefined) reasons.push(idProblem)
    if (typeof r.class !== "string") {
      if (r.shape === undefined)
        reasons.push(r.class === undefined ? "class: is missing" : "class: expected a string")
    } else {
      const c = classes.get(r.class)
      if (c === undefined || (c.tenantId !== null && c.tenantId !== tenantId))
        reasons.push(`class: unknown device class ${JSON.stringify(r.class)}`)
    }
    if (idProblem === undefined) {
      const id = r.id as string
      const first = firstRow.get(id)
      if (first !== undefined) reasons.push(`id: also at row ${first}`)
      else firstRow.set(id, r.row)
      if (taken(id)) reasons.push(`id: ${JSON.stringify(id)} is already registered`)
    }
    if (reasons.length > 0) {
      errorCount++
      if (errors.length < MAX_LISTED)
        errors.push({ row: r.row, id: typeof r.id === "string" ? r.id : null, reason: reasons.join("; ") })
    } else good.push({ id: r.id as string, class: r.class as string })
  }
  if (errorCount === 0) return Either.right(good)
  return Either.left(
    new BulkRefused({
      message: `${errorCount} of ${rows.length} rows are bad, nothing was created${
        errorCount > errors.length ? ` (the first ${errors.length} are listed)` : ""
      }`,
      error_count: errorCount,
      errors,
    }),
  )
}
