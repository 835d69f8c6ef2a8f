"""Mapbox vector tiles in WebMercatorQuad, built entirely in PostgreSQL (no HTTP here).

A tile is one statement: the layer's change version from ops.layer_stats and, unless the caller
already holds that version, the tile itself (ST_AsMVT over ST_AsMVTGeom). Rows are found with a
bounding-box test in the stored CRS (EPSG:4490) so the GiST index answers it; only the rows found are
transformed to EPSG:3857. Properties are the layer's declared fields plus fid, in one MVT layer named
after the layer id.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from gis import identifiers as ids
from gis.errors import InvalidInput
from gis.features import crs as crs_
from gis.features.cql2 import Filter
from gis.features.cql2.to_sql import translate
from gis.features.queries import source, time_params
from gis.features.temporal import TimeRange
from gis.layers import FieldType, GeometryType, LayerSpec
from gis.map_style import fields_drawn
from gis.styles import style_files

TILE_MATRIX_SET = "WebMercatorQuad"
TILE_MATRIX_SET_URI = "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"
CRS_3857 = "http://www.opengis.net/def/crs/EPSG/0/3857"
MAX_ZOOM = 24  # the deepest tile matrix WebMercatorQuad defines
TILE_SIZE = 256  # pixels, as the tile matrix set declares them
EXTENT = 4096  # MVT grid units across a tile
BUFFER = 64  # grid units drawn beyond the tile edge, so lines and fills join across tiles
ORIGIN = 20037508.3427892  # half the width of the EPSG:3857 world, metres
STANDARD_PIXEL = 0.00028  # metres; OGC's scale denominator is cell size / standard pixel


class TileOutOfRange(InvalidInput):
    """A tile address outside WebMercatorQuad; `parameter` names the offending part."""


@dataclass(frozen=True)
class Tile:
    z: int
    x: int  # column
    y: int  # row, counted from the top

    def __post_init__(self) -> None:
        for name, value in (("tileMatrix", self.z), ("tileCol", self.x), ("tileRow", self.y)):
            if type(value) is not int:
                raise TileOutOfRange(name, f"must be an integer, got {value!r}")
        if not 0 <= self.z <= MAX_ZOOM:
            raise TileOutOfRange("tileMatrix", f"{self.z} is outside WebMercatorQuad's 0..{MAX_ZOOM}")
        last = (1 << self.z) - 1
        if not 0 <= self.y <= last:
            raise TileOutOfRange("tileRow", f"{self.y} is outside 0..{last} at tile matrix {self.z}")
        if not 0 <= self.x <= last:
            raise TileOutOfRange("tileCol", f"{self.x} is outside 0..{last} at tile matrix {self.z}")


def cell_size(z: int) -> float:
    """Metres per pixel of tile matrix z (EPSG:3857 units)."""
    return 2 * ORIGIN / TILE_SIZE / (1 << z)


def tile_matrices() -> list[dict[str, object]]:
    """The tile matrices of WebMercatorQuad, as OGC Two Dimensional Tile Matrix Set 2.0 writes them."""
    return [
        {
            "id": str(z),
            "scaleDenominator": cell_size(z) / STANDARD_PIXEL,
            "cellSize": cell_size(z),
            "cornerOfOrigin": "topLeft",
            "pointOfOrigin": [-ORIGIN, ORIGIN],
            "tileWidth": TILE_SIZE,
            "tileHeight": TILE_SIZE,
            "matrixWidth": 1 << z,
            "matrixHeight": 1 << z,
        }
        for z in range(MAX_ZOOM + 1)
    ]


DETAIL_ZOOM = 14  # from here on lines and polygons are drawn unsimplified (the copy's last band serves deeper zooms)
# From here on a tile carries every declared field (a click shows them); below, fid and what the style draws with.
# Encoding every field is most of a full street-level tile's cost (MVT keeps a value table per field), and at z14 a
# click can follow the feature's link as below.
FIELDS_ZOOM = 15


@dataclass(frozen=True)
class ZoomDetail:
    """How much of a layer one tile carries at a zoom level."""

    max_features: int  # rows per tile; past it the least important rows are left out (see tile_sql)
    simplify: float  # Douglas-Peucker tolerance in EPSG:3857 metres, after transforming; 0 for none
    min_size: float  # lines and polygons whose bbox width + height (degrees) is below this are left out
    all_fields: bool  # every declared field (from FIELDS_ZOOM on), or only those the style draws with


def zoom_detail(z: int, geometry: GeometryType) -> ZoomDetail:
    """Tiles stay small at every zoom: what is smaller than the screen shows is left out.

    One pixel of a 256-pixel tile is (360 / 2^z) / 256 degrees of longitude (16 MVT grid units). Below
    DETAIL_ZOOM, lines and polygons are generalised to half a pixel and those smaller than a pixel (their
    stored bbox, in degrees) are left out; from DETAIL_ZOOM on, only those below one grid unit (nothing visible
    either way). Simplification runs on the map's own grid, EPSG:3857, where a pixel is cell_size(z) metres
    both ways; so a pre-built copy transforms each row once and simplifies that for every zoom
    (gis.tiles_generalised), and is the very geometry this statement computes.
    """
    unit = 360.0 / (1 << z) / EXTENT
    pixel = unit * EXTENT / TILE_SIZE
    detail = z >= DETAIL_ZOOM
    all_fields = z >= FIELDS_ZOOM
    if detail:
        max_features = 50_000
    elif z >= 12:
        max_features = 12_000
    elif z >= 10:
        max_features = 8_000
    else:
        max_features = 4_000
    if geometry in (GeometryType.Point, GeometryType.MultiPoint):
        return ZoomDetail(max_features, 0.0, 0.0, all_fields)
    if detail:
        return ZoomDetail(max_features, 0.0, unit, all_fields)
    return ZoomDetail(max_features, cell_size(z) / 2, pixel, False)


# Zooms with a pre-built generalised band (gis.tiles_generalised); DETAIL_ZOOM's band, unsimplified, serves every
# deeper zoom too. From z0: a low zoom's tile holds few rows, but merging a line layer's (MERGE_ZOOM) reads the
# whole city on the general path (the bench city's z8 tile: 15 s).
GENERALISED_ZOOMS = range(0, DETAIL_ZOOM + 1)


# Below MERGE_ZOOM a line layer's tile draws merged lines, not its features: a pipe network's segments are each well
# under a pixel there (on the bench city all of them at z10 and z11), so leaving out what is smaller than a pixel
# left those tiles empty. Connected segments that share the drawn fields are merged (ST_LineMerge) within each cell
# of MERGE_CELL metres (a z14 tile's side: long enough for a main, short enough that a tile's general path reads
# little beyond the tile), and the merged lines at least a pixel long are drawn, the longest first (merged_rows).
MERGE_ZOOM = 12
MERGE_CELL = 2 * ORIGIN / (1 << DETAIL_ZOOM)
# A cell's box for the tile's box test, inset by a metre: a tile's buffered edge can fall on a cell's edge (at z8
# the 4-pixel buffer is one cell), and touching boxes would be decided by rounding, differently in the copy (4490)
# and on the general path (3857).
CELL_INSET = 1.0
# A merged line's properties besides the drawn fields: no fid (it is many features, a click cannot link to one),
# a synthetic id, stable for one version of the layer, and the flag saying it is merged.
MERGED_ID = "gis:id"
MERGED = "gis:merged"


def merges(spec: LayerSpec, z: int) -> bool:
    """A tile of the layer at zoom z draws merged lines (lines below MERGE_ZOOM)."""
    return geometry_dimension(spec.geometry) == 1 and z < MERGE_ZOOM


def _cell_index(low: str, high: str, g: str) -> sql.Composed:
    return sql.SQL("floor((({lo}({g}) + {hi}({g})) / 2 + {o}) / {c})::int").format(
        lo=sql.SQL(low), hi=sql.SQL(high), g=sql.SQL(g), o=sql.Literal(ORIGIN), c=sql.Literal(MERGE_CELL))


def cell_box(cx: sql.Composable, cy: sql.Composable) -> sql.Composed:
    """The box (EPSG:3857) of merge cell (cx, cy), inset by CELL_INSET: what a tile's box test meets."""
    def edge(index: sql.Composable, plus: int, inset: float) -> sql.Composed:
        return sql.SQL("(({} + {})::float8 * {} - {} + {})").format(index, sql.Literal(plus), sql.Literal(MERGE_CELL),
                                                             sql.Literal(ORIGIN), sql.Literal(inset))
    return sql.SQL("ST_MakeEnvelope({}, {}, {}, {}, 3857)").format(
        edge(cx, 0, CELL_INSET), edge(cy, 0, CELL_INSET), edge(cx, 1, -CELL_INSET), edge(cy, 1, -CELL_INSET))


