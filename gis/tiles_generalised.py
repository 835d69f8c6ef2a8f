"""Pre-built generalised copies of the line and polygon layers, so a cold "now" tile does no geometry work.

A tile below DETAIL_ZOOM computes, per request, what depends only on the layer's data and the zoom: which rows
are at least a pixel (their size), each one's geometry simplified to half a pixel and transformed to EPSG:3857.
Here that is done once per layer version, per zoom band (gis.tiles.GENERALISED_ZOOMS), into `tiles.<layer id>`:

    band, fid, the declared fields, size (the rank), extent (the stored geometry's box, for the tile's box test),
    geom (the band's geometry in EPSG:3857; DETAIL_ZOOM's band unsimplified, serving every deeper zoom)

Bands below DETAIL_ZOOM carry only the fields the layer's style draws with (gis.tiles.tile_fields: all such a tile
holds), the others are NULL there, and `tiles.generalised.fields` records which; a tile reads those bands only
while they carry the fields it needs. Each band's rows are stored in a spatial order (the geohash of their box's
centre), so the rows one tile reads lie on few pages.

Bands below MERGE_ZOOM of a line layer hold merged lines instead (gis.tiles.chains; merged anew at every catch-up).
Rows carry their version's valid_from: a tile as of an instant reads the rows unchanged since then from here and
the older versions from the layer's history (gis.tiles.as_of_rows).

The tile statement (gis.tiles.tile_sql) reads a band only while `tiles.generalised.version` equals the layer's
change version in the same snapshot, so a copy behind an edit, or one not caught up yet, is never served: those
tiles take the general path and are the same. Catching up is one transaction of its own, run in the background
by the workers (gis.tiles_keeper) or by `gis tiles`, never by the refresh itself: rows changed since the copy's
version (current rows with a newer refresh_id, and fids whose versions were closed since) are rebuilt; a copy with
no version is built whole.

The schema `tiles` is the service's alone (migration 026): a database role that may not read a layer cannot read
its copy either. Identifiers come from the registry (gis.identifiers).
"""

import time
from pathlib import Path

import psycopg
from psycopg import sql

from gis import identifiers as ids
from gis import tiles as mvt
from gis.layers import LayerRegistry, LayerSpec

# A tile reads a few thousand rows of one band: parallel workers cost more to start than they save, and take
# cores from the other tiles of the same view.
_STORAGE = sql.SQL("parallel_workers = 0")


def has_copy(spec: LayerSpec) -> bool:
    """The layer's "now" tiles read a copy: lines and polygons whose current table is "now"."""
    return mvt.generalised_band(spec, mvt.DETAIL_ZOOM) is not None


def _columns(spec: LayerSpec) -> list[sql.Composed]:
    return [sql.SQL("{} {}").format(ids.column(spec, f.name), ids.pg_type(f.type)) for f in spec.fields]


def _existing_fields(conn: psycopg.Connection, spec: LayerSpec) -> list[tuple[str, str]] | None:
    """(name, type) of the copy's field columns in order, or None when it has no table."""
    found = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'tiles' AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (spec.id,)).fetchall()
    if not found:
        return None
    return [(name, kind) for name, kind in found if name not in _OWN_COLUMNS]


_OWN_COLUMNS = ("band", "fid", "size", "extent", "geom", "valid_from")


def ensure_table(conn: psycopg.Connection, spec: LayerSpec) -> None:
    """The layer's copy as its fields are now declared (in the caller's transaction). A copy made for other fields
    is dropped and made anew, unbuilt: its tiles take the general path until the next catch-up."""
    if not has_copy(spec):
        return
    table = ids.generalised_table(spec)
    wanted = [(f.name, ids.PG_TYPES[f.type]) for f in spec.fields]
    existing = _existing_fields(conn, spec)
    if existing == wanted:
        conn.execute(sql.SQL("ALTER TABLE {} SET ({})").format(table, _STORAGE))  # a copy made before it was said
        # A copy of an older format gains the column empty; it is not served (tiles.generalised.format) until the
        # keeper has built it anew.
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS valid_from timestamptz").format(table))
        return
    if existing is not None:
        conn.execute(sql.SQL("DROP TABLE {}").format(table))
    conn.execute(sql.SQL(
        "CREATE TABLE {} (band smallint NOT NULL, fid text NOT NULL, {}, size double precision NOT NULL, "
        "extent geometry NOT NULL, geom geometry, valid_from timestamptz) WITH ({})").format(
            table, sql.SQL(", ").join(_columns(spec)), _STORAGE))
    _create_indexes(conn, spec)
    conn.execute("INSERT INTO tiles.generalised (layer_id, version) VALUES (%s, NULL) "
                 "ON CONFLICT (layer_id) DO UPDATE SET version = NULL, built_at = now(), seconds = NULL", (spec.id,))


