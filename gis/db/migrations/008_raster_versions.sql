-- Raster layers (layers/rasters/): one row per version of a layer's Cloud-Optimised GeoTIFF.
-- The file is complete (written and renamed) before its row is committed; a version is never rewritten,
-- it is closed (valid_to) when the next one is committed, so `datetime` finds the file valid then.
CREATE TABLE ops.raster_versions (
    version_id    bigserial PRIMARY KEY,
    layer_id      text NOT NULL,
    refresh_id    bigint NOT NULL REFERENCES ops.refresh_log (refresh_id),
    valid_from    timestamptz NOT NULL,
    valid_to      timestamptz,
    checksum      text NOT NULL,
    path          text NOT NULL,
    crs           text NOT NULL,
    bounds        double precision[4] NOT NULL,  -- in crs: minx, miny, maxx, maxy
    lonlat_bounds double precision[4] NOT NULL,  -- CRS84
    width         integer NOT NULL,
    height        integer NOT NULL,
    bands         integer NOT NULL,
    resolution    double precision[2] NOT NULL,  -- cell size x, y in units of crs
    nodata        double precision,
    overviews     integer[] NOT NULL,            -- decimation factors, e.g. {2,4}
    CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
CREATE UNIQUE INDEX raster_versions_current_idx ON ops.raster_versions (layer_id) WHERE valid_to IS NULL;
CREATE INDEX raster_versions_time_idx ON ops.raster_versions (layer_id, valid_from);
