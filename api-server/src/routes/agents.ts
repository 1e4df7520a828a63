// routes/agents.ts — owns the agent registry routes: register (first come), admin rotate, list,
// admin revoke; registration and rotation answer a fresh agent credential.

import type { FastifyInstance } from "fastify";
import { ApiError, errors } from "../errors.js";
import type { Services } from "../services.js";
import { decodeSignatureKey, fingerprint, issueCredential } from "../signing/credentials.js";
import { listAgents, registerAgent, revokeAgent, rotateAgent, type AgentRow } from "../store/agents.js";
import { assertMayActAs, authOf, requireAuth } from "./requireAuth.js";
import { agentSchema, credentialAnswerSchema, identitySchema, signatureKeySchema } from "./schemas.js";

const identityParams = {
  type: "object",
  additionalProperties: false,
  required: ["identity"],
  properties: { identity: identitySchema },
} as const;

/** The raw key of a request body's `signatureKey`, or 400. */
function rawKey(signatureKey: string): Buffer {
  const raw = decodeSignatureKey(signatureKey);
  if (!raw) throw errors.invalid("signatureKey must be the base64url (no padding) encoding of a 32-byte Ed25519 public key");
  return raw;
}

/** Registers the agent routes. */
export function registerAgentRoutes(app: FastifyInstance, s: Services): void {
  const anyKey = requireAuth(s);
  const adminKey = requireAuth(s, "admin");
  const writeLimit = { max: s.config.rateLimits.agentsPerIp, timeWindow: 60_000 };

  const answer = async (org: string, identity: string, signatureKey: string, raw: Buffer) => {
    const c = await issueCredential(s.ring, { issuer: s.config.issuer, ttlSeconds: s.config.credentialTtlSeconds }, { org, identity, signatureKey });
    s.metrics.credentialsIssued.inc();
    return { identity, org, signatureKey, fingerprint: fingerprint(raw), credential: c.credential, expiresAt: c.expiresAt.toISOString() };
  };

  app.post<{ Body: { identity: string; signatureKey: string } }>(
    "/v1/agents",
    {
      preValidation: anyKey,
      config: {
        bearer: true,
        summary: "Register an agent identity with its MLS signature key (first come) and get a credential; same key again renews",
        rateLimit: writeLimit,
      },
      schema: {
        body: {
          type: "object",
          additionalProperties: false,
          required: ["identity", "signatureKey"],
          properties: { identity: identitySchema, signatureKey: signatureKeySchema },
        },
        response: { 200: credentialAnswerSchema, 201: credentialAnswerSchema },
      },
    },
    async (req, reply) => {
      const a = authOf(req);
      const { identity, signatureKey } = req.body;
      assertMayActAs(a, identity);
      const raw = rawKey(signatureKey);
      const outcome = await registerAgent(s.db, { org: a.org, identity, signatureKey, apiKeyId: a.keyId });
      if (outcome === "key_mismatch") {
        throw new ApiError(409, "SKYTALE_AGENT_KEY_MISMATCH", "identity is registered with another signature key; an admin can rotate it");
      }
      if (outcome === "revoked") throw new ApiError(409, "SKYTALE_AGENT_REVOKED", "identity has been revoked; only an admin rotate restores it");
      if (outcome === "registered") s.metrics.agentsRegistered.inc();
      return reply.code(outcome === "registered" ? 201 : 200).send(await answer(a.org, identity, signatureKey, raw));
    },
  );

  app.post<{ Params: { identity: string }; Body: { signatureKey: string } }>(
    "/v1/agents/:identity/rotate",
    {
      preValidation: adminKey,
      config: { bearer: true, summary: "Set a new signature key for an agent and re-activate it (admin only); returns a credential", rateLimit: writeLimit },
      schema: {
        params: identityParams,
        body: { type: "object", additionalProperties: false, required: ["signatureKey"], properties: { signatureKey: signatureKeySchema } },
        response: { 200: credentialAnswerSchema },
      },
    },
    async (req) => {
      const a = authOf(req);
      const { identity } = req.params;
      const { signatureKey } = req.body;
      const raw = rawKey(signatureKey);
      if (!(await rotateAgent(s.db, { org: a.org, identity, signatureKey, apiKeyId: a.keyId }))) throw errors.notFound("agent");
      s.metrics.agentsRotated.inc();
      return answer(a.org, identity, signatureKey, raw);
    },
  );

  app.get(
    "/v1/agents",
    {
      preValidation: anyKey,
      config: { bearer: true, summary: "List the org's agents (an agent key sees only its own identity)" },
      schema: {
        response: {
          200: { type: "object", required: ["agents"], properties: { agents: { type: "array", items: agentSchema } } },
        },
      },
    },
    async (req) => {
      const a = authOf(req);
      const rows = await listAgents(s.db, a.org, a.role === "admin" ? undefined : (a.identity ?? ""));
      return { agents: rows.map(publicAgent) };
    },
  );

  app.delete<{ Params: { identity: string } }>(
    "/v1/agents/:identity",
    {
      preValidation: adminKey,
      config: { bearer: true, summary: "Revoke an agent identity (admin only); it enters the revocation feed" },
      schema: { params: identityParams },
    },
    async (req, reply) => {
      const a = authOf(req);
      const outcome = await revokeAgent(s.db, a.org, req.params.identity, a.keyId);
      if (outcome === "missing") throw errors.notFound("agent");
      if (outcome === "revoked") s.metrics.agentsRevoked.inc();
      return reply.code(204).send();
    },
  );
}

function publicAgent(r: AgentRow) {
  return {
    identity: r.identity,
    signatureKey: r.signatureKey,
    fingerprint: fingerprint(Buffer.from(r.signatureKey, "base64url")),
    status: r.status,
    createdAt: new Date(r.createdAt).toISOString(),
    revokedAt: r.revokedAt ? new Date(r.revokedAt).toISOString() : null,
  };
}
