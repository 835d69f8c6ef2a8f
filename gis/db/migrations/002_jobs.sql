-- Jobs of the OGC API Processes (pygeoapi's job manager, kept here so every worker and host sees them),
-- and the conflict patches a plan-against-plan run writes (kept for QGIS and for the job's results).
CREATE TABLE ops.jobs (
    job_id      text PRIMARY KEY,
    process_id  text NOT NULL,
    status      text NOT NULL CHECK (status IN ('accepted', 'running', 'successful', 'failed', 'dismissed')),
    message     text,
    progress    integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    parameters  jsonb,
    created     timestamptz NOT NULL DEFAULT clock_timestamp(),
    started     timestamptz,
    updated     timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished    timestamptz,
    mimetype    text,
    result      bytea
);
CREATE INDEX jobs_created_idx ON ops.jobs (created DESC);

CREATE TABLE ops.plan_conflict_patches (
    run_id      text NOT NULL,
    check_id    text NOT NULL,
    patch_no    integer NOT NULL,
    a_layer     text NOT NULL,
    a_fid       text NOT NULL,
    a_class     text,
    b_layer     text NOT NULL,
    b_fid       text NOT NULL,
    b_class     text,
    class       text NOT NULL,
    area_m2     double precision NOT NULL,
    share_of_a  double precision,
    share_of_b  double precision,
    disposal    text NOT NULL CHECK (disposal IN ('keep', 'withdraw', 'deduct')),
    reason      text,
    geom        geometry(MultiPolygon, 4490) NOT NULL,
    PRIMARY KEY (run_id, patch_no)
);
CREATE INDEX plan_conflict_patches_geom_idx ON ops.plan_conflict_patches USING gist (geom);

-- One row per plan-against-plan run: what was compared, the figures, and the slivers dropped.
CREATE TABLE ops.plan_conflict_runs (
    run_id        text PRIMARY KEY,
    check_id      text NOT NULL,
    as_of         text,
    min_area_m2   double precision NOT NULL,
    started       timestamptz NOT NULL,
    finished      timestamptz NOT NULL DEFAULT clock_timestamp(),
    summary       jsonb NOT NULL
);
