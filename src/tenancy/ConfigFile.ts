/**
 * Loads the platform configuration file (`--config FILE`, YAML or JSON). A file is accepted only
 * whole: its syntax, its schema (unknown keys included) and what spans values — references,
 * uniqueness, ranges — are all checked, and every problem is reported with its place in the file.
 */
import { readFile } from "node:fs/promises"
import { extname, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { Config, Effect, Either, ParseResult, Schema } from "effect"
import { type Document, isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from "yaml"
import * as DeviceClass from "./DeviceClass.js"
import { PlatformConfig, retentionProblem } from "./PlatformConfig.js"

/** One problem: where in the file (a path like `devices[2].class`, and the line when known) and why. */
export const ConfigProblem = Schema.Struct({
  /** Empty for the file as a whole. */
  path: Schema.String,
  reason: Schema.String,
  line: Schema.optional(Schema.Number),
  column: Schema.optional(Schema.Number),
})
export type ConfigProblem = typeof ConfigProblem.Type

/** The configuration file cannot be used; the message lists every problem, one per line. */
export class ConfigFileError extends Schema.TaggedError<ConfigFileError>()("ConfigFileError", {
  file: Schema.String,
  problems: Schema.NonEmptyArray(ConfigProblem),
}) {
  override get message() {
    const shown = this.problems.slice(0, MAX_SHOWN).map((p) => {
      const where = p.line === undefined ? "" : ` (line ${p.line}, column ${p.column ?? 1})`
      return `${this.file}: ${p.path === "" ? "" : `${p.path}: `}${p.reason}${where}`
    })
    const more = this.problems.length - shown.length
    return (more > 0 ? [...shown, `${this.file}: … and ${more} more problems`] : shown).join("\n")
  }
}
const MAX_SHOWN = 20

type Path = ReadonlyArray<PropertyKey>

/** `devices[2].class`, `device_classes[0].fields["odd key"]`. */
export const formatPath = (path: Path): string =>
  path
    .map((key, i) =>
      typeof key === "number"
        ? `[${key}]`
        : typeof key === "string" && /^[A-Za-z_][A-Za-z0-9_]*$/.test(key)
          ? i === 0
            ? key
            : `.${key}`
          : `[${JSON.stringify(String(key))}]`,
    )
    .join("")

/** Line and column (1-based) of the key or item a path ends at, or of its nearest present parent. */
const locate = (doc: Document, lines: LineCounter, path: Path) => {
  let node: unknown = doc.contents
  let at: Node | null = doc.contents
  for (const key of path) {
    if (isMap(node)) {
      const pair = node.items.find(
        (p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(key),
      )
      if (pair === undefined) break
      if (isScalar(pair.key)) at = pair.key
      node = pair.value
    } else if (isSeq(node) && typeof key === "number") {
      const item = node.items[key]
      if (item === undefined) break
      if (isScalar(item) || isMap(item) || isSeq(item)) at = item
      node = item
    } else break
  }
  if (at?.range == null) return {}
  const { line, col } = lines.linePos(at.range[0])
  return { line, column: col }
}

const fail = (file: string, problems: ReadonlyArray<ConfigProblem>) =>
  new ConfigFileError({ file, problems: problems as [ConfigProblem, ...Array<ConfigProblem>] })

const decodeConfig = Schema.decodeUnknownEither(PlatformConfig, { errors: "all", onExcessProperty: "error" })

/**
 * The schema's issues, without the "Expected undefined" that every optional key adds beside the
 * real reason (an optional key is a union with undefined).
 */
const schemaIssues = (error: ParseResult.ParseError) => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const key = (path: Path) => formatPath(path)
  const real = new Set(
    issues.filter((i) => !i.message.startsWith("Expected undefined")).map((i) => key(i.path)),
  )
  return issues.filter((i) => !i.message.startsWith("Expected undefined") || !real.has(key(i.path)))
}

/** Parses and checks the text of a configuration file; `file` names it in errors and picks the syntax. */
export const parse = (file: string, text: string): Either.Either<PlatformConfig, ConfigFileError> => {
  const ext = extname(file).toLowerCase()
  if (ext !== ".yaml" && ext !== ".yml" && ext !== ".json")
    return Either.left(
      fail(file, [{ path: "", reason: `unsupported file type "${ext}": use .yaml, .yml or .json` }]),
    )
  const lines = new LineCounter()
  // YAML 1.2 (so `no` stays a string); for .json the strict JSON schema. Duplicate keys are errors.
  const doc = parseDocument(text, {
    lineCounter: lines,
    prettyErrors: false,
    uniqueKeys: true,
    schema: ext === ".json" ? "json" : "core",
  })
  if (doc.errors.length > 0)
    return Either.left(
      fail(
        file,
        doc.errors.map((e) => {
          const { line, col } = lines.linePos(e.pos[0])
          const reason =
            e.code === "MULTIPLE_DOCS" ? "the file must hold one document, found a second" : e.message
          return { path: "", reason: `syntax error: ${reason}`, line, column: col }
        }),
      ),
    )
  const value: unknown = doc.toJS({ maxAliasCount: 1000 })
  if (typeof value !== "object" || value === null || Array.isArray(value))
    return Either.left(
      fail(file, [
        {
          path: "",
          reason:
            value == null
              ? "the file is empty"
              : "expected a mapping with the keys tenants, device_classes and devices",
        },
      ]),
    )
  const at = (path: Path, reason: string): ConfigProblem => ({
    path: formatPath(path),
    reason,
    ...locate(doc, lines, path),
  })
  const decoded = decodeConfig(value)
  if (Either.isLeft(decoded))
    return Either.left(
      fail(
        file,
        schemaIssues(decoded.left).map((i) => at(i.path, i.message)),
      ),
    )
  const problems = check(decoded.right).map((p) => at(p.path, p.reason))
  return problems.length > 0 ? Either.left(fail(file, problems)) : Either.right(decoded.right)
}

/** Reads, parses and checks a configuration file (.yaml, .yml or .json). */
export const load = Effect.fn("ConfigFile.load")(function* (path: string) {
  const text = yield* Effect.tryPromise({
    try: () => readFile(path, "utf8"),
    catch: (e) =>
      fail(path, [
        { path: "", reason: `cannot read the file: ${e instanceof Error ? e.message : String(e)}` },
      ]),
  })
  return yield* parse(path, text)
})

/** What spans values: references to tenants and classes, unique ids and secrets, class definitions. */
export const check = (config: PlatformConfig): ReadonlyArray<{ path: Path; reason: string }> => {
  const problems: Array<{ path: Path; reason: string }> = []
  const add = (path: Path, reason: string) => problems.push({ path, reason })
  // value -> where it was first seen
  const firstSeen = (what: string) => {
    const seen = new Map<string, Path>()
    return (value: string, path: Path, secret = false) => {
      const first = seen.get(value)
      if (first === undefined) seen.set(value, path)
      // Secrets are never echoed: the message points at the other place instead.
      else
        add(
          path,
          `${secret ? what : `${what} ${JSON.stringify(value)}`} is already used at ${formatPath(first)}`,
        )
    }
  }

  const tenantIds = firstSeen("tenant id")
  const secrets = firstSeen("this secret")
  for (const [k, key] of (config.operator_keys ?? []).entries()) secrets(key, ["operator_keys", k], true)
  for (const [t, tenant] of config.tenants.entries()) {
    tenantIds(tenant.id, ["tenants", t, "id"])
    const retention = retentionProblem(tenant.raw_retention_days, tenant.rollup_retention_days)
    if (retention !== undefined) add(["tenants", t, "rollup_retention_days"], retention)
    for (const [k, key] of tenant.api_keys.entries()) secrets(key, ["tenants", t, "api_keys", k], true)
    for (const [k, key] of (tenant.read_keys ?? []).entries())
      secrets(key, ["tenants", t, "read_keys", k], true)
  }

  const classNames = firstSeen("device class name")
  for (const [c, cls] of config.device_classes.entries()) {
    classNames(cls.name, ["device_classes", c, "name"])
    for (const p of DeviceClass.check(cls)) add(["device_classes", c, ...p.path], p.reason)
  }

  const tenants = new Set(config.tenants.map((t) => t.id))
  const classes = new Set(config.device_classes.map((c) => c.name))
  const deviceIds = firstSeen("device id")
  for (const [d, device] of config.devices.entries()) {
    deviceIds(device.id, ["devices", d, "id"])
    if (!tenants.has(device.tenant))
      add(["devices", d, "tenant"], `unknown tenant ${JSON.stringify(device.tenant)}`)
    if (!classes.has(device.class))
      add(["devices", d, "class"], `unknown device class ${JSON.stringify(device.class)}`)
    // One namespace for API keys and credentials: a bearer token must identify one principal.
    secrets(device.credential, ["devices", d, "credential"], true)
  }
  for (const [f, fleet] of (config.fleets ?? []).entries()) {
    if (!tenants.has(fleet.tenant))
      add(["fleets", f, "tenant"], `unknown tenant ${JSON.stringify(fleet.tenant)}`)
    if (!classes.has(fleet.class))
      add(["fleets", f, "class"], `unknown device class ${JSON.stringify(fleet.class)}`)
    // Checking the first and last ids is enough: fleet ids are the prefix plus 1..count.
    for (const n of new Set([1, fleet.count])) deviceIds(`${fleet.prefix}${n}`, ["fleets", f, "prefix"])
  }
  return problems
}

/** The platform configuration file's path (SLUICE_CONFIG_FILE, `--config`). */
export const path = Config.string("config_file").pipe(
  Config.withDefault("config/demo.yaml"),
  Config.nested("sluice"),
)

/**
 * Whether the settings name the demo configuration bundled with Sluice (`config/demo.yaml`),
 * whose credentials are public: only then does the start-up banner print one.
 */
export const isBundledDemo = Effect.map(
  path,
  (p) => resolve(p) === fileURLToPath(new URL("../../config/demo.yaml", import.meta.url)),
)

/** The configuration file named by the settings, loaded and validated. */
export const fromSettings = Effect.flatMap(path, load)
