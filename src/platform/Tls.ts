/**
 * TLS for the listeners: a certificate and its private key from PEM files (SLUICE_TLS_CERT_FILE,
 * SLUICE_TLS_KEY_FILE), read again whenever the files change, with no restart. The files are
 * polled (a `stat` of each every `reload_interval_ms`, 5 s by default) rather than watched with
 * inotify: a poll sees a file replaced by a rename (editors, `mv`, cert-manager's symlink swap of a
 * Kubernetes secret) as well as one written in place. A change is loaded and checked (the key
 * matches the certificate, OpenSSL accepts both) before it replaces anything; a bad one is logged
 * and the certificate in use stays.
 *
 * A listener is created with the current certificate (`serverOptions()`, or `deviceOptions()` for
 * a listener of devices) and attached (`attach`): every reload gives it `setSecureContext`. New
 * connections get the new certificate; connections already open keep the one they were opened with.
 *
 * Client certificates (the plumbing for mutual TLS): with SLUICE_TLS_CA_FILE, or roots given by
 * `ClientCertificateRoots` (a registry of tenant CAs), the device listeners ask a client for a
 * certificate and verify it against those roots, but never refuse a connection for it: whether a
 * certificate is good enough is the broker's decision, so that it can say why
 * (`src/ingress/ClientCertificate.ts`).
 */
import { createPrivateKey, X509Certificate } from "node:crypto"
import { readFile, stat } from "node:fs/promises"
import tls from "node:tls"
import {
  Config,
  ConfigError,
  Context,
  Data,
  Duration,
  Effect,
  Either,
  Layer,
  Option,
  Schedule,
  type Scope,
} from "effect"

export interface TlsSettings {
  /** PEM certificate of the listeners, optionally followed by its intermediates (SLUICE_TLS_CERT_FILE). */
  readonly certFile: string
  /** PEM private key of that certificate, unencrypted (SLUICE_TLS_KEY_FILE). */
  readonly keyFile: string
  /**
   * PEM CA certificates that client certificates are verified against (SLUICE_TLS_CA_FILE). Set,
   * the MQTTS listener asks clients for a certificate. Optional.
   */
  readonly caFile: string | undefined
  /** How often the files are checked for a change (SLUICE_TLS_RELOAD_INTERVAL_MS). Default 5 s. */
  readonly reloadIntervalMs: number
}

/** The default of `reload_interval_ms`. */
export const DEFAULT_RELOAD_INTERVAL_MS = 5_000

const key = <A>(config: Config.Config<A>) => config.pipe(Config.nested("tls"), Config.nested("sluice"))

const file = (name: string) =>
  key(Config.option(Config.string(name))).pipe(
    Config.map(Option.filter((path) => path.trim().length > 0)),
    Config.map(Option.getOrUndefined),
  )

/**
 * The TLS settings (SLUICE_TLS_*): none when no certificate is configured (the listeners are
 * plain). A certificate without its key, a key without its certificate, or a CA file without
 * either is refused.
 */
export const config: Config.Config<Option.Option<TlsSettings>> = Config.all({
  certFile: file("cert_file"),
  keyFile: file("key_file"),
  caFile: file("ca_file"),
  reloadIntervalMs: key(
    Config.integer("reload_interval_ms").pipe(
      Config.withDefault(DEFAULT_RELOAD_INTERVAL_MS),
      Config.validate({ message: "must be at least 100", validation: (n) => n >= 100 }),
    ),
  ),
}).pipe(
  Config.mapOrFail(({ certFile, keyFile, caFile, reloadIntervalMs }) => {
    const missing = (path: string, message: string) =>
      Either.left(ConfigError.InvalidData(["sluice", "tls", path], message))
    if (certFile === undefined && keyFile === undefined) {
      return caFile === undefined
        ? Either.right(Option.none())
        : missing("ca_file", "SLUICE_TLS_CA_FILE needs SLUICE_TLS_CERT_FILE and SLUICE_TLS_KEY_FILE")
    }
    if (certFile === undefined) return missing("cert_file", "SLUICE_TLS_KEY_FILE needs SLUICE_TLS_CERT_FILE")
    if (keyFile === undefined) return missing("key_file", "SLUICE_TLS_CERT_FILE needs SLUICE_TLS_KEY_FILE")
    return Either.right(Option.some({ certFile, keyFile, caFile, reloadIntervalMs }))
  }),
)

/** A certificate, key or CA file that cannot be used. */
export class TlsError extends Data.TaggedError("TlsError")<{
  readonly file: string
  readonly reason: string
}> {
  override get message() {
    return `TLS: ${this.file}: ${this.reason}`
  }
}

/**
 * CA certificates (PEM) that client certificates may chain to, besides SLUICE_TLS_CA_FILE: where a
 * registry of tenant CAs plugs in. Read again at every reload check, so a CA registered later is
 * trusted within `reload_interval_ms`.
 */
