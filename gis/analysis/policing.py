"""Policing analyses (layers/policing-rules.yml).

jurisdiction   the police jurisdiction (辖区) a point lies in, with its station
nearest        the nearest police stations to a point: along the roads when the road layer is a graph
               (segments share end points; Dijkstra from the point's snap to its nearest segment), else
               straight lines; every answer says which was used, per station
hotspots       incidents of a time window counted on a square grid in EPSG:4550, with the Getis-Ord Gi*
               z-score of every cell (binary weights: the cell and its eight neighbours). Only the incidents
               the caller may read are counted: the caller's row rule (access policy) is a RowScope.

Each returns a PlacesResult (JSON, GeoJSON and an HTML page with a map: gis.analysis.place_report).
"""

import functools
import heapq
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import psycopg
import pyproj
import shapely
from psycopg import sql
from shapely.geometry.base import BaseGeometry

from gis import identifiers as ids
from gis.analysis.environment import parse_window
from gis.analysis.pipeline import process_bbox, process_point
from gis.analysis.place_report import PlacesResult, Style, feature, fetch_dicts, iso
from gis.analysis.policing_rules import ConfidenceLevel, PolicingRules
from gis.errors import InvalidInput
from gis.layers import LayerRegistry
from gis.security.policy import RowRule

METRIC_SRID = 4550  # CGCS2000 / 3-degree Gauss-Kruger CM 123E
STORAGE_SRID = 4490
KNN_CANDIDATES = 8  # nearest segments by the index (in degrees), re-ranked in metres

STYLES: dict[str, Style] = {
    "cell": ("#bbb", "#dddddd88", 0.3, 0), "cold_90": ("#6baed6", "#c6dbef", 0.4, 0),
    "cold_95": ("#3182bd", "#6baed6", 0.4, 0), "cold_99": ("#08519c", "#3182bd", 0.4, 0),
    "hot_90": ("#fc9272", "#fcbba1", 0.4, 0), "hot_95": ("#ef3b2c", "#fb6a4a", 0.4, 0),
    "hot_99": ("#a50f15", "#de2d26", 0.4, 0), "jurisdiction": ("#1f77b4", "#1f77b422", 1.5, 0),
    "route": ("#2ca02c", "none", 3.0, 0), "straight": ("#999", "none", 1.2, 0),
    "station": ("#111", "#1f77b4", 1.0, 6), "query_point": ("#111", "#d62728", 1.0, 5),
}
LEGEND = {
    "hot_99": "热点 hot spot 99 %", "hot_95": "热点 hot spot 95 %", "hot_90": "热点 hot spot 90 %",
    "cell": "不显著 not significant", "cold_90": "冷点 cold spot 90 %", "cold_95": "冷点 cold spot 95 %",
    "cold_99": "冷点 cold spot 99 %", "jurisdiction": "辖区 jurisdiction", "route": "道路路径 route on roads",
    "straight": "直线 straight line", "station": "派出所 police station", "query_point": "查询点 point",
}


@dataclass(frozen=True)
class RowScope:
    """The rows of a layer a caller may read: the policy's row rule and the caller's claim value."""

    rule: RowRule | None = None
    value: str | None = None

    def predicate(self, registry: LayerRegistry, layer_id: str, alias: str) -> tuple[sql.Composable, dict[str, Any]]:
        """A condition on `alias` (a row of layer_id) with its parameters; no rule: every row; no claim: none."""
        if self.rule is None:
            return sql.SQL("TRUE"), {}
        if self.value is None:
            return sql.SQL("FALSE"), {}
        spec = registry[layer_id]
        if self.rule.within is None:
            assert self.rule.field is not None
            return (sql.SQL("{}.{} = %(scope_claim)s").format(sql.Identifier(alias), ids.column(spec, self.rule.field)),
                    {"scope_claim": self.value})
        area = registry[self.rule.within.layer]
        # The union is computed once (an InitPlan), so the row's spatial index answers the test, as on /items.
        return (sql.SQL("ST_Intersects({}.geom, (SELECT ST_Union(a.geom) FROM {} a WHERE a.{} = %(scope_claim)s))")
                .format(sql.Identifier(alias), ids.current_table(area), ids.column(area, self.rule.within.field)),
                {"scope_claim": self.value})

    def area(self, conn: psycopg.Connection, registry: LayerRegistry) -> BaseGeometry | None:
        """The area a spatial rule confines the caller to, in EPSG:4550 (None: no such rule, no confinement)."""
        if self.rule is None or self.rule.within is None:
            return None
        if self.value is None:
            return shapely.Polygon()
        area = registry[self.rule.within.layer]
        row = conn.execute(sql.SQL("SELECT ST_AsBinary(ST_Transform(ST_Union(geom), {})) FROM {} WHERE {} = %s")
                           .format(sql.Literal(METRIC_SRID), ids.current_table(area),
                                   ids.column(area, self.rule.within.field)), (self.value,)).fetchone()
        return shapely.from_wkb(bytes(row[0])) if row and row[0] is not None else shapely.Polygon()


