"""One SQL statement per request, producing GeoJSON text that the service passes through as bytes.

The page statement returns the features already joined (`f1,f2,...`), how many there are, whether
another page follows, the last fid (the keyset cursor) and, for an unfiltered request, numberMatched
from the counts the refresh job recorded (ops.layer_stats): no COUNT(*), no per-feature Python.

Which rows a request reads (the temporal model):
- versioned layer, no `datetime`, no validity of its own: the current table, no time predicate;
- `datetime`, or a layer whose features carry validity (plans that take effect later) asked about
  "now": each fid's latest version valid at the instant / intersecting the interval and matching
  the other filters, from the current and history tables together;
- event layer: the current table, filtered on its event-time field.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import sql

from gis import identifiers as ids
from gis.features import crs as crs_
from gis.features.cql2 import Filter
from gis.features.cql2.cache import as_sql, translated
from gis.features.cql2.to_sql import translate
from gis.features.params import ItemsQuery
from gis.features.queryables import queryables, response_properties
from gis.features.temporal import CITY_TIME, TimeRange
from gis.layers import FieldType, LayerSpec

_MICROSECOND = timedelta(microseconds=1)
COUNT_BOUND = 1000  # numberMatched of a filtered request is given when at most this many match


@dataclass(frozen=True)
class Statement:
    query: sql.Composed | sql.SQL | bytes  # bytes: rendered once for its shape and reused
    params: dict[str, object]


@dataclass(frozen=True)
class _Now:
    """The instant the statement runs (SQL now()), for layers whose features carry their own validity."""


NOW = _Now()


# -- the GeoJSON text of one row ----------------------------------------------------------------------

def _needs_no_escape(value: str) -> bool:
    """JSON writes `value` between quotes as it is: it holds no quote, backslash or control character."""
    return not any(c in '"\\' or c < " " for c in value)


def _property_text(spec: LayerSpec, name: str, alias: sql.Identifier) -> sql.Composable:
    """One property's JSON value, as text. Each row pays for these once per property, and to_json is the dearest
    part (it looks up the value's type and output function on every call), so the common values skip it where
    the text is the same: a finite real's own text, a coded value that needs no escaping between quotes."""
    col = sql.SQL("{}.{}").format(alias, sql.Identifier(name))
    field = spec.field(name)
    kind = field.type if field is not None else FieldType.timestamp  # valid_from / valid_to
    if kind in (FieldType.integer, FieldType.bigint, FieldType.boolean):
        return sql.SQL("coalesce({}::text, 'null')").format(col)
    if kind is FieldType.real:
        # PostgreSQL writes 2.0 as 2; a client would take the field for an integer, so keep the point. A finite
        # value's text is the JSON number to_json writes; NaN and the infinities go to to_json (JSON strings).
        return sql.SQL(
            "(CASE WHEN {c} IS NULL THEN 'null' WHEN {c} = trunc({c}) AND abs({c}) < 1e15 "
            "THEN trunc({c})::bigint::text || '.0' WHEN abs({c}) < 'Infinity' THEN {c}::text "
            "ELSE to_json({c})::text END)"
        ).format(c=col)
    plain = [v for v in (field.values or ()) if _needs_no_escape(v)] if field is not None else []
    if kind is FieldType.text and plain:
        return sql.SQL("(CASE WHEN {c} IN ({values}) THEN '\"' || {c} || '\"' "
                       "ELSE coalesce(to_json({c})::text, 'null') END)").format(
            c=col, values=sql.SQL(", ").join(sql.Literal(v) for v in plain))
    return sql.SQL("coalesce(to_json({})::text, 'null')").format(col)  # text, date, timestamptz: JSON strings


def _concatenated(pieces: list[str | sql.Composable]) -> sql.Composable:
    """`pieces` joined with ||, adjacent constant strings as one, as a balanced tree: each || copies both of its
    sides, so a left-deep chain of n pieces copies a row's text about n/2 times, a balanced tree about log2 n."""
    merged: list[str | sql.Composable] = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        else:
            merged.append(piece)

    def tree(part: list[str | sql.Composable]) -> sql.Composable:
        if len(part) == 1:
            return sql.Literal(part[0]) if isinstance(part[0], str) else part[0]
        half = len(part) // 2
        return sql.SQL("({} || {})").format(tree(part[:half]), tree(part[half:]))

    return tree(merged)


def feature_text(spec: LayerSpec, out_crs: crs_.Crs, properties: tuple[str, ...] | None, skip_geometry: bool,
                 alias: str = "p") -> sql.Composable:
    """`{"type":"Feature","id":...,"geometry":...,"properties":{...}}` as one SQL text expression."""
    a = sql.Identifier(alias)
    names = response_properties(spec) if properties is None else properties
    geometry: str | sql.Composable = "null"
    if not skip_geometry:
        geom = crs_.to_output(out_crs, sql.SQL("{}.geom").format(a))
        # options 0: no "crs" member in each geometry (the Content-Crs header says it once)
        geometry = sql.SQL("ST_AsGeoJSON({}, {}, 0)").format(geom, sql.Literal(int(out_crs.digits)))
    pieces: list[str | sql.Composable] = [
        '{"type":"Feature","id":', sql.SQL("to_json({}.fid)::text").format(a), ',"geometry":', geometry,
        ',"properties":']
    for i, name in enumerate(names):
        pieces += [("{" if i == 0 else ",") + f'"{name}":', _property_text(spec, name, a)]
    pieces.append("}}" if names else "{}}")
    return _concatenated(pieces)


# -- which rows ----------------------------------------------------------------------------------------

def _columns(spec: LayerSpec) -> sql.Composable:
    names = ["fid", *spec.field_names, "geom", "valid_from", "valid_to"]
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _inclusive_end(time: TimeRange) -> datetime | None:
    if time.end is None:
        return None
    return time.end if time.end_inclusive else time.end - _MICROSECOND


def time_params(spec: LayerSpec, time: TimeRange | None) -> dict[str, object]:
    """t_start / t_end for a `datetime`: instants for versions and timestamps, local dates for a date field."""
    if time is None:
        return {}
    is_date = False
    if spec.temporal.kind == "event" and spec.temporal.field:
        field = spec.field(spec.temporal.field)
        is_date = field is not None and field.type is FieldType.date
    found: dict[str, object] = {}
    if time.start is not None:
        found["t_start"] = time.start.astimezone(CITY_TIME).date() if is_date else time.start
    inclusive_end = _inclusive_end(time)
    if inclusive_end is not None:
        found["t_end"] = inclusive_end.astimezone(CITY_TIME).date() if is_date else inclusive_end
    return found


def _version_predicates(time: TimeRange | _Now) -> list[sql.Composable]:
    """Versions [valid_from, valid_to) that contain the instant or intersect the closed interval.

    Written once for both tables: `_closed` is the constant false (current table) or true (history) of each
    branch of the union, so the planner reduces the CASE to each table's own, indexable, condition.
    """
    if isinstance(time, _Now):
        start: sql.Composable | None = sql.SQL("now()")
        end: sql.Composable | None = sql.SQL("now()")
    else:
        start = sql.SQL("%(t_start)s::timestamptz") if time.start is not None else None
        end = sql.SQL("%(t_end)s::timestamptz") if time.end is not None else None
    found: list[sql.Composable] = []
    if end is not None:
        found.append(sql.SQL("valid_from <= {}").format(end))
    if start is not None:
        found.append(sql.SQL("CASE WHEN _closed THEN valid_to > {s} ELSE coalesce(valid_to, 'infinity') > {s} END"
                             ).format(s=start))
    return found


def _event_predicates(spec: LayerSpec, time: TimeRange) -> list[sql.Composable]:
    assert spec.temporal.field is not None
    column = ids.column(spec, spec.temporal.field)
    field = spec.field(spec.temporal.field)
    cast = sql.SQL("date" if field is not None and field.type is FieldType.date else "timestamptz")
    found: list[sql.Composable] = []
    if time.start is not None:
        found.append(sql.SQL("{} >= %(t_start)s::{}").format(column, cast))
    if time.end is not None:
        found.append(sql.SQL("{} <= %(t_end)s::{}").format(column, cast))
    return found


def bbox_params(box: tuple[float, float, float, float]) -> dict[str, object]:
    xmin, ymin, xmax, ymax = box
    if xmin > xmax:  # CRS84 across the antimeridian: two boxes
        return {"bw0": xmin, "bw1": ymin, "bw2": 180.0, "bw3": ymax, "be0": -180.0, "be1": ymin, "be2": xmax,
                "be3": ymax}
    return {"b0": xmin, "b1": ymin, "b2": xmax, "b3": ymax}


def _bbox_predicate(box: tuple[float, float, float, float], box_crs: crs_.Crs) -> sql.Composable:
    def envelope(prefix: str) -> sql.Composable:
        corners = sql.SQL(", ").join(sql.SQL("%({})s::float8").format(sql.SQL(f"{prefix}{i}")) for i in range(4))
        return sql.SQL("ST_Intersects(geom, {})").format(
            crs_.to_storage(box_crs, sql.SQL("ST_MakeEnvelope({})").format(corners)))

    if box[0] > box[2]:
        return sql.SQL("({} OR {})").format(envelope("bw"), envelope("be"))
    return envelope("b")


def _where(predicates: list[sql.Composable]) -> sql.Composable:
    if not predicates:
        return sql.SQL("")
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(predicates)


def _reads_versions(spec: LayerSpec, time: TimeRange | None) -> TimeRange | _Now | None:
    """The time a versioned read answers for, or None when the current table alone answers."""
    if spec.temporal.kind == "event":
        return None
    if time is not None:
        return time
    return NOW if spec.has_valid_time else None


def _is_instant(when: TimeRange | _Now) -> bool:
    return isinstance(when, _Now) or when.is_instant


def _fenced(inner: sql.Composable, caller: Sequence[sql.Composable], alias: str = "r") -> sql.Composed:
    """`inner` (a SELECT) with the caller's own conditions applied only to the rows it yields.

    OFFSET 0 is PostgreSQL's optimisation fence: no condition of the outer query is pushed into a subquery
    with OFFSET, and the subquery is never flattened into it. So a caller's filter, which the planner would
    otherwise order freely among the row rule's conditions (by cost), never meets a row outside the rule: no
    answer, count or error can come from a row the caller may not read."""
    return sql.SQL("SELECT * FROM ({} OFFSET 0) {} WHERE {}").format(inner, sql.Identifier(alias),
                                                                     sql.SQL(" AND ").join(caller))


def _versions(spec: LayerSpec, when: TimeRange | _Now, predicates: list[sql.Composable],
              caller: Sequence[sql.Composable] = ()) -> sql.Composable:
    """The versions a versioned read answers with: at most one per fid, without sorting the layer.

    The versions of one fid never overlap, so at an instant the current rows valid then and the history
    rows whose [valid_from, valid_to) holds it are already one per fid: a plain UNION ALL, which the
    planner reads in fid order from the two tables' indexes and merges, so a keyset page stops after a page.
    An interval can hold several versions of one fid; each fid keeps its latest version that intersects
    the interval and passes the other predicates: the current row, else the history row that no later
    such version supersedes (an index probe by fid).

    Every condition is on the union, none inside a branch: PostgreSQL merges ordered branches only when
    they carry no WHERE of their own, and pushes these conditions into each branch itself.

    `caller`: the caller's own filter where a row rule is among `predicates`: applied above a fence (_fenced),
    in the probes too, so it never meets a version outside the rule.
    """
    columns = _columns(spec)
    conditions = _version_predicates(when) + predicates
    outer = list(caller)
    if not _is_instant(when):
        # Inside a probe, unqualified columns name the probed table's own (the innermost scope). OFFSET 0
        # keeps each probe a per-row index look-up: PostgreSQL would otherwise hash the whole table for it.
        def later(table: sql.Composable, closed: str, newer: str) -> sql.Composable:
            found = sql.SQL("SELECT * FROM (SELECT *, {} AS _closed FROM {}) c WHERE {}{}").format(
                sql.SQL(closed), table, sql.SQL(newer), sql.SQL(" AND ").join([sql.SQL("v.fid = fid"), *conditions]))
            return sql.SQL("NOT EXISTS ({})").format(_fenced(found, outer) if outer else found + sql.SQL(" OFFSET 0"))

        newest = sql.SQL("(NOT _closed OR ({} AND {}))").format(
            later(ids.current_table(spec), "false", ""),
            later(ids.history_table(spec), "true", "(c.valid_from, c.refresh_id) > (v.valid_from, v.refresh_id) AND "))
        if outer:
            outer.append(newest)
        else:
            conditions = [*conditions, newest]
    union = sql.SQL("SELECT * FROM (SELECT {cols}, refresh_id, false AS _closed FROM {cur} "
                    "UNION ALL SELECT {cols}, refresh_id, true FROM {hist}) v{where}").format(
        cols=columns, cur=ids.current_table(spec), hist=ids.history_table(spec), where=_where(conditions))
    if outer:
        union = _fenced(union, outer, "v")
    return sql.SQL("(SELECT {} FROM ({}) v) t").format(columns, union)


def source(spec: LayerSpec, time: TimeRange | None, predicates: list[sql.Composable],
           caller: Sequence[sql.Composable] = ()) -> sql.Composable:
    """A FROM item (aliased t) holding the rows a request reads, with `predicates` applied.

    For versioned reads the predicates go inside, on each version, before each fid's latest one is taken
    (see _versions). The time's values are parameters t_start / t_end (see time_params).
    `caller`: conditions of the caller's own (its CQL2 filter) when `predicates` hold its row rule: evaluated
    only on rows the rule and the other predicates let through (_fenced), never beside them.
    """
    when = _reads_versions(spec, time)
    if when is None:
        own = list(predicates)
        if spec.temporal.kind == "event" and time is not None:
            own = _event_predicates(spec, time) + own
        rows: sql.Composable = sql.SQL("SELECT * FROM {}{}").format(ids.current_table(spec), _where(own))
        if caller:
            rows = _fenced(rows, caller)
        return sql.SQL("(SELECT {} FROM ({}) r) t").format(_columns(spec), rows)
    return _versions(spec, when, predicates, caller)


def is_fast_path(spec: LayerSpec, q: ItemsQuery) -> bool:
    """The request reads the current table unfiltered: the recorded row count is numberMatched."""
    return q.selects_all and _reads_versions(spec, q.time) is None


# -- statements ----------------------------------------------------------------------------------------

def _order(spec: LayerSpec, q: ItemsQuery) -> sql.Composable:
    keys: list[sql.Composable] = []
    table = queryables(spec)
    for name, descending in q.sortby:
        keys.append(sql.SQL("{} {}").format(table[name].identifier, sql.SQL("DESC" if descending else "ASC")))
    keys.append(sql.SQL("fid"))
    return sql.SQL(", ").join(keys)


def filter_predicates(spec: LayerSpec, q: ItemsQuery, params: dict[str, object]
                      ) -> tuple[list[sql.Composable], list[sql.Composable]]:
    """(predicates, caller): the conditions for source(). With a row rule (q.rows) the rule, the bbox and the
    keyset are the predicates and the caller's CQL2 filter goes above the fence; without one, all are predicates
    (the planner may then use the filter's indexes)."""
    return _conditions(spec, q, params, _translations(spec, q, params))


def _translations(spec: LayerSpec, q: ItemsQuery, params: dict[str, object]) -> tuple[bytes | None, bytes | None]:
    """The row rule's and the filter's SQL text (kept per filter: gis.features.cql2.cache); values into params."""
    rows = translated(q.rows, spec, q.filter_crs, params, "rows") if q.rows is not None else None
    found = translated(q.filter, spec, q.filter_crs, params) if q.filter is not None else None
    return rows, found


def _conditions(spec: LayerSpec, q: ItemsQuery, params: dict[str, object],
                translations: tuple[bytes | None, bytes | None]) -> tuple[list[sql.Composable], list[sql.Composable]]:
    rows, cql2 = translations
    found: list[sql.Composable] = []
    caller: list[sql.Composable] = []
    if rows is not None:
        found.append(as_sql(rows))
    if q.bbox is not None:
        found.append(_bbox_predicate(q.bbox, q.bbox_crs))
    if cql2 is not None:
        (found if rows is None else caller).append(as_sql(cql2))
    if q.after is not None:
        found.append(sql.SQL("fid > %(after)s::text"))
    return found, caller


def _items_params(spec: LayerSpec, q: ItemsQuery) -> dict[str, object]:
    """The values of an items statement, but a filter's (the translator adds those)."""
    params: dict[str, object] = {"offset": q.offset, **time_params(spec, q.time)}
    if q.bbox is not None:
        params.update(bbox_params(q.bbox))
    if q.after is not None:
        params["after"] = q.after
    if is_fast_path(spec, q):
        params["layer_id"] = spec.id
    return params


def _time_shape(time: TimeRange | None) -> tuple[bool, bool, bool] | None:
    """What of a `datetime` decides the statement: which ends are open, and an instant (no interval probes)."""
    return None if time is None else (time.start is None, time.end is None, time.is_instant)


def _shape(spec: LayerSpec, q: ItemsQuery, translations: tuple[bytes | None, bytes | None] = (None, None)
           ) -> tuple[object, ...]:
    """What decides an items statement's text, its values aside: the request's form and the SQL text of its row
    rule and filter, placeholders in place of their literals (so filters of one shape share one statement)."""
    time = _time_shape(q.time)
    box = None if q.bbox is None else (q.bbox_crs.uri, q.bbox[0] > q.bbox[2])
    return (spec.id, q.limit, q.after is None, q.offset == 0, box, time, q.properties, q.sortby, q.crs.uri,
            q.skip_geometry, translations)


_rendered: dict[tuple[object, ...], tuple[LayerSpec, bytes]] = {}
_RENDERED_MAX = 4096


def items_statement(spec: LayerSpec, q: ItemsQuery) -> Statement:
    """Columns: features (UTF-8 bytes), returned, more (bool), last_fid (text), matched (bigint or NULL).

    Statements are rendered once per shape (a CQL2 filter's shape is its SQL text with placeholders): the next
    request of the same shape only computes its values (and reuses the server's prepared statement).
    """
    params = _items_params(spec, q)
    translations = _translations(spec, q, params)
    shape = _shape(spec, q, translations)
    cached = _rendered.get(shape)
    if cached is not None and cached[0] is spec:
        return Statement(cached[1], params)
    rendered = _build_items_statement(spec, q, params, translations).as_bytes(None)
    _remember(shape, spec, rendered)
    return Statement(rendered, params)


def _remember(shape: tuple[object, ...], spec: LayerSpec, query: bytes) -> None:
    if len(_rendered) >= _RENDERED_MAX:
        _rendered.clear()
    _rendered[shape] = (spec, query)


def _build_items_statement(spec: LayerSpec, q: ItemsQuery, params: dict[str, object],
                           translations: tuple[bytes | None, bytes | None]) -> sql.Composed:
    predicates, caller = _conditions(spec, q, params, translations)
    order = _order(spec, q)
    if is_fast_path(spec, q):
        matched: sql.Composable = sql.SQL("(SELECT row_count FROM ops.layer_stats WHERE layer_id = %(layer_id)s)")
    elif q.after is None and q.offset == 0:
        # The first page of a filtered request counts, but never more than COUNT_BOUND rows: clients
        # (QGIS, GDAL) take the layer's size from the first page; later pages cost no count at all.
        matched = sql.SQL(
            "(SELECT CASE WHEN n <= {bound} THEN n END FROM (SELECT count(*) AS n FROM "
            "(SELECT 1 FROM {source} LIMIT {bound_plus}) c) b)"
        ).format(bound=sql.Literal(COUNT_BOUND), bound_plus=sql.Literal(COUNT_BOUND + 1),
                 source=source(spec, q.time, predicates, caller))
    else:
        matched = sql.SQL("NULL::bigint")
    limit = int(q.limit)
    query = sql.SQL(
        "SELECT convert_to(coalesce(string_agg({feature}, ',' ORDER BY p.n) FILTER (WHERE p.n <= {limit}), ''), "
        "'UTF8') AS features, "
        "count(*) FILTER (WHERE p.n <= {limit}) AS returned, count(*) > {limit} AS more, "
        "(array_agg(p.fid ORDER BY p.n DESC) FILTER (WHERE p.n <= {limit}))[1] AS last_fid, "
        "{matched} AS matched "
        "FROM (SELECT t.*, row_number() OVER (ORDER BY {order}) AS n FROM ("
        "SELECT * FROM {source} ORDER BY {order} LIMIT {limit_plus} OFFSET %(offset)s::bigint) t) p"
    ).format(
        feature=feature_text(spec, q.crs, q.properties, q.skip_geometry),
        limit=sql.Literal(limit), limit_plus=sql.Literal(limit + 1), matched=matched, order=order,
        source=source(spec, q.time, predicates, caller),
    )
    return query


def _row_rule(spec: LayerSpec, rows: Filter | None, rows_crs: crs_.Crs, params: dict[str, object]
              ) -> list[sql.Composable]:
    return [] if rows is None else [translate(rows, spec, rows_crs, params)]


def item_statement(spec: LayerSpec, fid: str, out_crs: crs_.Crs, time: TimeRange | None = None,
                   properties: tuple[str, ...] | None = None, rows: Filter | None = None,
                   rows_crs: crs_.Crs = crs_.CRS84) -> Statement:
    """One feature's GeoJSON (UTF-8 bytes) and its current version's ETag (None when it is no longer current):
    the version valid now, or at `time`; or no row.

    `rows`: the caller's row rule (a CQL2 node, geometries in rows_crs), in the same statement, so a feature
    outside the caller's rows and one that does not exist take the same query and the same plan."""
    params: dict[str, object] = {"fid": fid, **time_params(spec, time)}
    shape = ("item", spec.id, out_crs.uri, _time_shape(time), properties)
    cached = _rendered.get(shape) if rows is None else None
    if cached is not None and cached[0] is spec:
        return Statement(cached[1], params)
    predicates: list[sql.Composable] = [sql.SQL("fid = %(fid)s::text"), *_row_rule(spec, rows, rows_crs, params)]
    # The second column is the current version's ETag (what If-Match on an edit is compared with).
    query = sql.SQL(
        "SELECT convert_to({feature}, 'UTF8'), (SELECT '\"' || c.refresh_id || '.' || encode(c.row_hash, 'hex') "
        "|| '\"' FROM {current} c WHERE c.fid = %(fid)s::text) FROM {source} LIMIT 1"
    ).format(
        feature=feature_text(spec, out_crs, properties, False, alias="t"),
        current=ids.current_table(spec), source=source(spec, time, predicates),
    ).as_bytes(None)
    if rows is None:
        _remember(shape, spec, query)
    return Statement(query, params)


def history_statement(spec: LayerSpec, fid: str, out_crs: crs_.Crs, rows: Filter | None = None,
                      rows_crs: crs_.Crs = crs_.CRS84) -> Statement:
    """Every version of one feature, oldest first: features (UTF-8 bytes) and their count. `rows`: the caller's
    row rule, applied to each version (as the database's row security does to the history table)."""
    columns = _columns(spec)
    params: dict[str, object] = {"fid": fid}
    rule = _row_rule(spec, rows, rows_crs, params)
    where = sql.SQL(" AND ").join([sql.SQL("fid = %(fid)s::text"), *rule])
    query = sql.SQL(
        "SELECT convert_to(coalesce(string_agg({feature}, ',' ORDER BY p.valid_from, p.valid_to NULLS LAST), ''), "
        "'UTF8'), count(*) "
        "FROM (SELECT {cols} FROM {cur} WHERE {where} "
        "UNION ALL SELECT {cols} FROM {hist} WHERE {where}) p"
    ).format(feature=feature_text(spec, out_crs, None, False), cols=columns,
             cur=ids.current_table(spec), hist=ids.history_table(spec), where=where)
    return Statement(query, params)


def stats_statement() -> Statement:
    """Every layer's recorded count, extent (lon/lat), time extent and change version."""
    return Statement(sql.SQL(
        "SELECT layer_id, row_count, extent, time_extent, changed_refresh_id, changed_at FROM ops.layer_stats"
    ), {})
