// errors.ts — owns the error model: stable SKYTALE_* codes, ApiError, and the `{error:{code,message}}` body.

import type { FastifyError, FastifyInstance } from "fastify";

/**
 * Every error code the API can answer with, in the `SKYTALE_*` form shared with the Rust core and
 * the SDK. Stable: clients match on these.
 */
export const API_ERROR_CODES = [
  /** 400 (413 body too large, 415 content type): schema violation, malformed JSON, unknown field. */
  "SKYTALE_INVALID_REQUEST",
  /** 401: missing, malformed, unknown or wrong API key. */
  "SKYTALE_AUTH_KEY_INVALID",
  /** 401: the full key verified but has been revoked. */
  "SKYTALE_AUTH_KEY_REVOKED",
  /** 403: an agent key asked for an identity other than the one it is bound to. */
  "SKYTALE_AUTH_IDENTITY_FORBIDDEN",
  /** 403: an agent key on an admin-only route. */
  "SKYTALE_FORBIDDEN",
  /** 409: the identity is registered with another signature key (only an admin rotate changes it). */
  "SKYTALE_AGENT_KEY_MISMATCH",
  /** 409 on registration, 403 on tokens: the identity has been revoked. */
  "SKYTALE_AGENT_REVOKED",
  /** 403: a token was asked for an identity that is not a registered agent of the org. */
  "SKYTALE_AGENT_NOT_REGISTERED",
  /** 429 (+ Retry-After). */
  "SKYTALE_RATE_LIMITED",
  /** 404: unknown route, key, account or agent. */
  "SKYTALE_NOT_FOUND",
  /** 409: org already taken. */
  "SKYTALE_CONFLICT",
  /** 500: anything else (details only in the server log). */
  "SKYTALE_INTERNAL",
] as const;

/** Every error code the API can answer with. */
export type ErrorCode = (typeof API_ERROR_CODES)[number];

/** An error that maps directly to an HTTP answer. Messages must never contain secrets. */
export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: ErrorCode,
    message: string,
    /** Seconds the client should wait (429 only). */
    readonly retryAfter?: number,
  ) {
    super(message);
  }
}

/** Builds the JSON body of an error answer. */
export function errorBody(code: ErrorCode, message: string): { error: { code: ErrorCode; message: string } } {
  return { error: { code, message } };
}

/** JSON schema of the error body, for the OpenAPI document. */
export const errorSchema = {
  type: "object",
  properties: {
    error: {
      type: "object",
      properties: { code: { type: "string", enum: [...API_ERROR_CODES] }, message: { type: "string" } },
      required: ["code", "message"],
    },
  },
  required: ["error"],
} as const;

/** Canned errors used in several places. */
export const errors = {
  invalid: (message: string) => new ApiError(400, "SKYTALE_INVALID_REQUEST", message),
  keyInvalid: () => new ApiError(401, "SKYTALE_AUTH_KEY_INVALID", "API key missing or invalid"),
  keyRevoked: () => new ApiError(401, "SKYTALE_AUTH_KEY_REVOKED", "API key has been revoked"),
  forbidden: () => new ApiError(403, "SKYTALE_FORBIDDEN", "this route needs an admin API key"),
  identityForbidden: () =>
    new ApiError(403, "SKYTALE_AUTH_IDENTITY_FORBIDDEN", "this API key is bound to another identity"),
  notFound: (what: string) => new ApiError(404, "SKYTALE_NOT_FOUND", `${what} not found`),
  rateLimited: (retryAfter: number) =>
    new ApiError(429, "SKYTALE_RATE_LIMITED", "too many requests, retry later", retryAfter),
};

/** Installs the error and not-found handlers so every failure answers `{error:{code,message}}`. */
export function installErrorHandlers(app: FastifyInstance): void {
  app.setNotFoundHandler((_req, reply) => {
    void reply.code(404).send(errorBody("SKYTALE_NOT_FOUND", "route not found"));
  });
  app.setErrorHandler((err: FastifyError | ApiError, req, reply) => {
    if (err instanceof ApiError) {
      if (err.retryAfter !== undefined) void reply.header("retry-after", String(err.retryAfter));
      return reply.code(err.statusCode).send(errorBody(err.code, err.message));
    }
    const status = err.statusCode ?? 500;
    if (err.validation || err.code === "FST_ERR_VALIDATION") {
      return reply.code(400).send(errorBody("SKYTALE_INVALID_REQUEST", err.message));
    }
    if (status === 429) return reply.code(429).send(errorBody("SKYTALE_RATE_LIMITED", "too many requests, retry later"));
    if (status >= 400 && status < 500) {
      // Content-type, body-size, JSON syntax and similar framework-level request errors.
      return reply.code(status).send(errorBody("SKYTALE_INVALID_REQUEST", err.message));
    }
    req.log.error({ err }, "unhandled error");
    return reply.code(500).send(errorBody("SKYTALE_INTERNAL", "internal server error"));
  });
}
