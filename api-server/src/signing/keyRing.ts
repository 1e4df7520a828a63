// signing/keyRing.ts — owns the Ed25519 signing key ring: loading from env or the data dir,
// generation, rotation, and the public JWKS built from it.

import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { calculateJwkThumbprint, exportJWK } from "jose";
import { ConfigError, type Config } from "../config.js";

/** A public key as published in the JWKS. */
export interface PublicJwk {
  kty: "OKP";
  crv: "Ed25519";
  x: string;
  kid: string;
  alg: "EdDSA";
  use: "sig";
}

/** The key that signs new tokens plus every key that is published for verification. */
export interface KeyRing {
  signer: { kid: string; privateKey: KeyObject };
  /** Newest first; includes the signer. */
  publicKeys: PublicJwk[];
  /** Where the keys came from (for the start-up log). */
  source: "env" | "data-dir";
}

const PEM_BLOCK = /-----BEGIN ([A-Z ]+)-----[\s\S]+?-----END \1-----/g;

/** Sub-directory of the data dir holding generated keys (`ed25519-<utc timestamp>.pem`, mode 0600). */
export function keyDir(dataDir: string): string {
  return join(dataDir, "signing-keys");
}

/** Builds the published JWK (with RFC 7638 thumbprint as `kid`) of an Ed25519 key. */
export async function publicJwk(key: KeyObject): Promise<PublicJwk> {
  const pub = key.type === "private" ? createPublicKey(key) : key;
  if (pub.asymmetricKeyType !== "ed25519") throw new ConfigError("signing keys must be Ed25519");
  const jwk = await exportJWK(pub);
  const kid = await calculateJwkThumbprint(jwk);
  return { kty: "OKP", crv: "Ed25519", x: jwk.x as string, kid, alg: "EdDSA", use: "sig" };
}

/** Reads a PEM given inline (literal `\n` accepted) or as a path to a file. */
function pemText(value: string, envName: string): string {
  const v = value.replace(/\\n/g, "\n").trim();
  if (v.startsWith("-----BEGIN")) return v;
  if (existsSync(v)) return readFileSync(v, "utf8");
  throw new ConfigError(`${envName} is neither a PEM nor a readable file path`);
}

function parsePrivate(pem: string, envName: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw new ConfigError(`${envName} is not a valid PKCS#8 private key`);
  }
  if (key.asymmetricKeyType !== "ed25519") throw new ConfigError(`${envName} must be an Ed25519 key`);
  return key;
}

/** Generates a new Ed25519 key as PKCS#8 PEM. */
export function generateSigningKeyPem(): string {
  const { privateKey } = generateKeyPairSync("ed25519");
  return privateKey.export({ type: "pkcs8", format: "pem" }).toString();
}

/**
 * Adds a new key to the data-dir key ring (it becomes the signer at the next start; the older keys
 * stay published until their files are removed). Returns the new file's path.
 */
export function rotateSigningKey(dataDir: string): string {
  const dir = keyDir(dataDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const stamp = new Date().toISOString().replace(/[-:.]/g, "").replace("T", "-");
  let path = join(dir, `ed25519-${stamp}.pem`);
  for (let i = 1; existsSync(path); i++) path = join(dir, `ed25519-${stamp}-${String(i).padStart(3, "0")}.pem`);
  writeFileSync(path, generateSigningKeyPem(), { mode: 0o600, flag: "wx" });
  return path;
}

async function fromPrivateKeys(keys: KeyObject[], extraPublic: KeyObject[], source: KeyRing["source"]): Promise<KeyRing> {
  const signerKey = keys[0];
  if (!signerKey) throw new ConfigError("no signing key");
  const publicKeys: PublicJwk[] = [];
  for (const k of [...keys, ...extraPublic]) {
    const jwk = await publicJwk(k);
    if (!publicKeys.some((p) => p.kid === jwk.kid)) publicKeys.push(jwk);
  }
  return { signer: { kid: publicKeys[0]!.kid, privateKey: signerKey }, publicKeys, source };
}

/**
 * Loads the key ring. With `SKYTALE_SIGNING_KEY` set, that key signs and the keys in
 * `SKYTALE_PREVIOUS_SIGNING_KEYS` (concatenated PEMs, private or public) are also published.
 * Otherwise every `*.pem` in `<dataDir>/signing-keys` is published and the newest (by file name)
 * signs; one is generated on first start.
 */
export async function loadKeyRing(config: Pick<Config, "signingKeyPem" | "previousSigningKeysPem" | "dataDir">): Promise<KeyRing> {
  if (config.signingKeyPem) {
    const current = parsePrivate(pemText(config.signingKeyPem, "SKYTALE_SIGNING_KEY"), "SKYTALE_SIGNING_KEY");
    const previous: KeyObject[] = [];
    if (config.previousSigningKeysPem) {
      const text = pemText(config.previousSigningKeysPem, "SKYTALE_PREVIOUS_SIGNING_KEYS");
      for (const block of text.match(PEM_BLOCK) ?? []) {
        try {
          previous.push(createPublicKey(block));
        } catch {
          throw new ConfigError("SKYTALE_PREVIOUS_SIGNING_KEYS holds an unreadable PEM block");
        }
      }
    }
    return fromPrivateKeys([current], previous, "env");
  }
  const dir = keyDir(config.dataDir);
  const list = () => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".pem")).sort() : []);
  if (list().length === 0) rotateSigningKey(config.dataDir);
  const files = list().reverse(); // newest first
  const keys = files.map((f) => parsePrivate(readFileSync(join(dir, f), "utf8"), `signing key file ${f}`));
  return fromPrivateKeys(keys, [], "data-dir");
}

/** The JWKS document (`/.well-known/jwks.json`). */
export function jwks(ring: KeyRing): { keys: PublicJwk[] } {
  return { keys: ring.publicKeys };
}