def chains(spec: LayerSpec, found: sql.Composable, fields: tuple[str, ...]) -> sql.Composed:
    """The merged lines of `found` (a subquery, unaliased, with fid, `fields` and g, the geometry in EPSG:3857), a
    SELECT of (fid, fields, cx, cy, g, size): per merge cell (cx, cy: the cell holding the centre of a segment's
    box) and per value of the fields, ST_LineMerge of the segments, one row per merged line; fid a synthetic id,
    'merged/cx/cy/n' (n counts the cell's lines in the order of their fields' values, then ST_LineMerge's), size
    the line's length in metres. The segments are collected in fid order, so the same rows give the same lines,
    ids and order, in the copy (gis.tiles_generalised) and on a tile's general path alike. OFFSET 0: the tile's
    cell test is applied to the cells, never pushed down to each row (where it would transform it again)."""
    names = [ids.column(spec, name) for name in fields]
    keys = sql.SQL("").join(sql.SQL(", {}").format(n) for n in names)
    return sql.SQL(
        "SELECT concat('merged/', r.cx, '/', r.cy, '/', row_number() OVER (PARTITION BY r.cx, r.cy ORDER BY "
        "{order}coalesce(d.path[1], 1))) AS fid{r_keys}, r.cx, r.cy, d.geom AS g, ST_Length(d.geom) AS size "
        "FROM (SELECT cx, cy{keys}, ST_LineMerge(ST_CollectionExtract(ST_Collect(g ORDER BY fid), 2)) AS m "
        "FROM (SELECT f.fid{f_keys}, f.g, {cx} AS cx, {cy} AS cy FROM ({found} OFFSET 0) f) c "
        "GROUP BY cx, cy{keys}) r "
        "CROSS JOIN LATERAL ST_Dump(r.m) d"
    ).format(order=sql.SQL("").join(sql.SQL("r.{}, ").format(n) for n in names),
             r_keys=sql.SQL("").join(sql.SQL(", r.{}").format(n) for n in names), keys=keys,
             f_keys=sql.SQL("").join(sql.SQL(", f.{}").format(n) for n in names),
             cx=_cell_index("ST_XMin", "ST_XMax", "f.g"), cy=_cell_index("ST_YMin", "ST_YMax", "f.g"), found=found)