def _indexes(spec: LayerSpec) -> list[tuple[str, sql.Composed]]:
    """(name, definition) of the copy's indexes: one per band, so a tile's box test meets only its own band's
    rows, and fid, for a catch-up's deletes."""
    table = ids.generalised_table(spec)
    found = [(f"{spec.id}_z{band}_idx",
              sql.SQL("ON {} USING gist (extent) WHERE band = {}").format(table, sql.Literal(band)))
             for band in mvt.GENERALISED_ZOOMS]
    return [*found, (f"{spec.id}_fid_idx", sql.SQL("ON {} (fid)").format(table))]


def _create_indexes(conn: psycopg.Connection, spec: LayerSpec) -> None:
    for name, definition in _indexes(spec):
        conn.execute(sql.SQL("CREATE INDEX {} {}").format(sql.Identifier(name), definition))


def _drop_indexes(conn: psycopg.Connection, spec: LayerSpec) -> None:
    for name, _definition in _indexes(spec):
        # IF EXISTS: a copy made when fewer zooms had bands lacks the newer bands' indexes
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier("tiles", name)))


def ensure_tables(conn: psycopg.Connection, registry: LayerRegistry) -> None:
    for spec in registry.values():
        ensure_table(conn, spec)


def carried_fields(spec: LayerSpec, drawn: frozenset[str]) -> tuple[str, ...]:
    """The fields the bands below DETAIL_ZOOM carry: what a tile of those zooms holds (gis.tiles.tile_fields)."""
    return mvt.tile_fields(spec, mvt.DETAIL_ZOOM - 1, drawn)


def _band_fields(spec: LayerSpec, band: int, carried: tuple[str, ...]) -> sql.Composed:
    """A band's field values from s: all of them in DETAIL_ZOOM's band, else the carried ones and NULL for the rest
    (a NULL costs a bit in the row's null bitmap, so these bands' rows are a fraction of the layer's)."""
    return sql.SQL(", ").join(
        sql.SQL("s.{}").format(ids.column(spec, f.name)) if band >= mvt.DETAIL_ZOOM or f.name in carried
        else sql.SQL("NULL::{}").format(ids.pg_type(f.type)) for f in spec.fields)


def _insert(spec: LayerSpec, where: sql.Composable, carried: tuple[str, ...]) -> sql.Composed:
    """Every band's rows of the current rows that pass `where` (a condition on c). Each row is transformed to
    EPSG:3857 once (the dearest step by far) and simplified from that for each band; the rows are taken in the
    geohash order of their box's centre and inserted band after band, so a band's rows lie together on disk and
    one tile's rows on few pages of them."""
    fields = ids.field_columns(spec)
    names = sql.SQL(", ").join(fields)
    size = mvt.size_expression(sql.SQL("c.geom"))
    selects = []
    for band in mvt.feature_bands(spec):
        keep = sql.SQL(" AND s.size >= {}").format(sql.Literal(mvt.band_min_size(band))) \
            if mvt.band_min_size(band) else sql.SQL("")
        selects.append(sql.SQL(
            "(SELECT {band}::smallint, s.fid, {s_fields}, s.size, s.extent, {geom}, s.valid_from FROM s "
            "WHERE true{keep})"
        ).format(band=sql.Literal(band), s_fields=_band_fields(spec, band, carried),
                 geom=mvt.band_geometry(band, sql.SQL("s.g")), keep=keep))
    # A CTE scan returns its rows in the order they were stored, and Append runs its branches one after another.
    return sql.SQL(
        "WITH s AS MATERIALIZED (SELECT c.fid, {c_fields}, {size} AS size, ST_Envelope(c.geom) AS extent, "
        "ST_Transform(c.geom, 3857) AS g, c.valid_from FROM {current} c WHERE {where} ORDER BY "
        "ST_GeoHash(ST_SetSRID(ST_MakePoint((ST_XMin(c.geom::box2d) + ST_XMax(c.geom::box2d)) / 2, "
        "(ST_YMin(c.geom::box2d) + ST_YMax(c.geom::box2d)) / 2), 4326), 12)) "
        "INSERT INTO {table} (band, fid, {names}, size, extent, geom, valid_from) {selects}"
    ).format(c_fields=sql.SQL(", ").join(sql.SQL("c.{}").format(f) for f in fields), size=size,
             current=ids.current_table(spec), where=where, table=ids.generalised_table(spec), names=names,
             selects=sql.SQL(" UNION ALL ").join(selects))


