/**
 * Mutual TLS against the device registry: the `CertificateAuthentication` hook
 * (`ClientCertificate.ts`) that the MQTT broker asks about a device connecting over MQTTS with a
 * client certificate and no password, and the `ClientCertificateRoots` (every tenant's CA) that
 * make the TLS listener ask for one.
 *
 * A certificate authenticates a device when:
 * 1. a tenant's registered CA issued it: the CA's subject is the certificate's issuer, OpenSSL's
 *    `checkIssued` agrees, and the certificate's signature verifies with the CA's key. One level
 *    only: a device certificate is signed directly by the tenant CA; intermediate CAs are not
 *    supported (a certificate signed by an intermediate is refused as issued by no tenant CA). A
 *    certificate that is itself a CA certificate authenticates nobody.
 * 2. it is within its validity dates now, and so is its CA (expired, not yet valid: refused).
 * 3. it names the device: the subject's CN, or, without a CN, its first DNS or URI subject
 *    alternative name (the CN wins when there are both). A CONNECT that also sends a user name must
 *    send that device id.
 * 4. that device is registered in the CA's tenant and enabled. A device of another tenant is
 *    refused, logging the CA's tenant only (not the device's). An unregistered device is created
 *    just in time when the CA registers devices (`autoRegister`): in the CA's default class,
 *    enabled, source `api`, with no credential (it authenticates by certificate only); otherwise
 *    it is refused.
 *
 * The TLS layer's own verification (`ClientCertificate.verified`) is not used: it is against every
 * tenant's CA and SLUICE_TLS_CA_FILE together, and says nothing of which tenant. What TLS does
 * guarantee is that the client holds the certificate's private key.
 *
 * Every refusal is CONNACK 5 (not authorized), logged with its reason and counted by the broker.
 *
 * Just-in-time registrations are written by one fiber, in batches: the first connects of many new
 * devices at once cost one registry commit per batch, not one each. A commit follows the admin
 * API's pattern (a `Draft` of the latest state, its rules checked, committed at the revision read,
 * again on a conflict); a device some other writer registered meanwhile (another ingress process
 * met the same device's first connect) is simply found registered, and accepted. A connection is
 * accepted once this process's Tenancy has the new device (within the registry poll interval), so
 * that a change to the device right after is heard by the broker.
 *
 * Removing a CA refuses that CA's certificates at once (within the poll interval). Connections it
 * admitted close when their tenant has no CA left (`Tenancy.stillOpens`), or when their device is
 * disabled or removed; with other CAs left in the tenant, they stay open until they reconnect.
 */
import type { X509Certificate } from "node:crypto"
import { Deferred, Duration, Effect, Either, Layer, Queue, Schema, type Scope } from "effect"
import { ClientCertificateRoots } from "../platform/Tls.js"
import { DeviceConfig } from "../tenancy/PlatformConfig.js"
import { Registry, type RegistryApi, type RegistryState } from "../tenancy/Registry.js"
import { applyChanges, Draft } from "../tenancy/RegistryState.js"
import { Tenancy, type TenancyApi, type TenantAuthority } from "../tenancy/Tenancy.js"
import {
  type AuthenticateCertificate,
  accepted,
  CertificateAuthentication,
  type CertificateDecision,
  commonName,
  refused,
} from "./ClientCertificate.js"

/** Registrations committed together, at most. */
const MAX_BATCH = 1_000
/** Attempts of a registration commit when other writers keep committing first. */
const ATTEMPTS = 8
/** How long an accepted registration waits for this process's Tenancy to have the device. */
const FOLLOW_TIMEOUT_MS = 5_000

const isDeviceId = Schema.is(DeviceConfig.fields.id)

/** A name for the log: the CA's name and the start of its fingerprint. */
const caLabel = (authority: TenantAuthority) =>
  `${JSON.stringify(authority.name)} (${authority.id.slice(0, 11)})`

/**
 * The subject alternative names of a certificate, in order, as `[type, value]`. Node writes them
 * `DNS:a, URI:b, IP Address:…`, quoting a value as a JSON string when it holds a comma or a quote.
 */
