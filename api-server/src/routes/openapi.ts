// routes/openapi.ts — owns GET /openapi.json, built from the schemas of the registered routes.

import type { FastifyInstance, RouteOptions } from "fastify";
import { errorSchema } from "../errors.js";

interface Collected {
  method: string;
  url: string;
  summary: string | undefined;
  bearer: boolean;
  schema: Record<string, unknown> | undefined;
}

/** Starts collecting routes (call before registering them) and serves the OpenAPI 3.0 document. */
export function registerOpenApi(app: FastifyInstance, version: string): void {
  const routes: Collected[] = [];
  app.addHook("onRoute", (r: RouteOptions) => {
    const methods = Array.isArray(r.method) ? r.method : [r.method];
    for (const m of methods) {
      if (m === "HEAD" || r.url === "/openapi.json") continue;
      routes.push({
        method: m.toLowerCase(),
        url: r.url,
        summary: (r.config as { summary?: string } | undefined)?.summary,
        bearer: (r.config as { bearer?: boolean } | undefined)?.bearer === true,
        schema: r.schema as Record<string, unknown> | undefined,
      });
    }
  });

  let doc: unknown;
  app.get("/openapi.json", async () => (doc ??= build(routes, version)));
}

function build(routes: Collected[], version: string): unknown {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const path = r.url.replace(/:([A-Za-z0-9_]+)/g, "{$1}");
    const s = r.schema ?? {};
    const op: Record<string, unknown> = { summary: r.summary };
    if (r.bearer) op.security = [{ apiKey: [] }];
    const params = s.params as { properties?: Record<string, unknown> } | undefined;
    const query = s.querystring as { properties?: Record<string, unknown>; required?: string[] } | undefined;
    const parameters = [
      ...Object.entries(params?.properties ?? {}).map(([name, schema]) => ({ name, in: "path", required: true, schema })),
      ...Object.entries(query?.properties ?? {}).map(([name, schema]) => ({ name, in: "query", required: query?.required?.includes(name) ?? false, schema })),
    ];
    if (parameters.length > 0) op.parameters = parameters;
    if (s.body) op.requestBody = { content: { "application/json": { schema: s.body } } };
    const responses: Record<string, unknown> = {};
    for (const [code, schema] of Object.entries((s.response as Record<string, unknown>) ?? {})) {
      responses[code] = { description: code, content: { "application/json": { schema } } };
    }
    if (Object.keys(responses).length === 0) responses["200"] = { description: "OK" };
    responses.default = { description: "Error", content: { "application/json": { schema: errorSchema } } };
    op.responses = responses;
    (paths[path] ??= {})[r.method] = op;
  }
  return {
    openapi: "3.0.3",
    info: { title: "Skytale API", version },
    components: { securitySchemes: { apiKey: { type: "http", scheme: "bearer", description: "sk_live_… API key" } } },
    paths,
  };
}