def _tiles_of_cell(band: int, index: str) -> sql.Composed:
    """The first and last tile (column or row, counted as the cell is) of the band's zoom whose buffered box meets
    the cell's inset box (gis.tiles.cell_box): its own, and a neighbour's when the cell lies within its buffer."""
    per_tile = 1 << (mvt.DETAIL_ZOOM - band)  # cells across a tile
    buffer = mvt.BUFFER / mvt.EXTENT * per_tile  # a tile's buffer, in cells (at most one below MERGE_ZOOM)
    inset = mvt.CELL_INSET / mvt.MERGE_CELL
    return sql.SQL("floor(({i} + {a}) / {k})::int, floor(({i} + {b}) / {k})::int").format(
        i=sql.SQL(index), a=sql.Literal(inset - buffer), b=sql.Literal(1 - inset + buffer), k=sql.Literal(per_tile))


def _insert_merged(spec: LayerSpec, carried: tuple[str, ...]) -> sql.Composed:
    """The merged bands (gis.tiles.merged_bands) of the whole layer: its current rows merged once (gis.tiles.chains,
    over the fields the bands carry), then per band the lines a tile of its zoom draws (a pixel long at least),
    simplified to its half pixel, each with its cell's box (in the stored CRS) for the tile's box test. A band keeps
    only the lines some tile of its zoom draws: those among the first max_features (by the tile's rank, size then
    fid) of a tile whose buffered box meets their cell; a tile's own first ones are all kept, so it finds the same
    lines among a fraction of the rows (the bench city's densest z10 tile: 70,401 lines, 8,000 drawn). A merged
    line joins rows of any age, so it has no valid_from: as-of tiles at these zooms merge on the general path."""
    fields = [ids.column(spec, name) for name in carried]
    found = sql.SQL("(SELECT c.fid{}, ST_Transform(c.geom, 3857) AS g FROM {} c)").format(
        sql.SQL("").join(sql.SQL(", c.{}").format(n) for n in fields), ids.current_table(spec))
    extent = sql.SQL("ST_Transform({}, {})").format(mvt.cell_box(sql.SQL("ch.cx"), sql.SQL("ch.cy")),
                                                     sql.Literal(int(spec.srid)))
    selects = [sql.SQL(
        "(SELECT DISTINCT ON (ch.fid) {band}::smallint, ch.fid, {fields}, ch.size, {extent}, {geom} FROM ("
        "SELECT ch.*, row_number() OVER (PARTITION BY tx, ty ORDER BY ch.size DESC, ch.fid) AS rank FROM ch "
        "CROSS JOIN LATERAL generate_series({x}) tx CROSS JOIN LATERAL generate_series({y}) ty "
        "WHERE ch.size >= {length}) ch WHERE ch.rank <= {cap})"
    ).format(band=sql.Literal(band), extent=extent, geom=mvt.band_geometry(band, sql.SQL("ch.g")),
             length=sql.Literal(mvt.merged_min_length(band)), x=_tiles_of_cell(band, "ch.cx"),
             y=_tiles_of_cell(band, "ch.cy"), cap=sql.Literal(mvt.zoom_detail(band, spec.geometry).max_features),
             fields=sql.SQL(", ").join(sql.SQL("ch.{}").format(ids.column(spec, f.name)) if f.name in carried
                                       else sql.SQL("NULL::{}").format(ids.pg_type(f.type)) for f in spec.fields))
               for band in mvt.merged_bands(spec)]
    return sql.SQL(
        "WITH ch AS MATERIALIZED ({chains} ORDER BY r.cy, r.cx) "
        "INSERT INTO {table} (band, fid, {names}, size, extent, geom) {selects}"
    ).format(chains=mvt.chains(spec, found, carried), table=ids.generalised_table(spec),
             names=sql.SQL(", ").join(ids.field_columns(spec)), selects=sql.SQL(" UNION ALL ").join(selects))