def _query_point(point: str) -> dict[str, Any]:
    return feature("point", orjson.loads(point), {"role": "query_point"})


# -- jurisdiction of a point -------------------------------------------------------------------------

def jurisdiction(conn: psycopg.Connection, rules: PolicingRules, point: Any) -> PlacesResult:
    """The jurisdiction(s) containing the point (a boundary point may be in two) and their stations."""
    geojson = process_point(point)
    j, s = rules.jurisdictions, rules.stations
    rows = fetch_dicts(conn, sql.SQL("""
SELECT j.fid, j.{station} AS station, j.{name} AS name, ST_AsGeoJSON(j.geom, 7, 0)::json AS geometry,
       s.{sname} AS station_name, ST_AsGeoJSON(s.geom, 7, 0)::json AS station_geometry
FROM {J} j LEFT JOIN {S} s ON s.fid = j.{station}
WHERE ST_Intersects(j.geom, ST_SetSRID(ST_GeomFromGeoJSON(%(point)s), {srid}))
ORDER BY j.fid""").format(J=ids.current_table(j), S=ids.current_table(s), station=ids.column(j, rules.station_field),
                          name=ids.column(j, "name"), sname=ids.column(s, "name"), srid=sql.Literal(STORAGE_SRID)),
                 {"point": geojson})
    found = [feature(r["fid"], r["geometry"], {"role": "jurisdiction", "fid": r["fid"], "name": r["name"],
                                                 "station": r["station"], "station_name": r["station_name"]})
             for r in rows]
    stations = [feature(r["station"], r["station_geometry"], {"role": "station", "fid": r["station"],
                                                                "name": r["station_name"]})
                for r in rows if r["station_geometry"] is not None]
    summary = {"jurisdictions": len(found), "inside": bool(found),
               "jurisdiction": found[0]["properties"]["fid"] if found else None,
               "station": found[0]["properties"]["station"] if found else None}
    return PlacesResult("police-jurisdiction", "辖区查询 · Jurisdiction of a point", {"point": point}, summary,
                        {"jurisdictions": found, "stations": stations, "point": [_query_point(geojson)]},
                        rules.path.name)


# -- nearest stations ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Snap:
    """Where a point meets its nearest road segment: the segment, the fraction along it, the distance."""

    edge: str
    fraction: float
    distance_m: float


@dataclass
class RoadGraph:
    """The road segments as a graph: nodes are segment ends that coincide within the tolerance."""

    edges: dict[str, tuple[int, int, float]]  # fid -> (start node, end node, length m)
    adjacency: dict[int, list[tuple[int, float, str, bool]]]  # node -> (node, length, fid, forward)
    shared_ends: float  # share of segment ends that meet another segment's end


_GRAPHS: dict[tuple[Any, ...], RoadGraph] = {}
_GRAPHS_LOCK = threading.Lock()
_GRAPHS_KEPT = 4


