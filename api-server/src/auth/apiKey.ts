// auth/apiKey.ts — owns the API key format (sk_live_ + 32 random bytes) and its Argon2id hashing.

import { randomBytes } from "node:crypto";
import { Algorithm, hash, verify } from "@node-rs/argon2";
import type { Argon2Params } from "../config.js";

/** Every API key starts with this. */
export const KEY_PREFIX = "sk_live_";
/** Characters of the random part that form the public lookup prefix (72 bits). */
export const LOOKUP_CHARS = 12;
const KEY_RE = /^sk_live_[A-Za-z0-9_-]{43}$/;

/** A freshly generated key: the plaintext (shown once) and its lookup prefix. */
export interface NewKey {
  key: string;
  prefix: string;
}

/** Generates a new API key: `sk_live_` + base64url of 32 random bytes. */
export function generateApiKey(): NewKey {
  const key = KEY_PREFIX + randomBytes(32).toString("base64url");
  return { key, prefix: lookupPrefix(key) };
}

/** The stored lookup prefix of a well-formed key (`sk_live_` + 12 chars). */
export function lookupPrefix(key: string): string {
  return key.slice(0, KEY_PREFIX.length + LOOKUP_CHARS);
}

/** True when `key` has the exact shape of an API key. */
export function isWellFormedKey(key: string): boolean {
  return KEY_RE.test(key);
}

/** Hashes `key` with Argon2id under `params` (PHC string, salt included). */
export function hashApiKey(key: string, params: Argon2Params): Promise<string> {
  return hash(key, { algorithm: Algorithm.Argon2id, ...params });
}

/** Verifies `key` against a PHC hash; the parameters are read from the hash itself. */
export async function verifyApiKey(phc: string, key: string): Promise<boolean> {
  try {
    return await verify(phc, key);
  } catch {
    return false;
  }
}
