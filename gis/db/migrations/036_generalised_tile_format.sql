-- The layout a layer's generalised tile copy (gis.tiles_generalised) was built in (gis.tiles.COPY_FORMAT): a tile
-- reads a copy only in the layout the code reads, so a copy built by an older release (NULL) is never served; the
-- keeper builds it anew. Format 2: a line layer's bands below MERGE_ZOOM hold merged lines, rows carry valid_from.
ALTER TABLE tiles.generalised ADD COLUMN IF NOT EXISTS format integer;
