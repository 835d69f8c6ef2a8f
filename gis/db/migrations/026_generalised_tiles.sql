-- Pre-built generalised copies of the line and polygon layers, one table per layer (gis.tiles_generalised):
-- per zoom band the rows a tile of that zoom draws, already simplified and in EPSG:3857. A derived copy of data
-- that roles may be denied, so the schema is the service's own: no USAGE for PUBLIC, and `gis db grant`
-- grants only the layer schemas (db_roles.LAYER_SCHEMAS), never this one.
CREATE SCHEMA IF NOT EXISTS tiles;
REVOKE ALL ON SCHEMA tiles FROM PUBLIC;
-- The layer version (ops.layer_stats.changed_refresh_id) each layer's copy was built from: a tile uses the copy
-- only while the two agree, so a copy left behind by an edit or a failed catch-up is never served.
CREATE TABLE tiles.generalised (
    layer_id text PRIMARY KEY,
    version bigint,
    built_at timestamptz NOT NULL DEFAULT now(),
    seconds double precision
);
