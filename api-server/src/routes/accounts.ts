// routes/accounts.ts — owns signup (POST /v1/accounts) and GET /v1/accounts/me.

import type { FastifyInstance } from "fastify";
import { isUniqueViolation } from "../db/index.js";
import { ApiError, errors } from "../errors.js";
import type { Services } from "../services.js";
import { findAccount, insertAccount, type Account } from "../store/accounts.js";
import { newId } from "../store/ids.js";
import { createKey } from "./keyFactory.js";
import { authOf, requireAuth } from "./requireAuth.js";
import { accountSchema, keyNameSchema } from "./schemas.js";

interface SignupBody {
  email: string;
  name: string;
  org: string;
}

/** Registers the account routes. */
export function registerAccountRoutes(app: FastifyInstance, s: Services): void {
  app.post<{ Body: SignupBody }>(
    "/v1/accounts",
    {
      config: {
        summary: "Create an account and its first API key (the key is shown once)",
        rateLimit: { max: s.config.rateLimits.signupPerIp, timeWindow: 60_000 },
      },
      schema: {
        body: {
          type: "object",
          additionalProperties: false,
          required: ["email", "name", "org"],
          properties: {
            email: { type: "string", format: "email", maxLength: 254 },
            name: keyNameSchema,
            org: { type: "string", pattern: "^[a-z0-9-]{1,64}$" },
          },
        },
        response: {
          201: {
            type: "object",
            properties: { account: accountSchema, apiKey: { type: "string" } },
            required: ["account", "apiKey"],
          },
        },
      },
    },
    async (req, reply) => {
      const account: Account = { id: newId("acct"), email: req.body.email, name: req.body.name, org: req.body.org };
      try {
        const key = await createKey(s, "default", account.id, { before: (tx) => insertAccount(tx, account) });
        s.metrics.accountsCreated.inc();
        return reply.code(201).send({ account, apiKey: key.key });
      } catch (err) {
        if (isUniqueViolation(err)) throw new ApiError(409, "SKYTALE_CONFLICT", "org is already taken");
        throw err;
      }
    },
  );

  app.get(
    "/v1/accounts/me",
    {
      preValidation: requireAuth(s),
      config: { bearer: true, summary: "The account of the calling API key" },
      schema: { response: { 200: { type: "object", properties: { account: accountSchema }, required: ["account"] } } },
    },
    async (req) => {
      const account = await findAccount(s.db, authOf(req).accountId);
      if (!account) throw errors.notFound("account");
      return { account };
    },
  );
}