def road_graph(conn: psycopg.Connection, rules: PolicingRules) -> RoadGraph:
    """The road graph, built once per database and roads refresh (a refresh, a new database: a new graph)."""
    key = conn.execute(
        "SELECT inet_server_addr(), inet_server_port(), (SELECT oid FROM pg_database WHERE datname = "
        "current_database()), (SELECT max(refresh_id) FROM ops.refresh_log WHERE layer_id = %s "
        "AND status = 'succeeded')", (rules.roads.id,)).fetchone()
    assert key is not None  # a SELECT without FROM gives one row
    with _GRAPHS_LOCK:
        found = _GRAPHS.get(key)
    if found is None:
        found = load_graph(conn, rules)
        with _GRAPHS_LOCK:
            if len(_GRAPHS) >= _GRAPHS_KEPT:
                _GRAPHS.pop(next(iter(_GRAPHS)))
            _GRAPHS[key] = found
    return found


def load_graph(conn: psycopg.Connection, rules: PolicingRules) -> RoadGraph:
    roads = rules.roads
    rows = conn.execute(sql.SQL("""
SELECT fid, ST_X(ST_StartPoint(l)), ST_Y(ST_StartPoint(l)), ST_X(ST_EndPoint(l)), ST_Y(ST_EndPoint(l)), ST_Length(l)
FROM (SELECT fid, ST_Transform(geom, {srid}) AS l FROM {R}) r""").format(
        R=ids.current_table(roads), srid=sql.Literal(METRIC_SRID))).fetchall()
    tolerance = rules.nearest.node_tolerance_m
    nodes: dict[tuple[int, int], int] = {}
    ends: dict[int, int] = {}

    def node(x: float, y: float) -> int:
        key = (round(x / tolerance), round(y / tolerance))
        found = nodes.setdefault(key, len(nodes))
        ends[found] = ends.get(found, 0) + 1
        return found

    edges: dict[str, tuple[int, int, float]] = {}
    adjacency: dict[int, list[tuple[int, float, str, bool]]] = {}
    for fid, x0, y0, x1, y1, length in rows:
        a, b = node(x0, y0), node(x1, y1)
        edges[fid] = (a, b, float(length))
        adjacency.setdefault(a, []).append((b, float(length), fid, True))
        adjacency.setdefault(b, []).append((a, float(length), fid, False))
    total = 2 * len(edges)
    shared = sum(count for count in ends.values() if count > 1)
    return RoadGraph(edges, adjacency, shared / total if total else 0.0)


def _snap_sql(rules: PolicingRules) -> sql.Composed:
    """For each point of %(points)s (GeoJSON texts): its nearest road segment in metres among KNN candidates."""
    return sql.SQL("""
SELECT q.k, c.fid, c.fraction, c.distance
FROM unnest(%(points)s::text[]) WITH ORDINALITY AS q(p, k)
CROSS JOIN LATERAL (
  SELECT r.fid, ST_LineLocatePoint(ST_Transform(r.geom, {srid}), ST_Transform(g.geom, {srid})) AS fraction,
         ST_Distance(ST_Transform(r.geom, {srid}), ST_Transform(g.geom, {srid})) AS distance
  FROM (SELECT ST_SetSRID(ST_GeomFromGeoJSON(q.p), {storage}) AS geom) g,
       LATERAL (SELECT fid, geom FROM {R} ORDER BY geom <-> g.geom LIMIT {knn}) r
  ORDER BY distance LIMIT 1) c
ORDER BY q.k""").format(R=ids.current_table(rules.roads), srid=sql.Literal(METRIC_SRID),
                        storage=sql.Literal(STORAGE_SRID), knn=sql.Literal(KNN_CANDIDATES))


def snap_points(conn: psycopg.Connection, rules: PolicingRules, points: Sequence[str]) -> list[Snap | None]:
    found = {int(k): Snap(fid, float(f), float(d))
             for k, fid, f, d in conn.execute(_snap_sql(rules), {"points": list(points)}).fetchall()}
    return [found.get(k) for k in range(1, len(points) + 1)]


Step = tuple[str, float, float]  # road fid, from fraction, to fraction


