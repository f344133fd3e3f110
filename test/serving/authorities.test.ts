/**
 * The certificate authorities of the admin API over real HTTP, in-process: the serving layers over
 * a SqliteRegistry in a temporary directory (seeded from a configuration), a live Tenancy following
 * it every 100 ms, and chDB. Registering a tenant's CA (and what is refused: not a certificate, not
 * a CA, expired, several certificates, registered already, JIT without a class), listing, removing;
 * roles and tenant isolation; every process's Tenancy following; the OpenAPI document.
 */
import { X509Certificate } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import type { PlatformConfig } from "../../src/tenancy/PlatformConfig.js"
import { Registry } from "../../src/tenancy/Registry.js"
import * as Tenancy from "../../src/tenancy/Tenancy.js"
import {
  makeCertificates,
  makeTenantCertificates,
  type TenantTestCertificates,
  type TestCertificates,
} from "../support/certs.js"
import { polling } from "../support/polling.js"
import { type Answer, adminServer, call } from "./adminHarness.js"

const OPERATOR = "operator-key-0123456789"
const ADMIN_A = "tenant-a-admin-0123456789"
const READ_A = "tenant-a-read-0123456789"
const ADMIN_B = "tenant-b-admin-0123456789"

const config: PlatformConfig = {
  operator_keys: [OPERATOR],
  tenants: [
    { id: "tenant-a", api_keys: [ADMIN_A], read_keys: [READ_A] },
    { id: "tenant-b", api_keys: [ADMIN_B] },
  ],
  device_classes: [{ name: "climate", fields: { temperature: { type: "number" } } }],
  devices: [{ id: "cfg-a-1", tenant: "tenant-a", class: "climate", credential: "cfg-a-1-secret" }],
}

const dataDir = mkdtempSync(join(tmpdir(), "sluice-authorities-registry-"))
const storeDir = mkdtempSync(join(tmpdir(), "sluice-authorities-store-"))
let certs: TestCertificates
let more: TenantTestCertificates
beforeAll(() => {
  certs = makeCertificates("cfg-a-1")
  more = makeTenantCertificates(certs, { device: "cfg-a-1", unregistered: "new-1" })
})
afterAll(() => {
  certs?.remove()
  rmSync(dataDir, { recursive: true, force: true })
  rmSync(storeDir, { recursive: true, force: true })
})

const TestAdmin = adminServer(config, { dataDir, storeDir, database: "authorities" })

const eventually = polling({ timeoutMs: 3_000, intervalMs: 50 })

const pem = (path: string) => readFileSync(path, "utf8")

/** The ids of the CAs this process's Tenancy knows. */
const known = Effect.map(Tenancy.Tenancy, (t) => t.authorities().map((a) => a.id))

const PATH = "/v1/certificate-authorities"

