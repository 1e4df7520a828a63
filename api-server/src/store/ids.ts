// store/ids.ts — owns the format of public identifiers (acct_…, key_…).

import { randomBytes } from "node:crypto";

/** A new random identifier `<kind>_<22 base64url chars>` (128 bits). */
export function newId(kind: "acct" | "key" | "tok"): string {
  return `${kind}_${randomBytes(16).toString("base64url")}`;
}