def shortest_paths(graph: RoadGraph, start: Snap, targets: dict[str, Snap]
                   ) -> dict[str, tuple[float, list[Step]]]:
    """Dijkstra from a snapped point; target id -> (metres along the roads, the steps), for those reached."""
    a, b, length = graph.edges[start.edge]
    dist: dict[int, float] = {a: start.fraction * length, b: (1 - start.fraction) * length}
    prev: dict[int, tuple[int | None, Step]] = {a: (None, (start.edge, start.fraction, 0.0)),
                                                b: (None, (start.edge, start.fraction, 1.0))}
    if a == b:
        dist[a] = min(dist[a], dist[b])
    wanted = {n for snap in targets.values() if snap.edge in graph.edges for n in graph.edges[snap.edge][:2]}
    heap = [(d, n) for n, d in dist.items()]
    heapq.heapify(heap)
    done: set[int] = set()
    remaining = len(wanted)
    while heap and remaining:
        d, n = heapq.heappop(heap)
        if n in done:
            continue
        done.add(n)
        remaining -= n in wanted
        for m, w, fid, forward in graph.adjacency.get(n, ()):
            if d + w < dist.get(m, math.inf):
                dist[m] = d + w
                prev[m] = (n, (fid, 0.0, 1.0) if forward else (fid, 1.0, 0.0))
                heapq.heappush(heap, (d + w, m))

    def steps_to(n: int) -> list[Step]:
        out: list[Step] = []
        current: int | None = n
        while current is not None:
            before, step = prev[current]
            out.append(step)
            current = before
        return out[::-1]

    answers: dict[str, tuple[float, list[Step]]] = {}
    for key, snap in targets.items():
        if snap.edge not in graph.edges:
            continue
        u, v, span = graph.edges[snap.edge]
        options: list[tuple[float, list[Step]]] = []
        if u in dist:
            options.append((dist[u] + snap.fraction * span, [*steps_to(u), (snap.edge, 0.0, snap.fraction)]))
        if v in dist:
            options.append((dist[v] + (1 - snap.fraction) * span, [*steps_to(v), (snap.edge, 1.0, snap.fraction)]))
        if snap.edge == start.edge:
            options.append((abs(snap.fraction - start.fraction) * span, [(snap.edge, start.fraction, snap.fraction)]))
        if options:
            answers[key] = min(options, key=lambda option: option[0])
    return answers


def _route_geometry(conn: psycopg.Connection, rules: PolicingRules, steps: list[Step]) -> Any:
    row = conn.execute(sql.SQL("""
SELECT ST_AsGeoJSON(ST_Transform(ST_LineMerge(ST_Collect(
         ST_LineSubstring(ST_Transform(r.geom, {srid}), least(x.a, x.b), greatest(x.a, x.b)) ORDER BY x.k)), {storage}),
         7, 0)::json
FROM unnest(%(fids)s::text[], %(a)s::float8[], %(b)s::float8[]) WITH ORDINALITY AS x(fid, a, b, k)
JOIN {R} r ON r.fid = x.fid""").format(R=ids.current_table(rules.roads), srid=sql.Literal(METRIC_SRID),
                                       storage=sql.Literal(STORAGE_SRID)),
        {"fids": [s[0] for s in steps], "a": [s[1] for s in steps], "b": [s[2] for s in steps]}).fetchone()
    return row[0] if row else None


