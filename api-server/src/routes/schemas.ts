// routes/schemas.ts — owns the JSON schemas shared by several routes.

import { IDENTITY_PATTERN, SIGNATURE_KEY_PATTERN } from "../signing/credentials.js";

/** Public account shape. */
export const accountSchema = {
  type: "object",
  properties: {
    id: { type: "string" },
    email: { type: "string" },
    name: { type: "string" },
    org: { type: "string" },
  },
  required: ["id", "email", "name", "org"],
} as const;

/** Key name: 1–100 printable characters. */
export const keyNameSchema = { type: "string", minLength: 1, maxLength: 100, pattern: "^[^\\u0000-\\u001f]+$" } as const;

/** A newly created key, including its plaintext (shown once). */
export const newKeySchema = {
  type: "object",
  properties: {
    id: { type: "string" },
    prefix: { type: "string" },
    name: { type: "string" },
    role: { type: "string", enum: ["admin", "agent"] },
    identity: { type: ["string", "null"] },
    key: { type: "string" },
  },
  required: ["id", "prefix", "name", "role", "identity", "key"],
} as const;

/** Agent identity: 1–64 of `[A-Za-z0-9._@-]` (the relay's rule). */
export const identitySchema = { type: "string", pattern: IDENTITY_PATTERN } as const;

/** Ed25519 public key: base64url without padding of 32 bytes. */
export const signatureKeySchema = { type: "string", pattern: SIGNATURE_KEY_PATTERN } as const;

/** An agent as listed. */
export const agentSchema = {
  type: "object",
  properties: {
    identity: { type: "string" },
    signatureKey: { type: "string" },
    fingerprint: { type: "string" },
    status: { type: "string", enum: ["active", "revoked"] },
    createdAt: { type: "string" },
    revokedAt: { type: ["string", "null"] },
  },
  required: ["identity", "signatureKey", "fingerprint", "status", "createdAt", "revokedAt"],
} as const;

/** A registration / rotation answer: the agent and a fresh credential. */
export const credentialAnswerSchema = {
  type: "object",
  properties: {
    identity: { type: "string" },
    org: { type: "string" },
    signatureKey: { type: "string" },
    fingerprint: { type: "string" },
    credential: { type: "string" },
    expiresAt: { type: "string" },
  },
  required: ["identity", "org", "signatureKey", "fingerprint", "credential", "expiresAt"],
} as const;