export const subjectAltNames = (certificate: X509Certificate): ReadonlyArray<readonly [string, string]> => {
  const text = certificate.subjectAltName
  if (text === undefined) return []
  const out: Array<readonly [string, string]> = []
  const entry = /(?:^|, )([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)/g
  for (const match of text.matchAll(entry)) {
    const raw = match[2]!
    let value = raw
    if (raw.startsWith('"')) {
      try {
        value = JSON.parse(raw) as string
      } catch {
        continue
      }
    }
    out.push([match[1]!, value])
  }
  return out
}

/** The device a certificate names: its subject CN, else its first DNS or URI SAN; where it came from. */
export const deviceIdOf = (
  certificate: X509Certificate,
): { readonly id: string; readonly from: string } | undefined => {
  const cn = commonName(certificate)
  if (cn !== undefined && cn !== "") return { id: cn, from: "subject CN" }
  const san = subjectAltNames(certificate).find(([type]) => type === "DNS" || type === "URI")
  return san === undefined ? undefined : { id: san[1], from: `${san[0]} subject alternative name` }
}

/** Epoch ms of a certificate's dates. */
const validity = (certificate: X509Certificate) => ({
  from: Date.parse(certificate.validFrom),
  to: Date.parse(certificate.validTo),
})

const iso = (ms: number) => new Date(ms).toISOString()

/** Authorities by the subject they sign as, per `authorities()` array (a new one per registry revision). */
const bySubject = new WeakMap<
  ReadonlyArray<TenantAuthority>,
  ReadonlyMap<string, ReadonlyArray<TenantAuthority>>
>()

const indexOf = (authorities: ReadonlyArray<TenantAuthority>) => {
  let index = bySubject.get(authorities)
  if (index === undefined) {
    const map = new Map<string, Array<TenantAuthority>>()
    for (const a of authorities) {
      const list = map.get(a.certificate.subject)
      if (list === undefined) map.set(a.certificate.subject, [a])
      else list.push(a)
    }
    index = map
    bySubject.set(authorities, index)
  }
  return index
}

/**
 * The registered CAs that issued `certificate` (one level: signed directly by the CA). Found by
 * the issuer name first (a map lookup, whatever the number of CAs), then confirmed by OpenSSL's
 * issuer check and the signature.
 */
export const issuersOf = (
  certificate: X509Certificate,
  authorities: ReadonlyArray<TenantAuthority>,
): ReadonlyArray<TenantAuthority> =>
  (indexOf(authorities).get(certificate.issuer) ?? []).filter((a) => {
    try {
      return certificate.checkIssued(a.certificate) && certificate.verify(a.certificate.publicKey)
    } catch {
      return false
    }
  })

/** A just-in-time registration waiting for the writer. */
interface Registration {
  readonly deviceId: string
  readonly authority: TenantAuthority
  readonly decision: Deferred.Deferred<CertificateDecision>
}

export interface TenantCertificatesOptions {
  /** The clock (tests). */
  readonly now?: (() => number) | undefined
}

/**
 * The hook, deciding from `tenancy` (this process's view of the registry) and registering devices
 * just in time in `registry`. Its writer fiber lives until the scope closes.
 */
export const make = (
  tenancy: TenancyApi,
  registry: RegistryApi,
  options: TenantCertificatesOptions = {},
): Effect.Effect<AuthenticateCertificate, never, Scope.Scope> =>
  Effect.gen(function* () {
    const now = options.now ?? Date.now

    // The registry's state for the writer, caught up with `changesSince` between commits (as the
    // admin API's `Writes.ts` keeps it), loaded whole only the first time.
    let held: RegistryState | undefined
    const latest = Effect.gen(function* () {
      const revision = yield* registry.revision
      const before = held
      if (before !== undefined && before.revision === revision) return before
      held =
        before === undefined || before.revision > revision
          ? yield* registry.load
          : applyChanges(before, yield* registry.changesSince(before.revision))
      return held
    })

    /** Whether this process's Tenancy has reached `revision` (bounded wait). */
    const followed = (revision: number) =>
      Effect.gen(function* () {
        const deadline = Date.now() + FOLLOW_TIMEOUT_MS
        while (tenancy.revision() < revision && Date.now() < deadline) yield* Effect.sleep("20 millis")
      })

    /** The decision about `r` once the draft (committed, or unchanged) holds what it holds. */
    const decide = (draft: Draft, r: Registration): CertificateDecision => {
      const d = draft.devices.get(r.deviceId)
      if (d === undefined) return refused(`device ${JSON.stringify(r.deviceId)} could not be registered`)
      if (d.tenantId !== r.authority.tenantId)
        return refused(
          `the certificate's CA ${caLabel(r.authority)} belongs to tenant ${r.authority.tenantId}, the device ${JSON.stringify(r.deviceId)} to another`,
        )
      if (!d.enabled) return refused(`device ${JSON.stringify(r.deviceId)} is disabled`)
      return accepted({ tenantId: d.tenantId, deviceId: d.id, deviceClass: d.className })
    }

    /** Registers a batch: one commit for all of it, retried on a conflict. */
    const registerBatch = (batch: ReadonlyArray<Registration>) =>
      Effect.gen(function* () {
        for (let attempt = 1; ; attempt++) {
          const state = yield* latest
          const draft = new Draft(state)
          const decisions = new Map<Registration, CertificateDecision>()
          const added = new Map<string, Registration>()
          for (const r of batch) {
            if (draft.devices.has(r.deviceId) || added.has(r.deviceId)) continue
            // The CA may have been removed, or stopped registering, since the connection was judged.
            const ca = draft.authorities.get(r.authority.id)
            if (ca === undefined || !ca.autoRegister || ca.defaultClass === null) {
              decisions.set(
                r,
                refused(`the certificate's CA ${caLabel(r.authority)} no longer registers devices`),
              )
              continue
            }
            draft.devices.set(r.deviceId, {
              id: r.deviceId,
              tenantId: ca.tenantId,
              className: ca.defaultClass,
              enabled: true,
              credentials: [],
              source: "api",
            })
            added.set(r.deviceId, r)
          }
          // A device the rules refuse (its CA's default class gone meanwhile) is left out, with why.
          const problems = draft.check()
          const other: Array<string> = []
          for (const p of problems) {
            const r = p.kind === "device" ? added.get(p.id) : undefined
            if (r === undefined) {
              other.push(`${p.kind} ${p.id}: ${p.reason}`)
              continue
            }
            draft.devices.delete(p.id)
            added.delete(p.id)
            decisions.set(r, refused(`device ${JSON.stringify(p.id)} cannot be registered: ${p.reason}`))
          }
          if (other.length > 0) {
            const reason = `the device registry refuses the registration: ${other.join("; ")}`
            return {
              decisions: new Map(batch.map((r) => [r, decisions.get(r) ?? refused(reason)])),
              revision: 0,
            }
          }
          const mutations = draft.mutations()
          let revision = state.revision
          if (mutations.length > 0) {
            const committed = yield* Effect.either(registry.commit(mutations, state.revision))
            if (Either.isLeft(committed)) {
              if (committed.left._tag === "RegistryConflict" && attempt < ATTEMPTS) {
                yield* Effect.sleep(Duration.millis(Math.floor(Math.random() * 20)))
                continue
              }
              return yield* Effect.fail(committed.left)
            }
            revision = committed.right
            for (const r of added.values()) {
              yield* Effect.logInfo(
                `device ${r.deviceId} registered just in time by CA ${JSON.stringify(r.authority.name)}`,
              ).pipe(
                Effect.annotateLogs({
                  tenantId: r.authority.tenantId,
                  deviceId: r.deviceId,
                  deviceClass: r.authority.defaultClass,
                  certificateAuthority: r.authority.id,
                }),
              )
            }
          }
          for (const r of batch) if (!decisions.has(r)) decisions.set(r, decide(draft, r))
          return { decisions, revision }
        }
      })

    const scope = yield* Effect.scope
    const queue = yield* Queue.unbounded<Registration>()
    yield* Effect.addFinalizer(() => Queue.shutdown(queue))
    yield* Queue.takeBetween(queue, 1, MAX_BATCH).pipe(
      Effect.flatMap((chunk) => {
        const batch = [...chunk]
        const refuseAll = (reason: string) =>
          Effect.forEach(batch, (r) => Deferred.succeed(r.decision, refused(reason)), { discard: true })
        return registerBatch(batch).pipe(
          Effect.flatMap(({ decisions, revision }) =>
            // Answered once this process's Tenancy follows; the writer goes on meanwhile.
            followed(revision).pipe(
              Effect.zipRight(
                Effect.forEach(batch, (r) => Deferred.succeed(r.decision, decisions.get(r)!), {
                  discard: true,
                }),
              ),
              Effect.forkIn(scope),
            ),
          ),
          Effect.catchAll((e) =>
            Effect.zipRight(
              Effect.logWarning(`just-in-time registration failed: ${e.message}`),
              refuseAll(`the device could not be registered just in time: ${e.message}`),
            ),
          ),
          Effect.catchAllDefect((defect) =>
            Effect.zipRight(
              Effect.logError("just-in-time registration failed", defect),
              refuseAll("the device could not be registered just in time"),
            ),
          ),
        )
      }),
      Effect.forever,
      Effect.forkScoped,
    )

    const register = (deviceId: string, authority: TenantAuthority) =>
      Effect.gen(function* () {
        const decision = yield* Deferred.make<CertificateDecision>()
        yield* Queue.offer(queue, { deviceId, authority, decision })
        return yield* Deferred.await(decision)
      })

    const authenticate: AuthenticateCertificate = (presented, username) =>
      Effect.suspend((): Effect.Effect<CertificateDecision> => {
        const certificate = presented.certificate
        const at = now()

        const issuers = issuersOf(certificate, tenancy.authorities())
        if (issuers.length === 0) {
          const selfSigned = certificate.issuer === certificate.subject
          return Effect.succeed(
            refused(
              `the certificate was not issued by a registered certificate authority (${
                selfSigned ? "it is self-signed" : `issuer ${certificate.issuer.split("\n").join(", ")}`
              }); a device certificate must be signed directly by its tenant's CA, intermediates are not supported`,
            ),
          )
        }
        if (certificate.ca)
          return Effect.succeed(
            refused("a CA certificate cannot authenticate a device, only a certificate a CA issued"),
          )
        const dates = validity(certificate)
        if (at > dates.to) return Effect.succeed(refused(`the certificate expired on ${iso(dates.to)}`))
        if (at < dates.from)
          return Effect.succeed(refused(`the certificate is not valid before ${iso(dates.from)}`))
        const current = issuers.filter((a) => {
          const ca = validity(a.certificate)
          return ca.from <= at && at <= ca.to
        })
        if (current.length === 0) {
          const ca = issuers[0]!
          return Effect.succeed(
            refused(
              `the certificate's CA ${caLabel(ca)} is outside its validity dates (until ${iso(validity(ca.certificate).to)})`,
            ),
          )
        }

        const named = deviceIdOf(certificate)
        if (named === undefined)
          return Effect.succeed(refused("the certificate names no device: no subject CN, no DNS or URI SAN"))
        const deviceId = named.id
        if (!isDeviceId(deviceId))
          return Effect.succeed(
            refused(`the certificate's ${named.from} ${JSON.stringify(deviceId)} is not a valid device id`),
          )
        if (username !== undefined && username !== "" && username !== deviceId)
          return Effect.succeed(
            refused(
              `the user name ${JSON.stringify(username)} is not the device the certificate names (${JSON.stringify(deviceId)})`,
            ),
          )

        const device = tenancy.deviceById(deviceId)
        if (device._tag === "Some") {
          const own = current.find((a) => a.tenantId === device.value.tenantId)
          if (own === undefined)
            return Effect.succeed(
              refused(
                `the certificate's CA ${caLabel(current[0]!)} belongs to tenant ${current[0]!.tenantId}, the device ${JSON.stringify(deviceId)} to another`,
              ),
            )
          // Enabled (with no credential, `stillOpens` is: enabled, and the tenant has a CA, as it does).
          if (!tenancy.stillOpens(deviceId, null))
            return Effect.succeed(refused(`device ${JSON.stringify(deviceId)} is disabled`))
          return Effect.succeed(accepted(device.value))
        }

        const registering = current.filter((a) => a.autoRegister && a.defaultClass !== null)
        if (registering.length === 0)
          return Effect.succeed(
            refused(
              `device ${JSON.stringify(deviceId)} is not registered, and the certificate's CA ${caLabel(current[0]!)} does not register devices just in time`,
            ),
          )
        if (new Set(registering.map((a) => a.tenantId)).size > 1)
          return Effect.succeed(
            refused(
              `device ${JSON.stringify(deviceId)} is not registered, and CAs of several tenants issued the certificate`,
            ),
          )
        return register(deviceId, registering[0]!)
      })

    return authenticate
  })

/** The PEMs of every tenant's CA: the roots the TLS listener asks client certificates of. */
export const roots =
  (tenancy: TenancyApi): (() => ReadonlyArray<string>) =>
  () =>
    tenancy.authorities().map((a) => a.pem)

/** The hook over this process's Tenancy and Registry. */
export const layer: Layer.Layer<CertificateAuthentication, never, Tenancy | Registry> = Layer.scoped(
  CertificateAuthentication,
  Effect.gen(function* () {
    return yield* make(yield* Tenancy, yield* Registry)
  }),
)

/** Every tenant's CA as a client certificate root (read again at every TLS reload check). */
export const rootsLayer: Layer.Layer<ClientCertificateRoots, never, Tenancy> = Layer.effect(
  ClientCertificateRoots,
  Effect.map(Tenancy, roots),
)
