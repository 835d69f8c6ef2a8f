-- Which service process runs a job (host:pid): a job whose process is gone (the service was stopped or
-- killed while it ran) is marked failed when the service starts again, instead of running forever.
ALTER TABLE ops.jobs ADD COLUMN runner text;
CREATE INDEX jobs_unfinished_idx ON ops.jobs (runner) WHERE status IN ('accepted', 'running');