def merged_min_length(z: int) -> float:
    """A merged line is drawn at zoom z when at least this long (metres in EPSG:3857: one pixel)."""
    return cell_size(z)


def generalised_band(spec: LayerSpec, z: int) -> int | None:
    """The pre-built band a "now" tile of the layer at zoom z reads, or None when the layer or zoom has none.

    Only lines and polygons are generalised (points are drawn as they are), and only layers whose "now" is the
    current table (features with their own validity are read as of today, through the general path)."""
    if geometry_dimension(spec.geometry) == 0 or spec.has_valid_time or z < GENERALISED_ZOOMS.start:
        return None
    return min(z, DETAIL_ZOOM)


# The copy's layout: a copy of another format (built by an older release) is never served, and is built anew.
# 2: a line layer's bands below MERGE_ZOOM hold merged lines; rows carry valid_from.
COPY_FORMAT = 2


def merged_bands(spec: LayerSpec) -> range:
    """The copy's bands holding merged lines (MERGE_ZOOM): a line layer's below MERGE_ZOOM, none for polygons."""
    return range(GENERALISED_ZOOMS.start, MERGE_ZOOM if geometry_dimension(spec.geometry) == 1
                 else GENERALISED_ZOOMS.start)


def feature_bands(spec: LayerSpec) -> range:
    """The copy's bands holding the layer's own rows, generalised."""
    return range(merged_bands(spec).stop, GENERALISED_ZOOMS.stop)


