// errors.ts — owns the error model: stable codes, ApiError, and the `{error:{code,message}}` body.

import type { FastifyError, FastifyInstance } from "fastify";

/** Every error code the API can answer with. Stable: clients match on these. */
export type ErrorCode =
  | "invalid_request"
  | "auth_key_invalid"
  | "auth_key_revoked"
  | "rate_limited"
  | "not_found"
  | "conflict"
  | "internal_error";

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
      properties: { code: { type: "string" }, message: { type: "string" } },
      required: ["code", "message"],
    },
  },
  required: ["error"],
} as const;

/** Canned errors used in several places. */
export const errors = {
  keyInvalid: () => new ApiError(401, "auth_key_invalid", "API key missing or invalid"),
  keyRevoked: () => new ApiError(401, "auth_key_revoked", "API key has been revoked"),
  notFound: (what: string) => new ApiError(404, "not_found", `${what} not found`),
  rateLimited: (retryAfter: number) =>
    new ApiError(429, "rate_limited", "too many requests, retry later", retryAfter),
};

/** Installs the error and not-found handlers so every failure answers `{error:{code,message}}`. */
export function installErrorHandlers(app: FastifyInstance): void {
  app.setNotFoundHandler((_req, reply) => {
    void reply.code(404).send(errorBody("not_found", "route not found"));
  });
  app.setErrorHandler((err: FastifyError | ApiError, req, reply) => {
    if (err instanceof ApiError) {
      if (err.retryAfter !== undefined) void reply.header("retry-after", String(err.retryAfter));
      return reply.code(err.statusCode).send(errorBody(err.code, err.message));
    }
    const status = err.statusCode ?? 500;
    if (err.validation || err.code === "FST_ERR_VALIDATION") {
      return reply.code(400).send(errorBody("invalid_request", err.message));
    }
    if (status === 429) return reply.code(429).send(errorBody("rate_limited", "too many requests, retry later"));
    if (status >= 400 && status < 500) {
      // Content-type, body-size, JSON syntax and similar framework-level request errors.
      return reply.code(status).send(errorBody("invalid_request", err.message));
    }
    req.log.error({ err }, "unhandled error");
    return reply.code(500).send(errorBody("internal_error", "internal server error"));
  });
}
