-- Who started a job: its status and results are that caller's (administrators see every job).
ALTER TABLE ops.jobs ADD COLUMN owner text;
CREATE INDEX jobs_owner_idx ON ops.jobs (owner, created DESC);
