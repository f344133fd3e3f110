/**
 * Certificates for TLS tests, made with the `openssl` command line in a temporary directory: a CA,
 * a server certificate for `localhost` and 127.0.0.1 (subject alternative names), client
 * certificates for a device (signed by the CA, self-signed, and signed by the CA but expired), and
 * more server certificates on demand (for reload tests). EC P-256 keys: quick to make.
 */
import { execFileSync } from "node:child_process"
import { X509Certificate } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import https from "node:https"
import { tmpdir } from "node:os"
import { join } from "node:path"

/** A certificate and its key, as files. */
export interface CertificateFiles {
  readonly cert: string
  readonly key: string
  /** The certificate's serial number, as Node prints it (upper-case hex). */
  readonly serialNumber: string
}

export interface TestCertificates {
  readonly dir: string
  /** The test CA's certificate (and key), which signs the server and client certificates. */
  readonly ca: CertificateFiles
  /** For `localhost` and 127.0.0.1, signed by the CA. */
  readonly server: CertificateFiles
  /** CN=`device`, signed by the CA. */
  readonly client: CertificateFiles
  /** CN=`device`, self-signed. */
  readonly selfSigned: CertificateFiles
  /** CN=`device`, signed by the CA, valid only in January 2020. */
  readonly expired: CertificateFiles
  /** The CA certificate's PEM. */
  readonly caPem: () => Buffer
  /** Another server certificate for `localhost`/127.0.0.1 signed by the CA, in files of its own. */
  readonly issueServer: (name: string) => CertificateFiles
  /** Removes the directory. */
  readonly remove: () => void
}

const openssl = (args: ReadonlyArray<string>, cwd: string) =>
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "pipe", "pipe"] })

const serialOf = (certFile: string) => new X509Certificate(readFileSync(certFile)).serialNumber

const randomSerial = () => `0x${Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString("hex")}`

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

/** Makes the CA and the certificates in a fresh temporary directory (`openssl` must be installed). */
export const makeCertificates = (device = "thermo-1"): TestCertificates => {
  const dir = mkdtempSync(join(tmpdir(), "sluice-certs-"))
  const path = (name: string) => join(dir, name)

  openssl(
    [
      "req",
      "-x509",
      ...EC,
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
      "-days",
      "2",
      "-subj",
      "/CN=Sluice test CA",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ],
    dir,
  )

  /** A key and a request, then a certificate signed by the CA with the extensions given. */
  const signed = (name: string, subject: string, extensions: string): CertificateFiles => {
    writeFileSync(path(`${name}.ext`), extensions)
    openssl(["req", "-new", ...EC, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject], dir)
    openssl(
      [
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        randomSerial(),
        "-days",
        "2",
        "-sha256",
        "-extfile",
        `${name}.ext`,
        "-out",
        `${name}.pem`,
      ],
      dir,
    )
    return {
      cert: path(`${name}.pem`),
      key: path(`${name}.key`),
      serialNumber: serialOf(path(`${name}.pem`)),
    }
  }

  const serverExtensions =
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n" +
    "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
  const clientExtensions =
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n"

  const server = signed("server", "/CN=localhost", serverExtensions)
  const client = signed("client", `/CN=${device}`, clientExtensions)

  openssl(
    [
      "req",
      "-x509",
      ...EC,
      "-keyout",
      "self-signed.key",
      "-out",
      "self-signed.pem",
      "-days",
      "2",
      "-subj",
      `/CN=${device}`,
    ],
    dir,
  )
  const selfSigned = {
    cert: path("self-signed.pem"),
    key: path("self-signed.key"),
    serialNumber: serialOf(path("self-signed.pem")),
  }

  // `openssl x509 -days` cannot reach into the past (and -not_before/-not_after are OpenSSL 3.4+);
  // `openssl ca` takes explicit dates in every version.
  writeFileSync(path("index.txt"), "")
  writeFileSync(path("serial"), "1000\n")
  writeFileSync(
    path("ca.cnf"),
    [
      "[ca]",
      "default_ca = test_ca",
      "[test_ca]",
      `dir = ${dir}`,
      "database = $dir/index.txt",
      "new_certs_dir = $dir",
      "certificate = $dir/ca.pem",
      "private_key = $dir/ca.key",
      "serial = $dir/serial",
      "default_md = sha256",
      "policy = policy_any",
      "unique_subject = no",
      "x509_extensions = client_ext",
      "[policy_any]",
      "commonName = supplied",
      "[client_ext]",
      "basicConstraints = CA:FALSE",
      "extendedKeyUsage = clientAuth",
      "",
    ].join("\n"),
  )
  openssl(
    ["req", "-new", ...EC, "-keyout", "expired.key", "-out", "expired.csr", "-subj", `/CN=${device}`],
    dir,
  )
  openssl(
    [
      "ca",
      "-batch",
      "-config",
      "ca.cnf",
      "-in",
      "expired.csr",
      "-out",
      "expired.pem",
      "-notext",
      "-startdate",
      "20200101000000Z",
      "-enddate",
      "20200201000000Z",
    ],
    dir,
  )
  const expired = {
    cert: path("expired.pem"),
    key: path("expired.key"),
    serialNumber: serialOf(path("expired.pem")),
  }

  return {
    dir,
    ca: { cert: path("ca.pem"), key: path("ca.key"), serialNumber: serialOf(path("ca.pem")) },
    server,
    client,
    selfSigned,
    expired,
    caPem: () => readFileSync(path("ca.pem")),
    issueServer: (name) => signed(name, "/CN=localhost", serverExtensions),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  }
}

