-- How far `gis audit import-db-log` has read each server log: direct reads by `gis db grant` login roles
-- are copied from the log into ops.audit_log once (a log shorter than the position was rotated: from 0).
CREATE TABLE ops.db_log_position (
    log_path    text PRIMARY KEY,
    position    bigint NOT NULL CHECK (position >= 0),
    imported_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
