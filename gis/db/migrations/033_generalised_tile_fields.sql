-- The fields a layer's generalised copy (gis.tiles_generalised) carries in its bands below DETAIL_ZOOM: those the
-- layer's style draws with, when the copy was built (the rest are NULL there, as such a tile leaves them out). A
-- tile reads those bands only while they carry every field it needs, so a copy built for another style is never
-- served; NULL (a copy built before this column) carries every field.
ALTER TABLE tiles.generalised ADD COLUMN IF NOT EXISTS fields text[];