def delete_changed(spec: LayerSpec) -> sql.Composed:
    """Deletes the copy's rows of every fid written since version %(have)s (changed, added or removed)."""
    changed = sql.SQL(
        "SELECT fid FROM {current} WHERE refresh_id > %(have)s "
        "UNION SELECT fid FROM {history} WHERE closed_refresh_id > %(have)s"
    ).format(current=ids.current_table(spec), history=ids.history_table(spec))
    # = ANY of an array (computed once, as an init plan) is an index condition on fid; IN (subquery) was planned as
    # a hash semi-join over the whole copy, every band of every row.
    return sql.SQL("DELETE FROM {} WHERE fid = ANY(ARRAY({}))").format(ids.generalised_table(spec), changed)


def catch_up(url: str, spec: LayerSpec, drawn: frozenset[str], *, wait: bool = True) -> int | None:
    """Bring the layer's copy to the layer's current version, its bands below DETAIL_ZOOM carrying the fields
    `drawn` (what the layer's style draws with, gis.tiles.drawn_fields); returns the version it is at (None: no
    copy, the layer was never loaded, or, with wait=False, another process is catching it up). One transaction, in
    one snapshot (REPEATABLE READ): the rows copied are those of the version recorded with them. A copy carrying
    other fields is built anew."""
    if not has_copy(spec):
        return None
    started = time.monotonic()
    table = ids.generalised_table(spec)
    with psycopg.connect(url, application_name=f"gis-tiles:{spec.id}") as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        # One catch-up per layer at a time: a second one waits here, then finds the work done (`gis tiles`), or,
        # in the background (tiles_keeper), leaves it to the process already at it.
        lock = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
        got = conn.execute(sql.SQL("SELECT {}(hashtext('gis-tiles-generalised'), hashtext(%s))").format(
            sql.Identifier(lock)), (spec.id,)).fetchone()
        if got is not None and got[0] is False:
            return None
        built = conn.execute("SELECT version, fields, format FROM tiles.generalised WHERE layer_id = %s",
                             (spec.id,)).fetchone()
        layer = conn.execute("SELECT changed_refresh_id FROM ops.layer_stats WHERE layer_id = %s",
                             (spec.id,)).fetchone()
        if built is None or layer is None:  # not migrated for this layer yet, or never loaded
            return None
        carried = carried_fields(spec, drawn)
        have, version = built[0], int(layer[0])
        if built[1] != list(carried) or built[2] != mvt.COPY_FORMAT:  # for another style, or by an older release
            have = None
        if have == version:
            return version
        if have is None or have > version:  # never built, or the layer went back (a restore): all of it anew
            conn.execute(sql.SQL("TRUNCATE {}").format(table))
            _drop_indexes(conn, spec)  # one sorted build of each afterwards beats a million inserts into seven
            conn.execute(_insert(spec, sql.SQL("true"), carried))
            if mvt.merged_bands(spec):
                conn.execute(_insert_merged(spec, carried))
            _create_indexes(conn, spec)
        else:
            conn.execute(delete_changed(spec), {"have": have})
            conn.execute(_insert(spec, sql.SQL("c.refresh_id > %(have)s"), carried), {"have": have})
            if mvt.merged_bands(spec):
                # A changed row changes the lines it was merged into, and nearly every cell holds a changed row
                # after a delivery: the merged bands are merged anew (a tenth of the first build on the bench layer).
                conn.execute(sql.SQL("DELETE FROM {} WHERE band < {}").format(
                    table, sql.Literal(mvt.merged_bands(spec).stop)))
                conn.execute(_insert_merged(spec, carried))
        conn.execute(sql.SQL("ANALYZE {}").format(table))
        conn.execute("UPDATE tiles.generalised SET version = %s, fields = %s, format = %s, built_at = now(), "
                     "seconds = %s WHERE layer_id = %s",
                     (version, list(carried), mvt.COPY_FORMAT, time.monotonic() - started, spec.id))
    return version


STALE_SQL = """SELECT g.layer_id, g.version IS DISTINCT FROM s.changed_refresh_id
    OR g.format IS DISTINCT FROM %s, g.fields
FROM tiles.generalised g JOIN ops.layer_stats s USING (layer_id)"""


def stale_layers(url: str, registry: LayerRegistry, styles_dir: Path) -> list[str]:
    """The layers whose copy is behind the layer (never built, or changed since by a refresh or an edit) or carries
    other fields than the layer's style now draws with."""
    with psycopg.connect(url, application_name="gis-tiles") as conn:
        rows = conn.execute(STALE_SQL, (mvt.COPY_FORMAT,)).fetchall()
    return [layer_id for layer_id, behind, fields in rows
            if behind or (layer_id in registry
                          and fields != list(carried_fields(registry[layer_id],
                                                            mvt.drawn_fields(registry[layer_id], styles_dir))))]