def band_geometry(band: int, geom: sql.Composable) -> sql.Composable:
    """A band's stored geometry from `geom` in EPSG:3857: simplified as a tile of its zoom simplifies it."""
    detail = zoom_detail(band, GeometryType.LineString)
    if detail.simplify:
        return sql.SQL("ST_Simplify({}, {})").format(geom, sql.Literal(float(detail.simplify)))
    return geom


def band_min_size(band: int) -> float:
    """The size a row needs to be stored in a band: a tile of the band's zoom leaves out anything smaller. The
    DETAIL_ZOOM band keeps every row, for deeper zooms drop less (their tiles apply their own min_size)."""
    return 0.0 if band >= DETAIL_ZOOM else zoom_detail(band, GeometryType.LineString).min_size


def _property(spec: LayerSpec, name: str, field_type: FieldType) -> sql.Composable:
    """A field as MVT carries it: numbers, text and booleans as they are, times as ISO 8601 text."""
    column = sql.SQL("t.{}").format(ids.column(spec, name))
    if field_type is FieldType.date:
        value: sql.Composable = sql.SQL("to_char({}, 'YYYY-MM-DD')").format(column)
    elif field_type is FieldType.timestamp:
        value = sql.SQL("to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')").format(column)
    else:
        value = column
    return sql.SQL("{} AS {}").format(value, sql.Identifier(name))


def size_expression(geom: sql.Composable) -> sql.Composable:
    """A line's or polygon's bbox width + height in degrees: whether it shows, and its rank in a full tile.

    From the box stored with the geometry (::box2d), so no geometry is read to size it; the layer's
    `size_idx` indexes this very expression (gis.db.migrate), so a low-zoom tile finds its few large
    features without visiting the many small ones.
    """
    box = sql.SQL("{}::box2d").format(geom)
    return sql.SQL("((ST_XMax({b}) - ST_XMin({b})) + (ST_YMax({b}) - ST_YMin({b})))").format(b=box)


_drawn: dict[tuple[str, str, Path], frozenset[str]] = {}


def drawn_fields(spec: LayerSpec, styles_dir: Path) -> frozenset[str]:
    """The fields the layer's style draws with, read once per process from its QML."""
    key = (spec.id, spec.style, styles_dir)
    found = _drawn.get(key)
    if found is None:
        found = _drawn[key] = fields_drawn(spec, style_files(spec, styles_dir).qml, str(styles_dir / spec.style))
    return found


def tile_fields(spec: LayerSpec, z: int, drawn: frozenset[str] | None) -> tuple[str, ...]:
    """The fields a tile at zoom z carries: all of them, or below FIELDS_ZOOM those the style draws with
    (`drawn`; None: all, for a caller that does not know the style)."""
    if drawn is None or zoom_detail(z, spec.geometry).all_fields:
        return spec.field_names
    return tuple(name for name in spec.field_names if name in drawn)


_TILE_BOX = ("ST_Transform(ST_ClipByBox2D(ST_TileEnvelope(%(z)s, %(x)s, %(y)s, margin => %(margin)s), "
             "ST_TileEnvelope(0, 0, 0)::box2d), {})")


