/**
 * The rows of the device registry as every backend stores them: one JSON body per row, of its
 * kind's shape, under its kind and id. Shared by `SqliteRegistry.ts` and `DynamoRegistry.ts`, so
 * that a row reads back the same from either store: a body is checked as it is read (valid JSON of
 * its kind's shape — the types of every field, not the content rules `RegistryState.ts` enforces
 * before a write — with the id it is stored under), and a commit checks each row it puts the same
 * way before it writes anything.
 */
import { Effect, Either, ParseResult, Schema } from "effect"
import { DeviceClassConfig } from "./PlatformConfig.js"
import {
  type Kind,
  type Mutation,
  type RegApiKey,
  type RegCertificateAuthority,
  type RegClaim,
  type RegDevice,
  type RegDeviceClass,
  type RegistryState,
  RegistryUnavailable,
  type RegTenant,
  type Row,
  rowId,
} from "./Registry.js"

export const KINDS: ReadonlyArray<string> = [
  "tenant",
  "apiKey",
  "class",
  "device",
  "authority",
  "claim",
] satisfies ReadonlyArray<Kind>

// The shapes of stored bodies: field types only. The content rules (id patterns, references,
// ranges) are checked before a commit; a reader refusing a row for a rule tightened since it was
// written would take the registry down on every process for a row that was fine when written.
const Source = Schema.Literal("config", "api")
const TenantBody = Schema.Struct({
  id: Schema.String,
  maxMessagesPerSecond: Schema.optional(Schema.Number),
  rawRetentionDays: Schema.optional(Schema.Number),
  rollupRetentionDays: Schema.optional(Schema.Number),
  source: Source,
})
const ApiKeyBody = Schema.Struct({
  hash: Schema.String,
  tenantId: Schema.NullOr(Schema.String),
  role: Schema.Literal("operator", "admin", "read"),
  name: Schema.String,
  source: Source,
})
const ClassBody = Schema.Struct({
  name: Schema.String,
  tenantId: Schema.NullOr(Schema.String),
  versions: Schema.Array(
    Schema.Struct({
      version: Schema.Number,
      // The configuration file's schema without its refinements: the shape, not the rules.
      definition: Schema.encodedSchema(DeviceClassConfig),
    }),
  ),
  source: Source,
})
const DeviceBody = Schema.Struct({
  id: Schema.String,
  tenantId: Schema.String,
  className: Schema.String,
  enabled: Schema.Boolean,
  credentials: Schema.Array(Schema.Struct({ hash: Schema.String, expiresAt: Schema.NullOr(Schema.Number) })),
  source: Source,
})

const AuthorityBody = Schema.Struct({
  id: Schema.String,
  tenantId: Schema.String,
  pem: Schema.String,
  autoRegister: Schema.Boolean,
  defaultClass: Schema.NullOr(Schema.String),
  name: Schema.String,
  source: Source,
})
const ClaimBody = Schema.Struct({
  hash: Schema.String,
  tenantId: Schema.String,
  className: Schema.String,
  remaining: Schema.Number,
  expiresAt: Schema.Number,
  revoked: Schema.Boolean,
  name: Schema.String,
  source: Source,
})

const decodeOf = <A, I>(schema: Schema.Schema<A, I>) => Schema.decodeUnknownEither(Schema.parseJson(schema))
const decodeTenant: (body: string) => Either.Either<RegTenant, ParseResult.ParseError> = decodeOf(TenantBody)
const decodeApiKey: (body: string) => Either.Either<RegApiKey, ParseResult.ParseError> = decodeOf(ApiKeyBody)
const decodeClass: (body: string) => Either.Either<RegDeviceClass, ParseResult.ParseError> =
  decodeOf(ClassBody)
const decodeDevice: (body: string) => Either.Either<RegDevice, ParseResult.ParseError> = decodeOf(DeviceBody)
const decodeAuthority: (body: string) => Either.Either<RegCertificateAuthority, ParseResult.ParseError> =
  decodeOf(AuthorityBody)
const decodeClaim: (body: string) => Either.Either<RegClaim, ParseResult.ParseError> = decodeOf(ClaimBody)

