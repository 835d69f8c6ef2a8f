-- Feature edits (OGC API Features Part 4, and editor logins through PostGIS): the change log. Each edit is
-- also a version of its layer: it has its own ops.refresh_log row (its refresh_id is the version the edit
-- wrote, or closed for a delete), so ETags, tiles and caches move as they do after a refresh.
CREATE TABLE ops.edits (
    edit_id          bigserial PRIMARY KEY,
    refresh_id       bigint NOT NULL REFERENCES ops.refresh_log (refresh_id),
    layer_id         text NOT NULL,
    fid              text NOT NULL,
    operation        text NOT NULL CHECK (operation IN ('create', 'replace', 'update', 'delete')),
    at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    subject          text NOT NULL,
    role             text NOT NULL,
    method           text NOT NULL,
    reason           text,
    previous_refresh_id bigint
);
CREATE INDEX edits_layer_idx ON ops.edits (layer_id, fid, at DESC);
CREATE INDEX edits_version_idx ON ops.edits (refresh_id);

-- A refresh of a layer both delivered and edited reports each feature edited after its delivery was cut:
-- [{fid, edited_at, edit_refresh_id, resolution}], and how many.
ALTER TABLE ops.refresh_log ADD COLUMN conflicts integer;
ALTER TABLE ops.refresh_log ADD COLUMN conflict_details jsonb;