def _mvt(spec: LayerSpec, rows: sql.Composable, geom: sql.Composable, fields: tuple[str, ...], rank: sql.Composable,
         limit: int, merged: bool = False, carry: sql.Composable | None = None) -> sql.Composed:
    """The tile of `rows` (a FROM item aliased t): its first `limit` rows by `rank`, `geom` (EPSG:3857, from t)
    fitted to the tile's grid, with fid and `fields` as properties (merged lines: their id as MERGED_ID and
    MERGED true instead of fid); `carry`: more columns of t that `geom` reads (", t.x")."""
    fid = sql.SQL("t.fid AS {}, true AS {}").format(sql.Identifier(MERGED_ID), sql.Identifier(MERGED)) if merged \
        else sql.SQL("t.fid")
    columns: list[sql.Composable] = [fid, *(_property(spec, name, spec.known_field(name).type) for name in fields)]
    # The rows are found in a materialised CTE so that the planner never hands the per-row functions to
    # parallel workers: each fresh worker pays PROJ's set-up (50-100 ms), ten times the tile's own cost.
    return sql.SQL(
        "WITH t AS MATERIALIZED (SELECT t.fid, {columns}, t.geom{carry} FROM {rows} ORDER BY {rank} LIMIT {limit}) "
        "SELECT ST_AsMVT(m.*, {name}, {extent}, 'geom') FROM ("
        "SELECT ST_AsMVTGeom({geom}, ST_TileEnvelope(%(z)s, %(x)s, %(y)s), "
        "{extent}, {buffer}, true) AS geom, {properties} FROM t) m"
    ).format(
        name=sql.Literal(spec.id),
        extent=sql.Literal(EXTENT),
        buffer=sql.Literal(BUFFER),
        geom=geom,
        columns=sql.SQL(", ").join([sql.SQL("t.{}").format(ids.column(spec, n)) for n in fields]) if fields
        else sql.SQL("NULL AS _none"),
        properties=sql.SQL(", ").join(columns),
        rows=rows,
        rank=rank,
        carry=carry if carry is not None else sql.SQL(""),
        limit=sql.Literal(int(limit)),
    )


def _rank(detail: ZoomDetail, size: sql.Composable) -> sql.Composable:
    # A full tile keeps its most important rows, the same ones every time: the largest lines and polygons
    # (long mains before service pipes), then by fid; points by fid.
    return sql.SQL("t.fid") if not detail.min_size else sql.SQL("{} DESC, t.fid").format(size)


def _found_before_ranked(rows: sql.Composable) -> sql.Composed:
    """`rows` (a FROM item t) found by their own predicates' best index before they are ranked and capped.

    OFFSET 0 keeps the planner from walking the size index in rank order and testing each row against the
    tile: it expects the tile's share of the layer to be spread evenly over the sizes, and reads far more
    (an as-of z12 tile over the bench city: 235,000 index entries for 12,000 rows, 667 ms; found by the
    geometry index, then ranked: tests/test_tile_plans.py). Where the size limit is the more
    selective predicate (low zooms), the size index still finds the rows."""
    return sql.SQL("(SELECT * FROM {} OFFSET 0) t").format(rows)


def generalised_rows(spec: LayerSpec, z: int, band: int, more: tuple[sql.Composable, ...] = ()) -> sql.Composed:
    """The rows of a tile at zoom z from the layer's pre-built band (gis.tiles_generalised), as a FROM item t: the
    same rows the general path finds in the current table (same box test on the stored extent, same size limit);
    `more`: conditions of the caller's on them."""
    detail = zoom_detail(z, spec.geometry)
    predicates = [sql.SQL("t.band = {}").format(sql.Literal(band)),
                  sql.SQL("t.extent && " + _TILE_BOX).format(sql.Literal(int(spec.srid))), *more]
    if detail.min_size > band_min_size(band):  # deeper than the band: the zoom's own, smaller limit
        predicates.append(sql.SQL("t.size >= {}").format(sql.Literal(float(detail.min_size))))
    return sql.SQL("(SELECT * FROM {} t WHERE {}) t").format(ids.generalised_table(spec),
                                                            sql.SQL(" AND ").join(predicates))


def reads_copy_as_of(spec: LayerSpec, z: int, time: TimeRange | None) -> bool:
    """An as-of tile that reads the copy too (as_of_rows): an instant, at a zoom whose band holds the layer's own
    rows (not merged lines, which join rows of any age), of a layer whose current rows stay valid until a refresh
    replaces them (no validity of their own: a current row's version began at its valid_from and is not over)."""
    return (time is not None and time.is_instant and spec.temporal.kind != "event" and spec.source.valid_to is None
            and not merges(spec, z) and generalised_band(spec, z) is not None)


