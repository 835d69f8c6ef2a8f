-- Schemas per domain, the operations tables, and QGIS's style table.
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE SCHEMA IF NOT EXISTS base;
CREATE SCHEMA IF NOT EXISTS pipeline;
CREATE SCHEMA IF NOT EXISTS planning;
CREATE SCHEMA IF NOT EXISTS environment;
CREATE SCHEMA IF NOT EXISTS policing;
CREATE SCHEMA IF NOT EXISTS ops;
CREATE SCHEMA IF NOT EXISTS staging;

-- One row per successful refresh (written in the merge transaction) or failed one (written after it).
CREATE TABLE ops.refresh_log (
    refresh_id      bigserial PRIMARY KEY,
    layer_id        text NOT NULL,
    status          text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    source_path     text,
    source_checksum text,
    inserted        integer,
    updated         integer,
    closed          integer,
    unchanged       integer,
    rejected        integer,
    row_count       bigint,
    extent          double precision[4],
    timings         jsonb NOT NULL DEFAULT '{}'::jsonb,
    message         text
);
CREATE INDEX refresh_log_layer_idx ON ops.refresh_log (layer_id, refresh_id DESC);

-- What readers need without counting: the current row count, extent and a version that changes
-- whenever a refresh changes the layer (ETags, tile caches).
CREATE TABLE ops.layer_stats (
    layer_id        text PRIMARY KEY,
    row_count       bigint NOT NULL,
    extent          double precision[4],
    time_extent     timestamptz[2],
    last_refresh_id bigint NOT NULL REFERENCES ops.refresh_log (refresh_id),
    changed_refresh_id bigint NOT NULL REFERENCES ops.refresh_log (refresh_id),
    changed_at      timestamptz NOT NULL
);

-- QGIS's own table of default styles (the columns QGIS 3.22 reads and writes).
CREATE TABLE IF NOT EXISTS public.layer_styles (
    id                serial PRIMARY KEY,
    f_table_catalog   varchar,
    f_table_schema    varchar,
    f_table_name      varchar,
    f_geometry_column varchar,
    stylename         text,
    styleqml          xml,
    stylesld          xml,
    useasdefault      boolean,
    description       text,
    owner             varchar(63) DEFAULT CURRENT_USER,
    ui                xml,
    update_time       timestamp DEFAULT CURRENT_TIMESTAMP,
    type              varchar
);
