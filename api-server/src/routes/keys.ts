// routes/keys.ts — owns API key management (admin keys only): create admin or agent keys, list
// (no secrets), revoke.

import type { FastifyInstance } from "fastify";
import { errors } from "../errors.js";
import type { Services } from "../services.js";
import { listKeys, revokeKey } from "../store/apiKeys.js";
import { createKey } from "./keyFactory.js";
import { authOf, requireAuth } from "./requireAuth.js";
import { identitySchema, keyNameSchema, newKeySchema } from "./schemas.js";

/** Registers the key routes. */
export function registerKeyRoutes(app: FastifyInstance, s: Services): void {
  const auth = requireAuth(s, "admin");

  app.post<{ Body: { name: string; identity?: string } }>(
    "/v1/keys",
    {
      preValidation: auth,
      config: {
        bearer: true,
        summary: "Create an API key (admin only; shown once). With `identity`: an agent key bound to that identity",
      },
      schema: {
        body: {
          type: "object",
          additionalProperties: false,
          required: ["name"],
          properties: { name: keyNameSchema, identity: identitySchema },
        },
        response: { 201: newKeySchema },
      },
    },
    async (req, reply) =>
      reply.code(201).send(await createKey(s, req.body.name, authOf(req).accountId, { identity: req.body.identity })),
  );

  app.get(
    "/v1/keys",
    {
      preValidation: auth,
      config: { bearer: true, summary: "List the account's active API keys with role and identity (admin only; no secrets)" },
      schema: {
        response: {
          200: {
            type: "object",
            required: ["keys"],
            properties: {
              keys: {
                type: "array",
                items: {
                  type: "object",
                  properties: {
                    id: { type: "string" },
                    name: { type: "string" },
                    prefix: { type: "string" },
                    role: { type: "string", enum: ["admin", "agent"] },
                    identity: { type: ["string", "null"] },
                    createdAt: { type: "string" },
                    lastUsedAt: { type: ["string", "null"] },
                  },
                  required: ["id", "name", "prefix", "role", "identity", "createdAt", "lastUsedAt"],
                },
              },
            },
          },
        },
      },
    },
    async (req) => ({ keys: await listKeys(s.db, authOf(req).accountId) }),
  );

  app.delete<{ Params: { id: string } }>(
    "/v1/keys/:id",
    {
      preValidation: auth,
      config: { bearer: true, summary: "Revoke an API key (admin only); it stops working at once and enters the revocation feed" },
      schema: {
        params: { type: "object", additionalProperties: false, required: ["id"], properties: { id: { type: "string", pattern: "^key_[A-Za-z0-9_-]{22}$" } } },
      },
    },
    async (req, reply) => {
      const ok = await revokeKey(s.db, authOf(req).accountId, req.params.id);
      if (!ok) throw errors.notFound("key");
      s.cache.invalidate(req.params.id);
      return reply.code(204).send();
    },
  );
}