def nearest(conn: psycopg.Connection, rules: PolicingRules, point: Any, count: Any = None) -> PlacesResult:
    """The `count` police stations nearest the point, by road distance where the roads allow it."""
    geojson = process_point(point)
    n = rules.nearest.default_count if count is None else count
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= rules.nearest.max_count:
        raise InvalidInput("count", f"a whole number from 1 to {rules.nearest.max_count}")
    s = rules.stations
    stations = fetch_dicts(conn, sql.SQL("""
SELECT s.fid, s.{name} AS name, ST_AsGeoJSON(s.geom, 7, 0) AS geometry,
       ST_Distance(ST_Transform(s.geom, {srid}), ST_Transform(ST_SetSRID(ST_GeomFromGeoJSON(%(point)s), {storage}),
                   {srid})) AS straight_m
FROM {S} s ORDER BY s.fid""").format(S=ids.current_table(s), name=ids.column(s, "name"),
                                     srid=sql.Literal(METRIC_SRID), storage=sql.Literal(STORAGE_SRID)),
                     {"point": geojson})
    graph = road_graph(conn, rules)
    is_graph = graph.shared_ends >= rules.nearest.min_shared_ends and graph.edges
    within = rules.nearest.snap_within_m
    paths: dict[str, tuple[float, list[Step]]] = {}
    start: Snap | None = None
    snaps: list[Snap | None] = []
    if is_graph:
        start, *snaps = snap_points(conn, rules, [geojson, *(st["geometry"] for st in stations)])
        if start is not None and start.distance_m <= within:
            targets = {st["fid"]: snap for st, snap in zip(stations, snaps, strict=True)
                       if snap is not None and snap.distance_m <= within}
            paths = shortest_paths(graph, start, targets)
    ranked: list[tuple[float, str, dict[str, Any], float | None, list[Step]]] = []
    for i, st in enumerate(stations):
        found = paths.get(st["fid"])
        if found is not None and start is not None:
            snap = snaps[i]
            assert snap is not None
            road_m, path = found
            ranked.append((start.distance_m + road_m + snap.distance_m, "network", st, road_m, path))
        else:
            ranked.append((float(st["straight_m"]), "straight_line", st, None, []))
    ranked.sort(key=lambda item: (item[0], item[2]["fid"]))
    point_geometry = orjson.loads(geojson)
    stations_out, routes = [], []
    for rank, (total, method, st, along, steps) in enumerate(ranked[:n], 1):
        geometry = orjson.loads(st["geometry"])
        props = {"role": "station", "rank": rank, "fid": st["fid"], "name": st["name"], "method": method,
                 "distance_m": round(total, 1), "straight_m": round(float(st["straight_m"]), 1),
                 "along_roads_m": None if along is None else round(along, 1),
                 "roads": [step[0] for step in steps]}
        stations_out.append(feature(st["fid"], geometry, props))
        line = _route_geometry(conn, rules, steps) if steps else None
        if line is None:
            line = {"type": "LineString", "coordinates": [point_geometry["coordinates"], geometry["coordinates"]]}
        routes.append(feature(f"{st['fid']}:route", line, {
            "role": "route" if method == "network" else "straight", "station": st["fid"], "rank": rank,
            "method": method, "distance_m": round(total, 1)}))
    methods = {f["properties"]["method"] for f in stations_out}
    summary = {"method": methods.pop() if len(methods) == 1 else "mixed" if methods else None,
               "road_graph": bool(is_graph), "road_shared_ends": round(graph.shared_ends, 4),
               "point_to_road_m": None if start is None else round(start.distance_m, 1),
               "stations": len(stations_out), "distances_in": f"EPSG:{METRIC_SRID}"}
    return PlacesResult("police-nearest", "最近派出所 · Nearest police stations", {"point": point, "count": n},
                        summary, {"stations": stations_out, "routes": routes,
                                  "point": [_query_point(geojson)]},
                        rules.path.name)


# -- hotspots --------------------------------------------------------------------------------------

