-- Jobs as a queue on the primary: asynchronous jobs wait as 'accepted' with what their run needs (the
-- inputs and the caller they run for, in `request`), `gis worker` processes claim them with
-- FOR UPDATE SKIP LOCKED, and whoever runs a job (a worker, or a service node running a synchronous
-- execution) stamps `heartbeat` every few seconds. A running job whose heartbeat stops is resumed (put
-- back as 'accepted', up to GIS_JOBS_MAX_ATTEMPTS runs) or failed with the reason (gis/jobs/queue.py).
ALTER TABLE ops.jobs ADD COLUMN execution text NOT NULL DEFAULT 'sync' CHECK (execution IN ('sync', 'async'));
ALTER TABLE ops.jobs ADD COLUMN request jsonb;
ALTER TABLE ops.jobs ADD COLUMN heartbeat timestamptz;
ALTER TABLE ops.jobs ADD COLUMN attempts integer NOT NULL DEFAULT 0;
CREATE INDEX jobs_queue_idx ON ops.jobs (created) WHERE status = 'accepted' AND execution = 'async';
CREATE INDEX jobs_running_idx ON ops.jobs (heartbeat) WHERE status = 'running';
