/**
 * Devices that authenticate with a client certificate (mutual TLS): the hook the MQTT broker asks
 * when a device connects over MQTTS with a certificate and without a password. Which certificates
 * are good — a tenant's registered CAs, the device id in the subject, just-in-time registration —
 * is the hook's to decide; until a registry provides one, `refuseCertificates` refuses them all
 * (devices authenticate with their credential, over TLS or not).
 *
 * The TLS layer asks for a certificate (SLUICE_TLS_CA_FILE or `ClientCertificateRoots`) and verifies
 * its chain against those roots, but never refuses the connection for it: the hook gets the
 * certificate and whether (and why not) it verified, and its refusal reaches the device as a
 * CONNACK return code and the log as a reason.
 */
import type { X509Certificate } from "node:crypto"
import { Context, Effect } from "effect"
import type { Device } from "../tenancy/Tenancy.js"

/** A client certificate presented in the TLS handshake. */
export interface ClientCertificate {
  /** The client's own (leaf) certificate. */
  readonly certificate: X509Certificate
  /**
   * Whether its chain verified against the client certificate roots (SLUICE_TLS_CA_FILE and
   * `ClientCertificateRoots`): signed by one of them, within its validity dates.
   */
  readonly verified: boolean
  /**
   * Why it did not verify, as OpenSSL's code: `DEPTH_ZERO_SELF_SIGNED_CERT`,
   * `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, `CERT_HAS_EXPIRED`, …; undefined when it verified.
   */
  readonly verificationError: string | undefined
  /** The peer's address, for the log. */
  readonly remoteAddress: string | undefined
}

/** MQTT 3.1.1 §3.2.2.3: CONNACK return codes a refusal may carry. */
export type RefusalCode =
  /** Bad user name or password. */
  | 4
  /** Not authorized. */
  | 5

/** What the hook decided about a certificate. */
export type CertificateDecision =
  | { readonly _tag: "Accepted"; readonly device: Device }
  | {
      readonly _tag: "Refused"
      /** Logged, with the device's claimed id and address. */
      readonly reason: string
      /** The CONNACK return code; 5 (not authorized) unless told. */
      readonly returnCode?: RefusalCode
    }

export const accepted = (device: Device): CertificateDecision => ({ _tag: "Accepted", device })

export const refused = (reason: string, returnCode?: RefusalCode): CertificateDecision =>
  returnCode === undefined ? { _tag: "Refused", reason } : { _tag: "Refused", reason, returnCode }

/**
 * Decides whether a client certificate authenticates a device; `username` is the CONNECT's user
 * name, if it sent one. Called once per connection, only for a connection with a certificate and
 * no password. A defect counts as a refusal.
 */
export type AuthenticateCertificate = (
  certificate: ClientCertificate,
  username: string | undefined,
) => Effect.Effect<CertificateDecision>

/** The default: no certificate authenticates anyone yet. */
export const refuseCertificates: AuthenticateCertificate = () =>
  Effect.succeed(
    refused(
      "client certificates are not accepted yet: connect with the device id as user name and its credential as password",
    ),
  )

/**
 * The hook in use, where a registry plugs in; without it the broker uses `refuseCertificates`.
 */
export class CertificateAuthentication extends Context.Tag("sluice/ingress/CertificateAuthentication")<
  CertificateAuthentication,
  AuthenticateCertificate
>() {}

/** The subject's common name (CN), the last one if there are several; undefined without one. */
export const commonName = (certificate: X509Certificate): string | undefined => {
  const names = certificate.subject
    .split("\n")
    .filter((part) => part.startsWith("CN="))
    .map((part) => part.slice(3))
  return names.at(-1)
}
