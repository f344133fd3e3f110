/**
 * Certificate authorities in the admin API: a tenant admin key registers the CA certificates that
 * sign its devices' client certificates (mutual TLS on MQTTS), optionally registering devices just
 * in time in a default class; lists and removes them. The MQTT side is
 * `src/ingress/TenantCertificates.ts`; a change reaches every ingress process within the registry
 * poll interval (and the TLS listener's client certificate roots within its reload interval).
 *
 * A CA's id is the SHA-256 fingerprint of its certificate (`AB:CD:…`, as `openssl x509
 * -fingerprint -sha256` prints it); a CA certificate is registered once, in one tenant. Only the
 * certificate is given, never a key.
 *
 * The group and its handlers live here, apart from `Api.ts` and `Http.ts`, as the provisioning
 * claims' do (`Claims.ts`): the handlers are built against an API of the serving API's identifier
 * holding only this group, so this file need not import the serving API that imports it.
 */
import { X509Certificate } from "node:crypto"
import {
  HttpApi,
  HttpApiBuilder,
  HttpApiEndpoint,
  HttpApiGroup,
  HttpApiSchema,
  OpenApi,
} from "@effect/platform"
import { Effect, Schema } from "effect"
import { DeviceConfig } from "../../tenancy/PlatformConfig.js"
import type { RegCertificateAuthority } from "../../tenancy/Registry.js"
import { BodyTooLarge, Conflict, Forbidden, InvalidBody, RegistryUnavailable } from "../ApiError.js"
import { AdminAuthentication, requireTenantAdmin, requireTenantReader } from "../Authentication.js"
import * as Body from "./Body.js"
import type { RegistryAccess } from "./Writes.js"

/** No CA with this id in the tenant (another tenant's looks alike). */
export class CertificateAuthorityNotFound extends Schema.TaggedError<CertificateAuthorityNotFound>()(
  "CertificateAuthorityNotFound",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 404, description: "No such certificate authority in this tenant" }),
) {
  static readonly instance = new CertificateAuthorityNotFound({ message: "certificate authority not found" })
}

export const CreateCertificateAuthority = Schema.Struct({
  pem: Schema.String.pipe(Schema.minLength(1, { message: () => "must not be empty" })).annotations({
    description:
      "The CA certificate, PEM (`-----BEGIN CERTIFICATE-----`…): one certificate, with basicConstraints CA:TRUE, " +
      "not expired. Device certificates must be signed directly by it (intermediate CAs are not supported)",
  }),
  name: Schema.String.pipe(
    Schema.minLength(1, { message: () => "must not be empty" }),
    Schema.maxLength(100, { message: () => "must be at most 100 characters" }),
  ).annotations({ description: "A label for people, e.g. the factory or batch the CA signs for" }),
  auto_register: Schema.optional(Schema.Boolean).annotations({
    description:
      "true: a certificate it signed naming a device not yet registered creates that device in `default_class` " +
      "on first connect (just-in-time registration). Default false: such a certificate is refused",
  }),
  default_class: Schema.optional(DeviceConfig.fields.id).annotations({
    description:
      "The class of the devices it registers just in time: a shared class or one of the tenant's own. Required " +
      "with `auto_register`",
  }),
}).annotations({ identifier: "CreateCertificateAuthority" })

const CertificateAuthority = Schema.Struct({
  id: Schema.String.annotations({
    description:
      "The SHA-256 fingerprint of the CA certificate, `AB:CD:…` (colons and case optional in paths)",
  }),
  name: Schema.String,
  subject: Schema.String.annotations({
    description: "The CA certificate's subject, e.g. `CN=Acme devices, O=Acme`",
  }),
  not_after: Schema.String.annotations({ description: "When the CA certificate expires, ISO 8601" }),
  auto_register: Schema.Boolean,
  default_class: Schema.NullOr(Schema.String),
  source: Schema.Literal("config", "api"),
}).annotations({ identifier: "CertificateAuthority" })

const AuthorityPath = Schema.Struct({ id: Schema.String })