export class ClientCertificateRoots extends Context.Tag("sluice/platform/ClientCertificateRoots")<
  ClientCertificateRoots,
  () => ReadonlyArray<string | Buffer>
>() {}

/** What a log line says of a certificate. */
export interface CertificateSummary {
  readonly subject: string
  readonly issuer: string
  readonly serialNumber: string
  readonly validFrom: string
  readonly validTo: string
  readonly fingerprint256: string
}

/** A certificate's subject or issuer on one line: `CN=localhost, O=Example`. */
const oneLine = (name: string) => name.split("\n").join(", ")

export const summarize = (certificate: X509Certificate): CertificateSummary => ({
  subject: oneLine(certificate.subject),
  issuer: oneLine(certificate.issuer),
  serialNumber: certificate.serialNumber,
  validFrom: new Date(certificate.validFrom).toISOString(),
  validTo: new Date(certificate.validTo).toISOString(),
  fingerprint256: certificate.fingerprint256,
})

/** The listeners' TLS material, kept current until its scope closes. */
export interface ServerTls {
  readonly settings: TlsSettings
  /** Whether the device listeners ask clients for a certificate (a CA file or client certificate roots). */
  readonly requestClientCertificates: boolean
  /** The certificate in use now. */
  readonly certificate: () => X509Certificate
  /** Options for `https.createServer`/`tls.createServer`: the key and certificate in use now. */
  readonly serverOptions: () => tls.SecureContextOptions
  /**
   * The same for a listener of devices: with the roots that client certificates are verified
   * against (`ca`), when there are any.
   */
  readonly deviceOptions: () => tls.SecureContextOptions
  /**
   * Keeps `server`'s certificate current (`setSecureContext` with `serverOptions()`, or
   * `deviceOptions()` for `"devices"`, on every reload) until the scope closes.
   */
  readonly attach: (server: tls.Server, use?: "http" | "devices") => Effect.Effect<void, never, Scope.Scope>
  /** Reads the files and roots again now, as a change would; a bad file is logged and changes nothing. */
  readonly reload: Effect.Effect<void>
}

interface Material {
  readonly key: Buffer
  readonly cert: Buffer
  /** The CA file's certificates and the client certificate roots together. */
  readonly ca: ReadonlyArray<Buffer | string>
  readonly certificate: X509Certificate
}

const readPem = (path: string) =>
  Effect.tryPromise({
    try: () => readFile(path),
    catch: (error) => new TlsError({ file: path, reason: `cannot read it: ${(error as Error).message}` }),
  })

const attempt = <A>(file: string, what: string, f: () => A) =>
  Effect.try({
    try: f,
    catch: (error) => new TlsError({ file, reason: `${what}: ${(error as Error).message}` }),
  })

const sameBytes = (a: ReadonlyArray<Buffer | string>, b: ReadonlyArray<Buffer | string>) =>
  a.length === b.length && a.every((x, i) => Buffer.from(x).equals(Buffer.from(b[i]!)))

/** Reads and checks the files; nothing is used unless all of it is good. */
const load = (settings: TlsSettings, roots: ReadonlyArray<string | Buffer>) =>
  Effect.gen(function* () {
    const cert = yield* readPem(settings.certFile)
    const key = yield* readPem(settings.keyFile)
    const caFile = settings.caFile === undefined ? undefined : yield* readPem(settings.caFile)
    const certificate = yield* attempt(
      settings.certFile,
      "not a PEM certificate",
      () => new X509Certificate(cert),
    )
    const privateKey = yield* attempt(settings.keyFile, "not an unencrypted PEM private key", () =>
      createPrivateKey(key),
    )
    if (!certificate.checkPrivateKey(privateKey)) {
      return yield* new TlsError({
        file: settings.keyFile,
        reason: `the key is not the key of the certificate in ${settings.certFile}`,
      })
    }
    if (caFile !== undefined) {
      yield* attempt(settings.caFile!, "not a PEM certificate", () => new X509Certificate(caFile))
    }
    const ca = caFile === undefined ? roots : [caFile, ...roots]
    // What a listener will do with them, now, so that a reload cannot fail halfway.
    yield* attempt(settings.certFile, "OpenSSL refuses it", () =>
      tls.createSecureContext(ca.length === 0 ? { key, cert } : { key, cert, ca: [...ca] }),
    )
    return { key, cert, ca, certificate } satisfies Material
  })

/** The identity of the files now (inode, size, times), to notice a change without reading them. */
const fingerprintFiles = (paths: ReadonlyArray<string>) =>
  Effect.promise(() =>
    Promise.all(
      paths.map((path) =>
        stat(path).then(
          (s) => `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`,
          (error: NodeJS.ErrnoException) => `missing:${error.code ?? error.message}`,
        ),
      ),
    ).then((parts) => parts.join("|")),
  )