def gi_star(counts: np.ndarray, study: np.ndarray | None = None) -> np.ndarray:
    """Getis-Ord Gi* of every cell of a 2-D grid of counts; binary weights over the 3 x 3 block, self included.

    Gi* = (sum_j w_ij x_j - mean * W_i) / (S * sqrt((n * W_i - W_i^2) / (n - 1))), with W_i the weights' sum
    (= the sum of their squares, binary), n, the mean and S (population standard deviation) over the study
    cells (`study`, default all); NaN outside the study area and when every study cell is equal.
    """
    inside = np.ones(counts.shape, dtype=bool) if study is None else study
    x = np.where(inside, counts.astype(np.float64), 0.0)
    n = int(inside.sum())
    if n < 2:
        return np.full(x.shape, np.nan)
    mean = x[inside].mean()
    s = math.sqrt(max((x[inside] ** 2).mean() - mean * mean, 0.0))
    if s == 0:
        return np.full(x.shape, np.nan)
    padded, ones = np.pad(x, 1), np.pad(inside.astype(np.float64), 1)
    ny, nx = x.shape
    local = sum(padded[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    weights = sum(ones[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):  # cells outside the study area weigh nothing: 0 / 0
        z = (local - mean * weights) / (s * np.sqrt((n * weights - weights * weights) / (n - 1)))
    return np.where(inside, z, np.nan)


@functools.cache
def _to_storage() -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(f"EPSG:{METRIC_SRID}", f"EPSG:{STORAGE_SRID}", always_xy=True)


def _metric_box(box: list[float]) -> tuple[float, float, float, float]:
    to_metric = pyproj.Transformer.from_crs(f"EPSG:{STORAGE_SRID}", f"EPSG:{METRIC_SRID}", always_xy=True)
    xs, ys = to_metric.transform([box[0], box[2], box[0], box[2]], [box[1], box[1], box[3], box[3]])
    return min(xs), min(ys), max(xs), max(ys)


def hotspot_statement(rules: PolicingRules, registry: LayerRegistry, scope: RowScope
                      ) -> tuple[sql.Composed, dict[str, Any]]:
    i = rules.incidents
    visible, params = scope.predicate(registry, i.id, "i")
    t = ids.column(i, i.temporal.field or "")
    query = sql.SQL("""
SELECT floor(ST_X(p) / %(cell)s)::bigint AS ix, floor(ST_Y(p) / %(cell)s)::bigint AS iy, count(*) AS n
FROM (SELECT ST_Transform(i.geom, {srid}) AS p FROM {I} i
      WHERE {visible}
        AND (%(t0)s::timestamptz IS NULL OR i.{t} >= %(t0)s)
        AND (%(t1)s::timestamptz IS NULL OR i.{t} < %(t1)s OR (%(t1_incl)s AND i.{t} = %(t1)s))
        AND (%(categories)s::text[] IS NULL OR i.{category} = ANY(%(categories)s))
        AND (%(bbox)s::float8[] IS NULL OR i.geom && ST_MakeEnvelope(
               %(bbox)s[1], %(bbox)s[2], %(bbox)s[3], %(bbox)s[4], {storage}))) q
GROUP BY 1, 2""").format(I=ids.current_table(i), visible=visible, t=t, category=ids.column(i, rules.category_field),
                         srid=sql.Literal(METRIC_SRID), storage=sql.Literal(STORAGE_SRID))
    return query, params


def _cell_size(rules: PolicingRules, value: Any) -> float:
    h = rules.hotspots
    if value is None:
        return h.cell_m
    if isinstance(value, bool) or not isinstance(value, int | float) or not h.min_cell_m <= value <= h.max_cell_m:
        raise InvalidInput("cell_m", f"a number of metres from {h.min_cell_m:g} to {h.max_cell_m:g}")
    return float(value)


def _classify(z: float, confidence: dict[ConfidenceLevel, float]) -> str:
    if math.isnan(z):
        return "cell"
    for level in sorted(confidence, reverse=True):
        if abs(z) >= confidence[level]:
            return f"{'hot' if z > 0 else 'cold'}_{level}"
    return "cell"


def hotspots(conn: psycopg.Connection, rules: PolicingRules, registry: LayerRegistry, scope: RowScope, *,
             datetime: Any = None, bbox: Any = None, cell_m: Any = None, categories: Any = None) -> PlacesResult:
    """Incident counts per grid cell over the window and Gi* z-scores; cells with incidents or significant z."""
    cell = _cell_size(rules, cell_m)
    window = parse_window(datetime)
    box = process_bbox(bbox)
    allowed = tuple(registry[rules.incidents.id].known_field(rules.category_field).values or ())
    if categories is not None and not (isinstance(categories, list) and categories
                                       and all(isinstance(c, str) and (not allowed or c in allowed)
                                               for c in categories)):
        raise InvalidInput("categories", "a non-empty list of " + (", ".join(allowed) or "categories"))
    query, params = hotspot_statement(rules, registry, scope)
    params |= {"cell": cell, "t0": window.start if window else None, "t1": window.end if window else None,
               "t1_incl": window.end_inclusive if window else True, "categories": categories, "bbox": box}
    counted = conn.execute(query, params).fetchall()
    # The study area: the bbox, else the area the caller is confined to, else where the incidents are.
    area = scope.area(conn, registry)
    bounds = _metric_box(box) if box is not None else (
        area.bounds if area is not None and not area.is_empty else None)
    if bounds is not None:
        x0, y0, x1, y1 = bounds
        ix0, iy0, ix1, iy1 = math.floor(x0 / cell), math.floor(y0 / cell), math.floor(x1 / cell), math.floor(y1 / cell)
    elif counted:
        ix0, iy0 = min(r[0] for r in counted), min(r[1] for r in counted)
        ix1, iy1 = max(r[0] for r in counted), max(r[1] for r in counted)
    else:
        ix0 = iy0 = ix1 = iy1 = 0
    if counted:  # an edge of a lon/lat bbox bulges a little in EPSG:4550: keep every counted cell on the grid
        ix0, iy0 = min(ix0, *(r[0] for r in counted)), min(iy0, *(r[1] for r in counted))
        ix1, iy1 = max(ix1, *(r[0] for r in counted)), max(iy1, *(r[1] for r in counted))
    nx, ny = ix1 - ix0 + 1, iy1 - iy0 + 1
    if nx * ny > rules.hotspots.max_cells:
        raise InvalidInput("cell_m", f"{nx * ny:,} cells of {cell:g} m over this extent; at most "
                           f"{rules.hotspots.max_cells:,} (a larger cell or a smaller bbox)")
    grid = np.zeros((ny, nx), dtype=np.int64)
    for ix, iy, n in counted:
        grid[iy - iy0, ix - ix0] += n
    study = None
    if area is not None:  # only the cells the caller's area touches: the rest are not "no incidents" but unseen
        gy_all, gx_all = np.mgrid[iy0:iy1 + 1, ix0:ix1 + 1]
        study = shapely.intersects(area, shapely.box(gx_all * cell, gy_all * cell, (gx_all + 1) * cell,
                                                     (gy_all + 1) * cell))
    z = gi_star(grid, study)
    in_study = np.ones(grid.shape, dtype=bool) if study is None else study
    kinds = np.array([[_classify(float(v), rules.hotspots.confidence) for v in row] for row in z], dtype=np.object_)
    classes = {str(k): int(n) for k, n in zip(*np.unique(kinds[in_study], return_counts=True), strict=True)}
    rows_, cols = np.nonzero(in_study & ((grid > 0) | (kinds != "cell")))
    gx, gy = ix0 + cols, iy0 + rows_
    # every shown cell's ring in one transformation: corners (x0,y0) (x1,y0) (x1,y1) (x0,y1) (x0,y0)
    xs = (np.stack([gx, gx + 1, gx + 1, gx, gx], axis=1) * cell).ravel()
    ys = (np.stack([gy, gy, gy + 1, gy + 1, gy], axis=1) * cell).ravel()
    lon, lat = _to_storage().transform(xs, ys)
    rings = np.round(np.stack([lon, lat], axis=1), 7).reshape(len(gx), 5, 2).tolist()
    cells = []
    for k, (r, c) in enumerate(zip(rows_.tolist(), cols.tolist(), strict=True)):
        score = float(z[r, c])
        cells.append(feature(f"{gx[k]}:{gy[k]}", {"type": "Polygon", "coordinates": [rings[k]]}, {
            "role": kinds[r, c], "ix": int(gx[k]), "iy": int(gy[k]), "count": int(grid[r, c]),
            "gi_z": None if math.isnan(score) else round(score, 4)}))
    cells.sort(key=lambda f: -(f["properties"]["gi_z"] or 0))
    summary = {"incidents": int(grid.sum()), "cells": int(in_study.sum()), "cell_m": cell,
               "grid_origin_m": [ix0 * cell, iy0 * cell], "grid_crs": f"EPSG:{METRIC_SRID}",
               "mean_per_cell": round(float(grid.mean()), 4),
               "hot_cells": {k: v for k, v in sorted(classes.items()) if k.startswith("hot")},
               "cold_cells": {k: v for k, v in sorted(classes.items()) if k.startswith("cold")},
               "rows": "the caller's jurisdiction" if scope.rule is not None else "all"}
    return PlacesResult("police-hotspots", "警情热点 · Incident hotspots (Getis-Ord Gi*)",
                        {"datetime": datetime, "bbox": box, "cell_m": cell, "categories": categories,
                         "from": iso(window.start) if window else None,
                         "to": iso(window.end) if window else None},
                        summary, {"cells": cells}, rules.path.name)
