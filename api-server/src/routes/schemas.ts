// routes/schemas.ts — owns the JSON schemas shared by several routes.

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
    key: { type: "string" },
  },
  required: ["id", "prefix", "name", "key"],
} as const;
