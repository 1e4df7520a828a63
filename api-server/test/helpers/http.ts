// test/helpers/http.ts — owns the small fetch wrapper the tests use to call the API, and the
// signup / agent registration shortcuts built on it.

import { generateKeyPairSync } from "node:crypto";

/** A parsed answer. */
export interface Res<T = any> {
  status: number;
  headers: Headers;
  body: T;
}

/** Calls `method path` on `base` with an optional API key, JSON body and extra headers. */
export async function call<T = any>(
  base: string,
  method: string,
  path: string,
  opts: { key?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<Res<T>> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.key !== undefined) headers.authorization = `Bearer ${opts.key}`;
  let body: string | undefined;
  if (opts.body !== undefined || opts.rawBody !== undefined) {
    headers["content-type"] ??= "application/json";
    body = opts.rawBody ?? JSON.stringify(opts.body);
  }
  const res = await fetch(base + path, { method, headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON (e.g. /metrics)
  }
  return { status: res.status, headers: res.headers, body: parsed as T };
}

let counter = 0;
/** A unique, valid org name for this test run. */
export function uniqueOrg(tag = "org"): string {
  counter += 1;
  return `${tag}-${process.pid}-${Date.now().toString(36)}-${counter}`;
}

/** Signs up a new account and returns its id, org and first key. */
export async function signup(base: string, org = uniqueOrg(), headers?: Record<string, string>) {
  const r = await call(base, "POST", "/v1/accounts", { body: { email: `${org}@example.com`, name: `Team ${org}`, org }, headers });
  if (r.status !== 201) throw new Error(`signup failed: ${r.status} ${JSON.stringify(r.body)}`);
  return { accountId: r.body.account.id as string, org, key: r.body.apiKey as string };
}

/** A fresh Ed25519 public key as the API takes it: base64url (no padding) of the raw 32 bytes. */
export function newSignatureKey(): string {
  return generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" }).x as string;
}

/** Registers (or renews) `identity` with `signatureKey` using `key`; throws unless 200/201. */
export async function registerAgent(base: string, key: string, identity: string, signatureKey = newSignatureKey()) {
  const r = await call(base, "POST", "/v1/agents", { key, body: { identity, signatureKey } });
  if (r.status !== 201 && r.status !== 200) throw new Error(`agent registration failed: ${r.status} ${JSON.stringify(r.body)}`);
  return { status: r.status, signatureKey, credential: r.body.credential as string, body: r.body };
}

/** A relay token for `identity` (registered first, with a fresh key, when `register`). */
export async function tokenFor(base: string, key: string, identity: string, opts: { register?: boolean; headers?: Record<string, string> } = {}) {
  if (opts.register) await registerAgent(base, key, identity);
  return call(base, "POST", "/v1/tokens", { key, body: { identity }, headers: opts.headers });
}
