-- 0003_limits: state shared by every API server instance on this database — fixed-window rate
-- limit counters and the Argon2id verification slots (leases that expire). Both are UNLOGGED:
-- losing them in a Postgres crash only resets limits, and they skip the WAL on every request.

CREATE UNLOGGED TABLE rate_limits (
  key       text PRIMARY KEY,
  count     bigint NOT NULL,
  reset_at  timestamptz NOT NULL
);

CREATE INDEX rate_limits_reset_idx ON rate_limits (reset_at);

CREATE UNLOGGED TABLE argon2_slots (
  slot        integer PRIMARY KEY,
  holder      text,
  expires_at  timestamptz
);