def as_of_rows(spec: LayerSpec, z: int, band: int, fields: tuple[str, ...]) -> sql.Composed:
    """The rows of an as-of tile (an instant, %(t_start)s = %(t_end)s) from the copy, as a FROM item t with raw:
    the versions valid then are the current rows whose version had begun (the copy's rows with valid_from <= t:
    unchanged since, so their band geometry is theirs then) and the history rows whose [valid_from, valid_to)
    holds t, found in the history table by the same box test and size limit as the general path's and generalised
    only once ranked (raw: the stored geometry, the tile computes the band's from it). The versions of one fid never
    overlap, so the two are the general path's rows (gis.features.queries._versions) without a DISTINCT."""
    detail = zoom_detail(z, spec.geometry)
    names = sql.SQL("").join(sql.SQL(", t.{}").format(ids.column(spec, n)) for n in fields)
    copy = generalised_rows(spec, z, band, (sql.SQL("t.valid_from <= %(t_end)s::timestamptz"),))
    history = [sql.SQL("t.geom && " + _TILE_BOX).format(sql.Literal(int(spec.srid))),
               sql.SQL("t.valid_from <= %(t_end)s::timestamptz"), sql.SQL("t.valid_to > %(t_start)s::timestamptz")]
    if detail.min_size:
        history.append(sql.SQL("{} >= {}").format(size_expression(sql.SQL("t.geom")),
                                                   sql.Literal(float(detail.min_size))))
    # OFFSET 0 as in _found_before_ranked: each branch's rows found by its own index, then ranked together.
    return sql.SQL(
        "(SELECT * FROM (SELECT t.fid{names}, t.size, t.geom, false AS raw FROM {copy} "
        "UNION ALL SELECT t.fid{names}, {size}, t.geom, true FROM {history} t WHERE {where}) u OFFSET 0) t"
    ).format(names=names, copy=copy, size=size_expression(sql.SQL("t.geom")), history=ids.history_table(spec),
             where=sql.SQL(" AND ").join(history))


def _cover(srid: int) -> sql.Composed:
    """The tile's buffered box grown to whole merge cells (and a metre more, against rounding), in the stored CRS:
    every segment whose cell the tile draws meets it."""
    box = sql.SQL("ST_ClipByBox2D(ST_TileEnvelope(%(z)s, %(x)s, %(y)s, margin => %(margin)s), "
                  "ST_TileEnvelope(0, 0, 0)::box2d)")

    def edge(side: str, up: bool) -> sql.Composed:
        rounded = sql.SQL("ceil" if up else "floor")
        return sql.SQL("({r}(({s}({b}) + {o}) / {c}) * {c} - {o} {sign} 1)").format(
            r=rounded, s=sql.SQL(side), b=box, o=sql.Literal(ORIGIN), c=sql.Literal(MERGE_CELL),
            sign=sql.SQL("+" if up else "-"))

    return sql.SQL("ST_Transform(ST_MakeEnvelope({}, {}, {}, {}, 3857), {})").format(
        edge("ST_XMin", False), edge("ST_YMin", False), edge("ST_XMax", True), edge("ST_YMax", True),
        sql.Literal(srid))


def merged_rows(spec: LayerSpec, z: int, time: TimeRange | None, rows: sql.Composable | None,
                fields: tuple[str, ...]) -> sql.Composed:
    """A merged tile's rows (a FROM item t: fid, fields, size, geom in EPSG:3857) computed from the layer's rows
    (the general path): every row of the merge cells the tile's buffered box meets, merged (chains), the lines at
    least a pixel long, simplified as the zoom's band is."""
    predicates: list[sql.Composable] = [sql.SQL("geom && {}").format(_cover(int(spec.srid)))]
    if rows is not None:
        predicates.append(rows)
    found = sql.SQL("(SELECT t.fid{}, ST_Transform(t.geom, 3857) AS g FROM {})").format(
        sql.SQL("").join(sql.SQL(", t.{}").format(ids.column(spec, n)) for n in fields),
        source(spec, time, predicates))
    return sql.SQL(
        "(SELECT ch.fid{fields}, ch.size, {geom} AS geom FROM ({chains}) ch WHERE ch.size >= {length} "
        "AND {cell} && ST_ClipByBox2D(ST_TileEnvelope(%(z)s, %(x)s, %(y)s, margin => %(margin)s), "
        "ST_TileEnvelope(0, 0, 0)::box2d)) t"
    ).format(fields=sql.SQL("").join(sql.SQL(", ch.{}").format(ids.column(spec, n)) for n in fields),
             geom=band_geometry(z, sql.SQL("ch.g")), chains=chains(spec, found, fields),
             length=sql.Literal(merged_min_length(z)), cell=cell_box(sql.SQL("ch.cx"), sql.SQL("ch.cy")))


