// test/api.postgres.test.ts — runs the e2e API suite on a fresh database of the real Postgres.
import { postgresBackend } from "./helpers/backends.js";
import { defineApiSuite } from "./suites/api.js";

defineApiSuite(postgresBackend);
