-- ops.jobs said twice whether a job ran synchronously: `sync` (015) and `execution` (017). `execution` stays
-- (the queue reads it); rows from before 017 carry its default 'sync', so finished asynchronous jobs are told
-- apart by `sync` before it goes.
UPDATE ops.jobs SET execution = 'async'
WHERE NOT sync AND execution = 'sync' AND status IN ('successful', 'failed', 'dismissed');
-- A synchronous call's caller had its result in the response: no copy is kept (the row, without it, stays
-- for GIS_SYNC_JOB_RETENTION_MINUTES; `gis ops prune`).
UPDATE ops.jobs SET result = NULL WHERE execution = 'sync' AND result IS NOT NULL;
DROP INDEX ops.jobs_sync_finished_idx;
ALTER TABLE ops.jobs DROP COLUMN sync;
CREATE INDEX jobs_sync_finished_idx ON ops.jobs (finished) WHERE execution = 'sync';
