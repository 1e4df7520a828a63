// test/api.pglite.test.ts — runs the e2e API suite on embedded PGlite.
import { pgliteBackend } from "./helpers/backends.js";
import { defineApiSuite } from "./suites/api.js";

defineApiSuite(pgliteBackend);