layer(TestAdmin, { timeout: 180_000, excludeTestServices: true })("certificate authorities", (it) => {
  it.effect("registered by a tenant admin, listed by its keys only, followed by every Tenancy, removed", () =>
    Effect.gen(function* () {
      const ca = new X509Certificate(readFileSync(certs.ca.cert))
      const created = yield* call("POST", PATH, {
        key: ADMIN_A,
        json: { pem: pem(certs.ca.cert), name: "factory 1" },
      })
      expect(created.status, created.text).toBe(201)
      expect(created.json).toEqual({
        id: ca.fingerprint256,
        name: "factory 1",
        subject: "CN=Sluice test CA",
        not_after: new Date(ca.validTo).toISOString(),
        auto_register: false,
        default_class: null,
        source: "api",
      })
      expect(yield* eventually(known, (ids) => ids.includes(ca.fingerprint256))).toContain(ca.fingerprint256)
      const row = (yield* Effect.flatMap(Registry, (r) => r.load)).authorities.get(ca.fingerprint256)
      expect(row).toMatchObject({
        tenantId: "tenant-a",
        autoRegister: false,
        defaultClass: null,
        name: "factory 1",
      })

      // With just-in-time registration: the other CA, in a shared class.
      const other = new X509Certificate(readFileSync(more.otherCa.cert))
      const jit = yield* call("POST", PATH, {
        key: ADMIN_A,
        json: {
          pem: pem(more.otherCa.cert),
          name: "factory 2",
          auto_register: true,
          default_class: "climate",
        },
      })
      expect(jit.status, jit.text).toBe(201)
      expect(jit.json).toMatchObject({
        id: other.fingerprint256,
        auto_register: true,
        default_class: "climate",
      })

      // Listed by the tenant's keys, sorted by name; another tenant sees none of them.
      for (const key of [ADMIN_A, READ_A]) {
        const list = yield* call("GET", PATH, { key })
        expect(list.status).toBe(200)
        expect((list.json.certificate_authorities as Array<{ name: string }>).map((c) => c.name)).toEqual([
          "factory 1",
          "factory 2",
        ])
        expect(list.json.certificate_authorities[0]).toEqual(created.json)
      }
      expect((yield* call("GET", PATH, { key: ADMIN_B })).json).toEqual({ certificate_authorities: [] })

      // Removed: by its fingerprint, colons and case optional; another tenant's admin is told it does not exist.
      const byB = yield* call("DELETE", `${PATH}/${other.fingerprint256}`, { key: ADMIN_B })
      const missing = yield* call("DELETE", `${PATH}/00:11`, { key: ADMIN_A })
      expect(byB.status).toBe(404)
      expect(byB.text).toBe(missing.text)
      expect(byB.json).toEqual({
        _tag: "CertificateAuthorityNotFound",
        message: "certificate authority not found",
      })
      const byRead = yield* call("DELETE", `${PATH}/${other.fingerprint256}`, { key: READ_A })
      expect(byRead.status).toBe(403)
      const compact = other.fingerprint256.replace(/:/g, "").toLowerCase()
      expect((yield* call("DELETE", `${PATH}/${compact}`, { key: ADMIN_A })).status).toBe(204)
      expect((yield* call("DELETE", `${PATH}/${other.fingerprint256}`, { key: ADMIN_A })).status).toBe(404)
      const after = yield* eventually(known, (ids) => !ids.includes(other.fingerprint256))
      expect(after).toEqual([ca.fingerprint256])

      // Removed, it may be registered again (by another tenant, here).
      const again = yield* call("POST", PATH, {
        key: ADMIN_B,
        json: { pem: pem(more.otherCa.cert), name: "b's factory" },
      })
      expect(again.status, again.text).toBe(201)
      expect((yield* call("DELETE", `${PATH}/${other.fingerprint256}`, { key: ADMIN_B })).status).toBe(204)
    }),
  )

  it.effect(
    "refuses what is not one valid CA certificate, a CA registered already, JIT without a class, and wrong keys",
    () =>
      Effect.gen(function* () {
        const revision = yield* Effect.flatMap(Registry, (r) => r.revision)
        const problems = (answer: Answer) => answer.json.problems as Array<{ field: string; reason: string }>
        const refusals: Array<[string, unknown, string, string]> = [
          ["garbage", { pem: "hello", name: "x" }, "pem", "not a PEM certificate"],
          [
            "a broken PEM",
            { pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", name: "x" },
            "pem",
            "not a PEM certificate",
          ],
          [
            "a device certificate",
            { pem: pem(certs.client.cert), name: "x" },
            "pem",
            "CN=cfg-a-1 is not a CA certificate: its basicConstraints must say CA:TRUE",
          ],
          [
            "an expired CA",
            { pem: pem(more.expiredCa.cert), name: "x" },
            "pem",
            "the CA certificate expired on 2020-02-01T00:00:00.000Z",
          ],
          [
            "a chain",
            { pem: pem(more.otherCa.cert) + pem(certs.ca.cert), name: "x" },
            "pem",
            "expected one certificate, got 2",
          ],
          [
            "JIT without a class",
            { pem: pem(more.otherCa.cert), name: "x", auto_register: true },
            "default_class",
            "auto_register needs a default_class",
          ],
          [
            "an unknown class",
            { pem: pem(more.otherCa.cert), name: "x", default_class: "nope" },
            "default_class",
            'unknown device class "nope"',
          ],
          ["an empty name", { pem: pem(more.otherCa.cert), name: "" }, "name", "must not be empty"],
          ["an unknown field", { pem: pem(more.otherCa.cert), name: "x", key: "secret" }, "key", ""],
        ]
        for (const [what, json, field, reason] of refusals) {
          const answer = yield* call("POST", PATH, { key: ADMIN_A, json })
          expect(answer.status, what).toBe(400)
          expect(answer.json._tag, what).toBe("InvalidBody")
          expect(
            problems(answer).map((p) => p.field),
            what,
          ).toEqual([field])
          expect(problems(answer)[0]!.reason, what).toContain(reason)
        }

        // A tenant's own class is not another tenant's.
        expect(
          (yield* call("POST", "/v1/device-classes", {
            key: ADMIN_B,
            json: { name: "b-only", definition: { fields: { t: { type: "number" } } } },
          })).status,
        ).toBe(201)
        const foreignClass = yield* call("POST", PATH, {
          key: ADMIN_A,
          json: { pem: pem(more.otherCa.cert), name: "x", auto_register: true, default_class: "b-only" },
        })
        expect(foreignClass.status).toBe(400)
        expect(problems(foreignClass)).toEqual([
          { field: "default_class", reason: 'unknown device class "b-only"' },
        ])
        const revisionBefore = yield* Effect.flatMap(Registry, (r) => r.revision)
        expect(revisionBefore).toBe(revision + 1) // only the class

        // Registered already: 409, naming it for its own tenant only.
        expect(
          (yield* call("POST", PATH, { key: ADMIN_A, json: { pem: pem(more.otherCa.cert), name: "mine" } }))
            .status,
        ).toBe(201)
        const twice = yield* call("POST", PATH, {
          key: ADMIN_A,
          json: { pem: pem(more.otherCa.cert), name: "again" },
        })
        expect(twice.status).toBe(409)
        expect(twice.json).toEqual({
          _tag: "Conflict",
          message: 'this CA certificate is already registered, as "mine"',
        })
        const elsewhere = yield* call("POST", PATH, {
          key: ADMIN_B,
          json: { pem: pem(more.otherCa.cert), name: "theirs" },
        })
        expect(elsewhere.status).toBe(409)
        expect(elsewhere.json).toEqual({
          _tag: "Conflict",
          message: "this CA certificate is already registered",
        })

        // Keys: none is 401, a read key and the operator's are 403.
        expect((yield* call("POST", PATH, { json: { pem: pem(certs.ca.cert), name: "x" } })).status).toBe(401)
        expect((yield* call("GET", PATH)).status).toBe(401)
        const read = yield* call("POST", PATH, { key: READ_A, json: { pem: pem(certs.ca.cert), name: "x" } })
        expect(read.status).toBe(403)
        expect(read.json.message).toContain("this key can only read")
        expect(
          (yield* call("POST", PATH, { key: OPERATOR, json: { pem: pem(certs.ca.cert), name: "x" } })).status,
        ).toBe(403)
        expect((yield* call("GET", PATH, { key: OPERATOR })).status).toBe(403)
        expect((yield* call("DELETE", `${PATH}/00`, { key: OPERATOR })).status).toBe(403)
      }),
  )

  it.effect("describes its endpoints in the OpenAPI document", () =>
    Effect.gen(function* () {
      const doc = (yield* call("GET", "/openapi.json")).json
      for (const [method, path] of [
        ["post", PATH],
        ["get", PATH],
        ["delete", `${PATH}/{id}`],
      ] as const) {
        const op = doc.paths[path]?.[method]
        expect(op, `${method} ${path}`).toBeDefined()
        expect(op.description.length, `${method} ${path}`).toBeGreaterThan(10)
      }
      expect(doc.paths[PATH].post.responses["201"]).toBeDefined()
      const tags = (doc.tags as Array<{ name: string; description?: string }>).map((t) => t.description ?? "")
      expect(tags.some((d) => d.includes("just-in-time registration"))).toBe(true)
    }),
  )
})