/** The serial number of the certificate a TLS server on `port` presents to a new connection. */
export const presentedSerial = (port: number, ca: Buffer, host = "127.0.0.1") =>
  new Promise<string>((resolve, reject) => {
    const request = https.get({ host, port, path: "/healthz", ca, agent: false }, (response) => {
      const serial = (response.socket as import("node:tls").TLSSocket).getPeerX509Certificate()?.serialNumber
      response.resume()
      if (serial === undefined) reject(new Error("no peer certificate"))
      else resolve(serial)
    })
    request.on("error", reject)
    request.setTimeout(5_000, () => request.destroy(new Error("timed out")))
  })

/** An HTTPS request that trusts `ca`, with no connection reuse; the status and body. */
export const httpsRequest = (
  url: string,
  ca: Buffer,
  init: { readonly method?: string; readonly headers?: Record<string, string>; readonly body?: string } = {},
) =>
  new Promise<{ readonly status: number; readonly text: string }>((resolve, reject) => {
    const request = https.request(url, {
      method: init.method ?? "GET",
      headers: init.headers,
      ca,
      agent: false,
    })
    request.on("response", (response) => {
      let text = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (text += chunk))
      response.on("end", () => resolve({ status: response.statusCode ?? 0, text }))
    })
    request.on("error", reject)
    request.setTimeout(10_000, () => request.destroy(new Error("timed out")))
    request.end(init.body)
  })

/** Certificates for the tenant CA tests (mutual TLS, just-in-time registration), beside a `TestCertificates`. */
export interface TenantTestCertificates {
  /** A second CA, another tenant's. */
  readonly otherCa: CertificateFiles
  readonly otherCaPem: () => Buffer
  /** CN=`device` (the first CA's device), signed by the other CA. */
  readonly otherCaDevice: CertificateFiles
  /** CN=`unregistered`, signed by the first CA. */
  readonly unregistered: CertificateFiles
  /** A CA certificate (CA:TRUE) signed by the first CA, valid only in January 2020. */
  readonly expiredCa: CertificateFiles
  /**
   * A client certificate with `subject` (e.g. `/CN=x`, or `/O=x` for none) and optionally a
   * subjectAltName (e.g. `DNS:x`), signed by the first CA or the other one.
   */
  readonly issue: (
    name: string,
    subject: string,
    options?: { readonly by?: "ca" | "other"; readonly san?: string },
  ) => CertificateFiles
}

/** Makes the tenant CA test certificates in `certs.dir` (`openssl` must be installed). */
export const makeTenantCertificates = (
  certs: TestCertificates,
  names: { readonly device: string; readonly unregistered: string },
): TenantTestCertificates => {
  const dir = certs.dir
  const path = (name: string) => join(dir, name)
  const files = (name: string): CertificateFiles => ({
    cert: path(`${name}.pem`),
    key: path(`${name}.key`),
    serialNumber: serialOf(path(`${name}.pem`)),
  })

  openssl(
    [
      "req",
      "-x509",
      ...EC,
      "-keyout",
      "other-ca.key",
      "-out",
      "other-ca.pem",
      "-days",
      "2",
      "-subj",
      "/CN=Sluice other tenant CA",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ],
    dir,
  )

  const issue = (
    name: string,
    subject: string,
    options: { readonly by?: "ca" | "other"; readonly san?: string } = {},
  ): CertificateFiles => {
    const ca = options.by === "other" ? "other-ca" : "ca"
    writeFileSync(
      path(`${name}.ext`),
      "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n" +
        (options.san === undefined ? "" : `subjectAltName=${options.san}\n`),
    )
    openssl(["req", "-new", ...EC, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject], dir)
    openssl(
      [
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        `${ca}.pem`,
        "-CAkey",
        `${ca}.key`,
        "-set_serial",
        randomSerial(),
        "-days",
        "2",
        "-sha256",
        "-extfile",
        `${name}.ext`,
        "-out",
        `${name}.pem`,
      ],
      dir,
    )
    return files(name)
  }

  // An expired CA certificate: `openssl ca` takes explicit dates (see `makeCertificates`).
  writeFileSync(path("tenant-index.txt"), "")
  writeFileSync(path("tenant-serial"), "2000\n")
  writeFileSync(
    path("tenant-ca.cnf"),
    [
      "[ca]",
      "default_ca = test_ca",
      "[test_ca]",
      `dir = ${dir}`,
      "database = $dir/tenant-index.txt",
      "new_certs_dir = $dir",
      "certificate = $dir/ca.pem",
      "private_key = $dir/ca.key",
      "serial = $dir/tenant-serial",
      "default_md = sha256",
      "policy = policy_any",
      "unique_subject = no",
      "x509_extensions = ca_ext",
      "[policy_any]",
      "commonName = supplied",
      "[ca_ext]",
      "basicConstraints = critical, CA:TRUE",
      "keyUsage = critical, keyCertSign, cRLSign",
      "",
    ].join("\n"),
  )
  openssl(
    ["req", "-new", ...EC, "-keyout", "expired-ca.key", "-out", "expired-ca.csr", "-subj", "/CN=Expired CA"],
    dir,
  )
  openssl(
    [
      "ca",
      "-batch",
      "-config",
      "tenant-ca.cnf",
      "-in",
      "expired-ca.csr",
      "-out",
      "expired-ca.pem",
      "-notext",
      "-startdate",
      "20200101000000Z",
      "-enddate",
      "20200201000000Z",
    ],
    dir,
  )

  return {
    otherCa: files("other-ca"),
    otherCaPem: () => readFileSync(path("other-ca.pem")),
    otherCaDevice: issue("other-ca-device", `/CN=${names.device}`, { by: "other" }),
    unregistered: issue("unregistered", `/CN=${names.unregistered}`),
    expiredCa: files("expired-ca"),
    issue,
  }
}