def tile_sql(spec: LayerSpec, z: int, time: TimeRange | None = None,
             rows: sql.Composable | None = None, drawn: frozenset[str] | None = None) -> sql.Composed:
    """The statement for one tile of the layer at zoom z; parameters from tile_params.

    Returns one row: (version, tile). version is the layer's changed_refresh_id (NULL if never loaded);
    tile is NULL when version is one of %(known)s (the versions the client or a cache already hold), so
    a tile someone already has costs one primary-key lookup and no tile work.

    The rows are the ones the Features API reads for the same `datetime` (gis.features.queries.source):
    the current table, or each feature's version valid at the time asked (or now, for layers whose
    features carry their own validity), or the events in the interval; `rows` (a caller's row rule, as
    SQL) narrows them further.

    A "now" tile (no `datetime`, no row rule) of a line or polygon layer reads the layer's pre-built band for its
    zoom instead (generalised_band), when that copy was built from the very version the statement reads and the
    band carries the tile's fields; a tile as of an instant reads the band's rows unchanged since and the history
    rows valid then (as_of_rows); else, and for every other tile, the general path computes the same from the
    layer's tables. Below MERGE_ZOOM a line layer's tile holds merged lines (merged_rows, chains).
    """
    detail = zoom_detail(z, spec.geometry)
    geom = band_geometry(z, sql.SQL("ST_Transform(t.geom, 3857)")) if detail.simplify \
        else sql.SQL("ST_Transform(t.geom, 3857)")
    predicates: list[sql.Composable] = [
        # The margin is clipped to the world first: past the antimeridian it would come back at -180° and
        # the box's extent would cover the wrong half of the world (a z1 tile touching 180° drew nothing).
        sql.SQL("geom && " + _TILE_BOX).format(sql.Literal(int(spec.srid)))
    ]
    if detail.min_size:
        predicates.append(sql.SQL("{} >= {}").format(size_expression(sql.SQL("geom")),
                                                     sql.Literal(float(detail.min_size))))
    if rows is not None:
        predicates.append(rows)
    fields = tile_fields(spec, z, drawn)
    merged = merges(spec, z)
    if merged:
        general = _mvt(spec, merged_rows(spec, z, time, rows, fields), sql.SQL("t.geom"), fields,
                       _rank(detail, sql.SQL("t.size")), detail.max_features, merged=True)
    else:
        general = _mvt(spec, _found_before_ranked(source(spec, time, predicates)), geom, fields,
                       _rank(detail, size_expression(sql.SQL("t.geom"))), detail.max_features)
    band = generalised_band(spec, z) if rows is None and (time is None or reads_copy_as_of(spec, z, time)) else None
    if band is None:
        tile = sql.SQL("({})").format(general)
    elif time is not None:  # an instant: the copy's rows unchanged since, and history's versions generalised here
        either = sql.SQL("CASE WHEN t.raw THEN {} ELSE t.geom END").format(geom)
        built = _mvt(spec, as_of_rows(spec, z, band, fields), either, fields, _rank(detail, sql.SQL("t.size")),
                     detail.max_features, carry=sql.SQL(", t.raw"))
    else:
        built = _mvt(spec, generalised_rows(spec, z, band), sql.SQL("t.geom"), fields,
                     _rank(detail, sql.SQL("t.size")), detail.max_features, merged=merged)
    if band is not None:
        # CASE runs only the branch it takes: a copy at another version costs one primary-key lookup more. Below
        # DETAIL_ZOOM a band carries only the fields recorded with the copy (NULL: all of them).
        carries = sql.SQL("") if band >= DETAIL_ZOOM else sql.SQL(
            " AND (g.fields IS NULL OR g.fields @> ARRAY[{}]::text[])").format(
                sql.SQL(", ").join(sql.Literal(name) for name in fields))
        tile = sql.SQL(
            "CASE WHEN v.version = (SELECT g.version FROM tiles.generalised g WHERE g.layer_id = %(layer)s "
            "AND g.format = {}{}) THEN ({}) ELSE ({}) END").format(sql.Literal(COPY_FORMAT), carries, built, general)
    return sql.SQL(
        "SELECT v.version, CASE WHEN v.version = ANY(%(known)s::bigint[]) THEN NULL ELSE {tile} END "
        "FROM (SELECT (SELECT changed_refresh_id FROM ops.layer_stats WHERE layer_id = %(layer)s) AS version) v"
    ).format(tile=tile)