export class CertificateAuthoritiesApi extends HttpApiGroup.make("certificateAuthorities")
  .add(
    HttpApiEndpoint.post("create", "/v1/certificate-authorities")
      .setPayload(CreateCertificateAuthority)
      .addSuccess(CertificateAuthority, { status: 201 })
      .addError(Conflict)
      .addError(BodyTooLarge)
      .addError(InvalidBody)
      .annotate(
        OpenApi.Description,
        "Registers a CA certificate of the key's tenant: devices may then connect over MQTTS with a client " +
          "certificate it signed whose subject CN (or, without one, first DNS or URI SAN) is their device id, " +
          "with no password. A PEM that is not one certificate, not a CA certificate (basicConstraints CA:TRUE) " +
          "or expired is 400; a CA certificate already registered (in any tenant) is 409. An admin key of the tenant.",
      ),
  )
  .add(
    HttpApiEndpoint.get("list", "/v1/certificate-authorities")
      .addSuccess(Schema.Struct({ certificate_authorities: Schema.Array(CertificateAuthority) }))
      .annotate(
        OpenApi.Description,
        "The tenant's certificate authorities. An admin or read key of the tenant.",
      ),
  )
  .add(
    HttpApiEndpoint.del("delete", "/v1/certificate-authorities/:id")
      .setPath(AuthorityPath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(Conflict)
      .addError(CertificateAuthorityNotFound)
      .annotate(
        OpenApi.Description,
        "Removes a certificate authority: certificates it signed are refused from then on (within the registry " +
          "poll interval). Open connections they admitted close when the tenant has no CA left, or when their " +
          "device is disabled or deleted. Devices it registered stay. An admin key of the tenant.",
      ),
  )
  .addError(Forbidden)
  .addError(RegistryUnavailable)
  .middleware(AdminAuthentication)
  .annotate(OpenApi.Title, "Certificate authorities")
  .annotate(
    OpenApi.Description,
    "Mutual TLS: a tenant registers the CA certificates that sign its devices' client certificates. A device " +
      "connecting to MQTTS (port 8883) with a certificate signed directly by one of them, within its validity " +
      "dates, naming a registered and enabled device of the tenant (subject CN, else first DNS or URI SAN) is " +
      "that device; anything else is refused with CONNACK 5 and a logged reason. With `auto_register`, a " +
      "device not yet registered is created in the CA's `default_class` on its first connect (just-in-time " +
      "registration).",
  ) {}

/** A certificate's subject or issuer on one line. */
const oneLine = (name: string) => name.split("\n").join(", ")

/** A fingerprint as compared: upper case, no colons. */
const normalized = (id: string) => id.toUpperCase().replace(/:/g, "")

const view = (ca: RegCertificateAuthority) => {
  let subject = ""
  let notAfter = ""
  try {
    const certificate = new X509Certificate(ca.pem)
    subject = oneLine(certificate.subject)
    notAfter = new Date(certificate.validTo).toISOString()
  } catch {
    // A row whose PEM does not parse (never written by this API): listed, so that it can be removed.
  }
  return {
    id: ca.id,
    name: ca.name,
    subject,
    not_after: notAfter,
    auto_register: ca.autoRegister,
    default_class: ca.defaultClass,
    source: ca.source,
  }
}

const pemProblem = (reason: string) => Body.invalid([{ field: "pem", reason }])

/** The certificate of `pem`, or why it cannot be a tenant's CA. */
const caCertificate = (pem: string) =>
  Effect.gen(function* () {
    const blocks = pem.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0
    if (blocks !== 1)
      return yield* Effect.fail(
        pemProblem(
          blocks === 0
            ? "not a PEM certificate: expected -----BEGIN CERTIFICATE-----"
            : `expected one certificate, got ${blocks}: register the CA that signs the device certificates (intermediate CAs are not supported)`,
        ),
      )
    const certificate = yield* Effect.try({
      try: () => new X509Certificate(pem),
      catch: (e) => pemProblem(`not a PEM certificate: ${e instanceof Error ? e.message : String(e)}`),
    })
    if (!certificate.ca)
      return yield* Effect.fail(
        pemProblem(
          `${oneLine(certificate.subject)} is not a CA certificate: its basicConstraints must say CA:TRUE`,
        ),
      )
    const notAfter = Date.parse(certificate.validTo)
    if (notAfter < Date.now())
      return yield* Effect.fail(
        pemProblem(`the CA certificate expired on ${new Date(notAfter).toISOString()}`),
      )
    return certificate
  })

/**
 * The group's handlers, with the registry access `access` gives (the admin handlers' shared one),
 * for the serving API of identifier `api.identifier`.
 */
export const layerFor = <ApiId extends string, R>(
  api: { readonly identifier: ApiId },
  access: Effect.Effect<RegistryAccess, never, R>,
) =>
  HttpApiBuilder.group(
    HttpApi.make(api.identifier).add(CertificateAuthoritiesApi),
    "certificateAuthorities",
    (handlers) =>
      Effect.gen(function* () {
        const registry = yield* access
        return handlers
          .handleRaw(
            "create",
            Effect.fn("Admin.certificateAuthorities.create")(function* ({ request }) {
              const tenantId = yield* requireTenantAdmin
              const body = yield* Body.json(CreateCertificateAuthority, request)
              const certificate = yield* caCertificate(body.pem)
              const autoRegister = body.auto_register ?? false
              if (autoRegister && body.default_class === undefined)
                return yield* Effect.fail(
                  Body.invalid([
                    {
                      field: "default_class",
                      reason: "auto_register needs a default_class: the class of the devices it registers",
                    },
                  ]),
                )
              return yield* registry.write((draft) =>
                Effect.gen(function* () {
                  if (body.default_class !== undefined) {
                    const c = draft.classes.get(body.default_class)
                    if (c === undefined || (c.tenantId !== null && c.tenantId !== tenantId))
                      return yield* Effect.fail(
                        Body.invalid([
                          {
                            field: "default_class",
                            reason: `unknown device class ${JSON.stringify(body.default_class)}`,
                          },
                        ]),
                      )
                  }
                  const id = certificate.fingerprint256
                  const existing = draft.authorities.get(id)
                  if (existing !== undefined)
                    return yield* Effect.fail(
                      new Conflict({
                        message:
                          existing.tenantId === tenantId
                            ? `this CA certificate is already registered, as ${JSON.stringify(existing.name)}`
                            : "this CA certificate is already registered",
                      }),
                    )
                  const row: RegCertificateAuthority = {
                    id,
                    tenantId,
                    pem: certificate.toString(),
                    autoRegister,
                    defaultClass: body.default_class ?? null,
                    name: body.name,
                    source: "api",
                  }
                  draft.authorities.set(id, row)
                  return view(row)
                }),
              )
            }),
          )
          .handle(
            "list",
            Effect.fn("Admin.certificateAuthorities.list")(function* () {
              const tenantId = yield* requireTenantReader
              const state = yield* registry.latest
              const certificate_authorities = [...state.authorities.values()]
                .filter((ca) => ca.tenantId === tenantId)
                .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.id < b.id ? -1 : 1))
                .map(view)
              return { certificate_authorities }
            }),
          )
          .handle(
            "delete",
            Effect.fn("Admin.certificateAuthorities.delete")(function* ({ path }) {
              const tenantId = yield* requireTenantAdmin
              yield* registry.write((draft) =>
                Effect.gen(function* () {
                  const wanted = normalized(path.id)
                  const ca = [...draft.authorities.values()].find(
                    (a) => a.tenantId === tenantId && normalized(a.id) === wanted,
                  )
                  if (ca === undefined) return yield* Effect.fail(CertificateAuthorityNotFound.instance)
                  if (ca.source === "config")
                    return yield* Effect.fail(
                      new Conflict({
                        message: `certificate authority ${JSON.stringify(ca.name)} is managed by the configuration file: remove it there, then apply the file`,
                      }),
                    )
                  draft.authorities.delete(ca.id)
                }),
              )
            }),
          )
      }),
  )
