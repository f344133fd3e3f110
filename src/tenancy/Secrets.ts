/**
 * Device credentials and API keys: made by Sluice, stored only as hashes, compared in constant time.
 *
 * The hash is SHA-256, unsalted, written `sha256:<hex>`. Why not a password hash (scrypt,
 * argon2): a device connects on the ingest hot path, and a fleet reconnecting after an outage
 * makes 10,000 connections a second; scrypt at a safe cost takes ~50 ms of CPU per check, which
 * would need 500 cores for that. SHA-256 takes about a microsecond. It is safe because the secrets
 * are not passwords: the ones Sluice makes are 24 random bytes (192 bits), beyond any brute force
 * of a leaked hash, and a hash of a random secret is also its lookup key (an HTTP bearer credential
 * or an API key names no device: it is found by its hash). Secrets a configuration file supplies
 * are whatever their author chose (at least 8 characters): they are as strong as that choice, which
 * is why the registry API makes its own and `docs/configuration.md` says to prefer them.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto"

/** A new secret: 24 random bytes, base64url (32 characters). */
export const newSecret = (): string => randomBytes(24).toString("base64url")

/** The stored form of a secret. */
export const hashSecret = (secret: string): string =>
  `${PREFIX}${createHash("sha256").update(secret, "utf8").digest("hex")}`

const PREFIX = "sha256:"

/**
 * A stored secret's public id: the first 12 hex digits of its hash. What the admin API lists keys
 * and claims by, and what logs name them by; it reveals nothing of the secret.
 */
export const publicId = (hash: string): string => hash.slice(PREFIX.length, PREFIX.length + 12)

/** True if `secret` hashes to `hash`, compared in constant time. */
export const verifySecret = (secret: string, hash: string): boolean => {
  const a = Buffer.from(hashSecret(secret))
  const b = Buffer.from(hash)
  return a.length === b.length && timingSafeEqual(a, b)
}