def tile_params(spec: LayerSpec, tile: Tile, known_versions: tuple[int, ...] = (),
                time: TimeRange | None = None) -> dict[str, object]:
    return {
        "layer": spec.id,
        "z": tile.z,
        "x": tile.x,
        "y": tile.y,
        "margin": BUFFER / EXTENT,
        "known": [int(v) for v in known_versions],
        **time_params(spec, time),
    }


@dataclass(frozen=True)
class TileResult:
    version: int | None  # the layer's changed_refresh_id; None if the layer was never loaded
    data: bytes | None  # the MVT (b"" for no features); None when version is one of the known versions


def tile_statement(spec: LayerSpec, tile: Tile, known_versions: tuple[int, ...] = (),
                   time: TimeRange | None = None, rows: Filter | None = None,
                   drawn: frozenset[str] | None = None) -> tuple[sql.Composed, dict[str, object]]:
    """One tile's statement and parameters; `rows` is a row rule (a CQL2 node, geometries in CRS84) the tile's
    features must pass; `drawn` the fields the layer's style reads (below FIELDS_ZOOM a tile carries only those
    and fid). It returns exactly one row, (version, tile): read it with tile_result."""
    params = tile_params(spec, tile, known_versions, time)
    row_sql = translate(rows, spec, crs_.CRS84, params, "rows") if rows is not None else None
    return tile_sql(spec, tile.z, time, row_sql, drawn), params


def tile_result(row: tuple[Any, ...], known_versions: tuple[int, ...] = ()) -> TileResult:
    """The tile statement's row (read in binary: the tile arrives as its bytes, not as hex text to decode)."""
    version, data = row
    if version is not None and version in known_versions:
        return TileResult(int(version), None)
    return TileResult(None if version is None else int(version), bytes(data) if data is not None else b"")


async def fetch_tile(conn: psycopg.AsyncConnection, spec: LayerSpec, tile: Tile,
                     known_versions: tuple[int, ...] = (), time: TimeRange | None = None,
                     rows: Filter | None = None, drawn: frozenset[str] | None = None) -> TileResult:
    """One tile, on this connection (tile_statement says what the arguments mean)."""
    query, params = tile_statement(spec, tile, known_versions, time, rows, drawn)
    cursor = await conn.execute(query, params, binary=True)
    row = await cursor.fetchone()
    assert row is not None  # the statement always returns exactly one row
    return tile_result(row, known_versions)


async def layer_version(conn: psycopg.AsyncConnection, spec: LayerSpec) -> tuple[int | None, list[float] | None]:
    """(changed_refresh_id, extent [xmin, ymin, xmax, ymax] in EPSG:4490) from the refresh's stats."""
    cursor = await conn.execute(
        "SELECT changed_refresh_id, extent FROM ops.layer_stats WHERE layer_id = %s", (spec.id,))
    row = await cursor.fetchone()
    if row is None:
        return None, None
    extent = [float(v) for v in row[1]] if row[1] is not None and None not in row[1] else None
    return int(row[0]), extent


def geometry_dimension(geometry: GeometryType) -> int:
    return {"Point": 0, "LineString": 1, "Polygon": 2}[geometry.value.removeprefix("Multi")]


def center_zoom(extent: list[float]) -> int:
    """A zoom at which the whole extent fits in about one 512-pixel view."""
    span = max(extent[2] - extent[0], (extent[3] - extent[1]) * 1.34, 1e-9)
    return max(0, min(MAX_ZOOM, math.floor(math.log2(360.0 * 2 / span))))
