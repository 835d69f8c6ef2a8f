-- A synchronous process call answers with its result; its job row is kept only as long as a caller may
-- still ask for it (GIS_SYNC_JOB_RETENTION_MINUTES, `gis ops prune`), not forever with its whole result.
ALTER TABLE ops.jobs ADD COLUMN sync boolean NOT NULL DEFAULT false;
CREATE INDEX jobs_sync_finished_idx ON ops.jobs (finished) WHERE sync;
