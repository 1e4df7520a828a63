// routes/revocations.ts — owns GET /v1/revocations: the public, cursor-paged feed of revoked API
// keys and agents that the relay (and members) poll.

import type { FastifyInstance, FastifyRequest } from "fastify";
import { pollingRelay, relayPollKeys } from "../auth/relayPoll.js";
import { relayList } from "../config.js";
import { errors } from "../errors.js";
import type { Services } from "../services.js";
import { listRevocations, REVOCATION_PAGE_SIZE } from "../store/revocations.js";

/** Registers the revocation feed. */
export function registerRevocationRoutes(app: FastifyInstance, s: Services): void {
  // A poll signed by a relay this server lists counts in that relay's own bucket, not its IP's.
  const relayKeys = relayPollKeys(relayList(s.config));
  const bucket = (req: FastifyRequest): string => {
    const since = (req.query as { since?: unknown } | undefined)?.since;
    const relay = pollingRelay(req.headers, typeof since === "string" ? since : "0", relayKeys, Date.now());
    return relay ? `relay:${relay}` : req.ip;
  };
  app.get<{ Querystring: { since?: string } }>(
    "/v1/revocations",
    {
      config: {
        summary: `Revoked API keys and agents after cursor \`since\` (public; at most ${REVOCATION_PAGE_SIZE} entries, poll again with \`cursor\`)`,
        rateLimit: {
          max: (_req: FastifyRequest, key: string) =>
            key.startsWith("relay:") ? s.config.rateLimits.revocationsPerRelay : s.config.rateLimits.revocationsPerIp,
          timeWindow: 60_000,
          keyGenerator: bucket,
        },
      },
      schema: {
        querystring: {
          type: "object",
          additionalProperties: false,
          properties: { since: { type: "string", pattern: "^[0-9]{1,15}$" } },
        },
        response: {
          200: {
            type: "object",
            required: ["cursor", "apiKeys", "agents"],
            properties: {
              cursor: { type: "integer" },
              apiKeys: {
                type: "array",
                items: { type: "object", required: ["id", "revokedAt"], properties: { id: { type: "string" }, revokedAt: { type: "integer" } } },
              },
              agents: {
                type: "array",
                items: {
                  type: "object",
                  required: ["org", "identity", "revokedAt"],
                  properties: { org: { type: "string" }, identity: { type: "string" }, revokedAt: { type: "integer" } },
                },
              },
            },
          },
        },
      },
    },
    async (req) => {
      const since = Number(req.query.since ?? "0");
      if (!Number.isSafeInteger(since)) throw errors.invalid("since must be a non-negative integer");
      return listRevocations(s.db, since);
    },
  );
}