/**
 * Loads the files (failing if they cannot be used: the process must not start without the
 * certificate it was told to use), then checks them every `reloadIntervalMs` until the scope
 * closes. `clientCertificateRoots`: CA certificates that client certificates may chain to, besides
 * the CA file; given, device listeners ask for client certificates.
 */
export const make = (
  settings: TlsSettings,
  options: { readonly clientCertificateRoots?: (() => ReadonlyArray<string | Buffer>) | undefined } = {},
): Effect.Effect<ServerTls, TlsError, Scope.Scope> =>
  Effect.gen(function* () {
    const rootsOf = options.clientCertificateRoots ?? (() => [])
    const paths = [
      settings.certFile,
      settings.keyFile,
      ...(settings.caFile === undefined ? [] : [settings.caFile]),
    ]
    // What the last check read: a change of either is tried once (a bad one is not logged again
    // until it changes again).
    let lastFiles = yield* fingerprintFiles(paths)
    let lastRoots = rootsOf()
    let current = yield* load(settings, lastRoots)
    const servers = new Map<tls.Server, "http" | "devices">()
    const serverOptions = () => ({ key: current.key, cert: current.cert })
    const deviceOptions = () =>
      current.ca.length === 0
        ? serverOptions()
        : { key: current.key, cert: current.cert, ca: [...current.ca] }

    const summary = summarize(current.certificate)
    const expired = new Date(current.certificate.validTo).getTime() < Date.now()
    yield* (expired ? Effect.logWarning : Effect.logInfo)(
      `TLS certificate ${summary.subject} (serial ${summary.serialNumber}) valid until ${summary.validTo}` +
        (expired ? ": it has EXPIRED, clients will refuse it" : ""),
    ).pipe(Effect.annotateLogs({ certFile: settings.certFile, ...summary }))

    const check = (force: boolean) =>
      Effect.gen(function* () {
        const files = yield* fingerprintFiles(paths)
        const roots = rootsOf()
        if (!force && files === lastFiles && sameBytes(roots, lastRoots)) return
        lastFiles = files
        lastRoots = roots
        const loaded = yield* Effect.either(load(settings, roots))
        if (Either.isLeft(loaded)) {
          return yield* Effect.logError(
            `TLS certificate not reloaded, the one in use stays: ${loaded.left.message}`,
          ).pipe(Effect.annotateLogs({ file: loaded.left.file, inUse: current.certificate.serialNumber }))
        }
        const next = loaded.right
        if (next.cert.equals(current.cert) && next.key.equals(current.key) && sameBytes(next.ca, current.ca))
          return
        const sameCertificate = next.cert.equals(current.cert) && next.key.equals(current.key)
        current = next
        for (const [server, use] of servers)
          server.setSecureContext(use === "devices" ? deviceOptions() : serverOptions())
        const summary = summarize(next.certificate)
        yield* Effect.logInfo(
          sameCertificate
            ? `TLS client certificate roots reloaded: ${next.ca.length} CA certificate file(s) and root(s)`
            : `TLS certificate reloaded: ${summary.subject} (serial ${summary.serialNumber}) valid until ${summary.validTo}`,
        ).pipe(Effect.annotateLogs({ certFile: settings.certFile, clientRoots: next.ca.length, ...summary }))
      })

    yield* check(false).pipe(
      Effect.catchAllCause((cause) => Effect.logError("TLS reload check failed", cause)),
      Effect.repeat(Schedule.spaced(Duration.millis(settings.reloadIntervalMs))),
      Effect.forkScoped,
    )

    return {
      settings,
      requestClientCertificates:
        settings.caFile !== undefined || options.clientCertificateRoots !== undefined,
      certificate: () => current.certificate,
      serverOptions,
      deviceOptions,
      attach: (server, use = "http") =>
        Effect.acquireRelease(
          Effect.sync(() => {
            servers.set(server, use)
          }),
          () =>
            Effect.sync(() => {
              servers.delete(server)
            }),
        ),
      reload: check(true),
    } satisfies ServerTls
  })

/**
 * This process's listeners' TLS: `Option.none()` when no certificate is configured. One per
 * process, whichever listeners use it (a layer is built once per process).
 */
export class Tls extends Context.Tag("sluice/platform/Tls")<Tls, Option.Option<ServerTls>>() {}

/** TLS from the settings (SLUICE_TLS_*), with `ClientCertificateRoots` if there is one. */
export const layer: Layer.Layer<Tls, ConfigError.ConfigError | TlsError> = Layer.scoped(
  Tls,
  Effect.gen(function* () {
    const settings = yield* config
    if (Option.isNone(settings)) return Option.none()
    const roots = yield* Effect.serviceOption(ClientCertificateRoots)
    return Option.some(yield* make(settings.value, { clientCertificateRoots: Option.getOrUndefined(roots) }))
  }),
)
