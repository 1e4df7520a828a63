-- 0001_init: accounts and their API keys (Argon2id hashes only, never plaintext).

CREATE TABLE accounts (
  id          text PRIMARY KEY,
  email       text NOT NULL,
  name        text NOT NULL,
  org         text NOT NULL UNIQUE,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
  id            text PRIMARY KEY,
  account_id    text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  name          text NOT NULL,
  prefix        text NOT NULL UNIQUE,
  hash          text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  last_used_at  timestamptz,
  revoked_at    timestamptz
);

CREATE INDEX api_keys_account_idx ON api_keys (account_id);
