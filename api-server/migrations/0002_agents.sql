-- 0002_agents: key roles, the agent registry (identity → MLS signature key), its event log, and
-- the append-only revocation feed read by the relay and by members.

ALTER TABLE api_keys ADD COLUMN role text NOT NULL DEFAULT 'admin';
ALTER TABLE api_keys ADD COLUMN identity text;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check CHECK (role IN ('admin', 'agent'));
ALTER TABLE api_keys ADD CONSTRAINT api_keys_identity_check CHECK ((role = 'agent') = (identity IS NOT NULL));

CREATE TABLE agents (
  org            text NOT NULL REFERENCES accounts (org) ON DELETE CASCADE,
  identity       text NOT NULL,
  signature_key  text NOT NULL,
  status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  revoked_at     timestamptz,
  PRIMARY KEY (org, identity)
);

CREATE TABLE agent_events (
  id             serial PRIMARY KEY,
  org            text NOT NULL,
  identity       text NOT NULL,
  event          text NOT NULL CHECK (event IN ('registered', 'renewed', 'rotated', 'revoked')),
  signature_key  text NOT NULL,
  api_key_id     text NOT NULL,
  at             timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX agent_events_agent_idx ON agent_events (org, identity);

CREATE TABLE revocations (
  seq         bigserial PRIMARY KEY,
  kind        text NOT NULL CHECK (kind IN ('api_key', 'agent')),
  key_id      text,
  org         text,
  identity    text,
  revoked_at  timestamptz NOT NULL DEFAULT now(),
  CHECK ((kind = 'api_key' AND key_id IS NOT NULL) OR (kind = 'agent' AND org IS NOT NULL AND identity IS NOT NULL))
);

-- Keys revoked before this migration enter the feed too, oldest first.
INSERT INTO revocations (kind, key_id, revoked_at)
  SELECT 'api_key', id, revoked_at FROM api_keys WHERE revoked_at IS NOT NULL ORDER BY revoked_at, id;
