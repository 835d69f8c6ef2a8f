-- Deliveries posted over HTTP or dropped in a watched folder: each kept with its bytes (any node's job runner
-- can load it, and it is its own provenance), checksum and sender, its refresh job, and what it changed
-- (the refresh's ops.refresh_log row and counts).
CREATE TABLE ops.deliveries (
    delivery_id  bigserial PRIMARY KEY,
    layer_id     text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    subject      text NOT NULL,
    role         text NOT NULL,
    key_id       text,
    filename     text NOT NULL,
    checksum     text NOT NULL,                     -- sha256 of the bytes as sent
    size_bytes   bigint NOT NULL,
    cut_at       timestamptz,                       -- when the department cut it (edits after it are conflicts)
    content      bytea NOT NULL,
    job_id       text REFERENCES ops.jobs (job_id) ON DELETE SET NULL,
    status       text NOT NULL DEFAULT 'accepted' CHECK (status IN ('accepted', 'running', 'succeeded', 'failed')),
    refresh_id   bigint REFERENCES ops.refresh_log (refresh_id),
    result       jsonb,                             -- counts, conflicts, or the failure
    rejects      text                               -- the rejects file (CSV) of a refused delivery
);
CREATE INDEX deliveries_layer_idx ON ops.deliveries (layer_id, delivery_id DESC);