export interface StoredRow {
  readonly kind: string
  readonly id: string
  readonly body: string
}

export const describe = (kind: string, id: string) => `${kind} ${JSON.stringify(id)}`

/** A stored row as a Row, or what is wrong with it. */
export const toRow = (stored: StoredRow): Either.Either<Row, string> => {
  const decoded: Either.Either<Row, ParseResult.ParseError> | undefined =
    stored.kind === "tenant"
      ? Either.map(decodeTenant(stored.body), (value) => ({ kind: "tenant", value }))
      : stored.kind === "apiKey"
        ? Either.map(decodeApiKey(stored.body), (value) => ({ kind: "apiKey", value }))
        : stored.kind === "class"
          ? Either.map(decodeClass(stored.body), (value) => ({ kind: "class", value }))
          : stored.kind === "device"
            ? Either.map(decodeDevice(stored.body), (value) => ({ kind: "device", value }))
            : stored.kind === "authority"
              ? Either.map(decodeAuthority(stored.body), (value) => ({ kind: "authority", value }))
              : stored.kind === "claim"
                ? Either.map(decodeClaim(stored.body), (value) => ({ kind: "claim", value }))
                : undefined
  if (decoded === undefined) return Either.left("unknown kind")
  if (Either.isLeft(decoded)) {
    return Either.left(ParseResult.TreeFormatter.formatErrorSync(decoded.left).replaceAll("\n", " "))
  }
  const id = rowId(decoded.right)
  return id === stored.id ? Either.right(decoded.right) : Either.left(`its body is of ${JSON.stringify(id)}`)
}

/** Decodes stored rows, failing on the first corrupt one. */
export const toRows = (operation: string, stored: ReadonlyArray<StoredRow>) =>
  Effect.suspend(() => {
    const rows: Array<Row> = []
    for (const s of stored) {
      const row = toRow(s)
      if (Either.isLeft(row)) {
        const reason = `row ${describe(s.kind, s.id)} is corrupt: ${row.left}`
        return Effect.fail(new RegistryUnavailable({ operation, reason }))
      }
      rows.push(row.right)
    }
    return Effect.succeed(rows)
  })

/**
 * The rows of `mutations` as they will be stored, each checked to read back: a value JSON cannot
 * carry (NaN, a cast) must fail its writer, not every reader after it.
 */
export const toStored = (mutations: ReadonlyArray<Mutation>) =>
  Effect.suspend(() => {
    const stored: Array<StoredRow | { readonly kind: Kind; readonly id: string; readonly body?: undefined }> =
      []
    for (const m of mutations) {
      if (m._tag === "Remove") {
        stored.push({ kind: m.kind, id: m.id })
        continue
      }
      const row = { kind: m.row.kind, id: rowId(m.row), body: JSON.stringify(m.row.value) }
      const check = toRow(row)
      if (Either.isLeft(check)) {
        const reason = `row ${describe(row.kind, row.id)} would not read back: ${check.left}`
        return Effect.fail(new RegistryUnavailable({ operation: "commit", reason }))
      }
      stored.push(row)
    }
    return Effect.succeed(stored)
  })

/** The state of `rows` at `revision`. */
export const stateOf = (revision: number, rows: ReadonlyArray<Row>): RegistryState => {
  const tenants = new Map<string, RegTenant>()
  const apiKeys = new Map<string, RegApiKey>()
  const classes = new Map<string, RegDeviceClass>()
  const devices = new Map<string, RegDevice>()
  const authorities = new Map<string, RegCertificateAuthority>()
  const claims = new Map<string, RegClaim>()
  for (const row of rows) {
    switch (row.kind) {
      case "tenant":
        tenants.set(row.value.id, row.value)
        break
      case "apiKey":
        apiKeys.set(row.value.hash, row.value)
        break
      case "class":
        classes.set(row.value.name, row.value)
        break
      case "device":
        devices.set(row.value.id, row.value)
        break
      case "authority":
        authorities.set(row.value.id, row.value)
        break
      case "claim":
        claims.set(row.value.hash, row.value)
        break
    }
  }
  return { revision, tenants, apiKeys, classes, devices, authorities, claims }
}
