-- Access control: API keys (only their keyed hash), the audit log, and the claims of database roles
-- that row-level security reads (written by `gis db grant`).
CREATE TABLE ops.api_keys (
    key_id      text PRIMARY KEY,
    key_hash    bytea NOT NULL UNIQUE,
    name        text NOT NULL,
    role        text NOT NULL,
    claims      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at  timestamptz
);

-- One row per read of internal or restricted data and per administrative action.
CREATE TABLE ops.audit_log (
    audit_id    bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    subject     text NOT NULL,
    role        text NOT NULL,
    method      text NOT NULL,
    key_id      text,
    action      text NOT NULL,
    layer_id    text,
    path        text,
    query       jsonb NOT NULL DEFAULT '{}'::jsonb,
    features    integer,
    status      integer
);
CREATE INDEX audit_log_at_idx ON ops.audit_log (at DESC);
CREATE INDEX audit_log_layer_idx ON ops.audit_log (layer_id, at DESC);

CREATE TABLE ops.db_role_claims (
    role_name   text NOT NULL,
    claim       text NOT NULL,
    value       text NOT NULL,
    PRIMARY KEY (role_name, claim)
);
