"""Underground pipeline analyses over the pipeline and node layers (layers/pipeline-rules.yml).

The network is the pipelines table itself (from_node / to_node), walked by recursive CTEs: one source of
truth, current whenever a refresh changes the pipes, no graph to rebuild. Indexes on from_node and to_node
(declared in layers/pipeline/pipelines.yml) keep a walk to index look-ups.

burst          爆管关阀: from a pipe fid or a point, the open valves to close, the closed valves already
               bounding it, the pipes isolated and the buildings within customers_within_m that lose supply
trace          connectivity up- / downstream (from_node -> to_node is downstream) or both, to closed valves
cross_section  the pipes a drawn line crosses, in order along it, with depth interpolated at the crossing
clearance      GB 50289 horizontal clearances between parallel runs (and buildings), measured in EPSG:4550
cover          minimum cover at each end node below the minimum for its utility

Each returns a PlacesResult (gis.analysis.place_report: JSON, GeoJSON and an HTML page with a map).
"""

import math
from collections.abc import Iterable
from typing import Any

import orjson
import psycopg
from psycopg import sql

from gis import identifiers as ids
from gis.analysis.pipeline_rules import ClearancePair, PairSide, PipelineRules
from gis.analysis.place_report import PlacesResult, fetch_dicts, report_html
from gis.errors import InvalidInput, NotFound
from gis.rendering import Drawing, Shape
from gis.svg import DEFAULT_STYLE, MapFrame, Style

METRIC_SRID = 4550  # CGCS2000 / 3-degree Gauss-Kruger CM 123E
DEGREES_PER_METRE = 1 / 60_000  # a generous box in lon/lat degrees at Shenyang's latitude (1° lon ≈ 83 km)
MAX_FEATURES = 5_000  # places returned per list; counts are always complete
MAX_SECTION_M = 2_000.0


# -- indexes -----------------------------------------------------------------------------------------

def _feature(fid: str, geometry: Any, properties: dict[str, Any]) -> dict[str, Any]:
    geom = orjson.loads(geometry) if isinstance(geometry, str | bytes) else geometry
    return {"type": "Feature", "id": fid, "geometry": geom, "properties": properties}


def _tables(rules: PipelineRules) -> dict[str, sql.Composable]:
    return {"P": ids.current_table(rules.pipelines), "N": ids.current_table(rules.nodes),
            "B": ids.current_table(rules.buildings), "srid": sql.Literal(METRIC_SRID)}


def _metric(expr: str) -> sql.Composed:
    return sql.SQL("ST_Transform({}, {})").format(sql.SQL(expr), sql.Literal(METRIC_SRID))


def process_point(value: Any, name: str = "point") -> str:
    """A GeoJSON Point (or [lon, lat]) in CGCS2000 / CRS84 lon/lat, as GeoJSON text."""
    if isinstance(value, list | tuple) and len(value) == 2:
        value = {"type": "Point", "coordinates": list(value)}
    if isinstance(value, dict) and value.get("type") == "Feature":
        value = value.get("geometry")
    if not isinstance(value, dict) or value.get("type") != "Point":
        raise InvalidInput(name, "a GeoJSON Point (lon, lat) or [lon, lat]")
    coords = value.get("coordinates")
    if not (isinstance(coords, list) and len(coords) >= 2 and all(isinstance(c, int | float) for c in coords[:2])
            and -180 <= coords[0] <= 180 and -90 <= coords[1] <= 90):
        raise InvalidInput(name, "coordinates are [lon, lat] in degrees")
    return orjson.dumps({"type": "Point", "coordinates": coords[:2]}).decode()


def _pipe_props(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("fid", "utility", "diameter_mm", "pressure_class", "material", "status",
                                "depth_start_m", "depth_end_m", "from_node", "to_node") if k in row}


_PIPE_COLS = ("p.fid, p.utility, p.diameter_mm, p.pressure_class, p.material, p.status, p.depth_start_m, "
              "p.depth_end_m, p.from_node, p.to_node, ST_AsGeoJSON(p.geom, 7) AS geometry")


def locate_pipe(conn: psycopg.Connection, rules: PipelineRules, *, pipe: str | None, point: Any,
                utilities: Iterable[str], name: str = "point") -> tuple[str, float | None]:
    """The pipe given by fid, or the nearest in-service pipe of the utilities within snap_within_m of a point."""
    t = _tables(rules)
    if pipe is not None:
        found = conn.execute(sql.SQL("SELECT utility FROM {P} WHERE fid = %s").format(**t), (pipe,)).fetchone()
        if found is None:
            raise NotFound(f"no pipe '{pipe}'")
        if found[0] not in tuple(utilities):
            raise InvalidInput("pipe", f"'{pipe}' is {found[0]}; this analysis takes "
                               + ", ".join(utilities))
        return pipe, None
    if point is None:
        raise InvalidInput("inputs", "give a pipe fid or a point")
    geojson = process_point(point, name)
    row = conn.execute(sql.SQL(
        "WITH q AS (SELECT ST_SetSRID(ST_GeomFromGeoJSON(%(pt)s), 4490) g) "
        "SELECT p.fid, ST_Distance({pm}, {qm}) FROM {P} p, q WHERE p.utility = ANY(%(u)s) "
        "AND p.status = ANY(%(ok)s) ORDER BY p.geom <-> q.g LIMIT 1").format(
            pm=_metric("p.geom"), qm=_metric("q.g"), **t),
        {"pt": geojson, "u": list(utilities), "ok": list(rules.network.traversed_status)}).fetchone()
    if row is None or row[1] > rules.network.snap_within_m:
        raise InvalidInput(name, f"no {'/'.join(utilities)} pipe in service within "
                           f"{rules.network.snap_within_m:g} m")
    return str(row[0]), round(float(row[1]), 2)


# -- burst -------------------------------------------------------------------------------------------

_BURST = """
WITH RECURSIVE start AS (
  SELECT fid, from_node, to_node FROM {P} WHERE fid = %(fid)s
), reach(node) AS (
  SELECT unnest(ARRAY[from_node, to_node]) FROM start
  UNION
  SELECT e.nxt FROM reach r
  JOIN LATERAL (
    SELECT p.to_node AS nxt FROM {P} p WHERE p.from_node = r.node AND p.status = ANY(%(ok)s)
    UNION ALL
    SELECT p.from_node FROM {P} p WHERE p.to_node = r.node AND p.status = ANY(%(ok)s)
  ) e ON e.nxt IS NOT NULL
  WHERE NOT EXISTS (SELECT 1 FROM {N} n WHERE n.fid = r.node AND n.node_type = %(valve)s)
), nodes AS MATERIALIZED (
  SELECT r.node, n.node_type, n.state, n.geom, coalesce(n.node_type = %(valve)s, false) AS is_valve
  FROM reach r LEFT JOIN {N} n ON n.fid = r.node WHERE r.node IS NOT NULL
), pipes AS MATERIALIZED (
  SELECT p.* FROM {P} p WHERE p.fid = %(fid)s
  UNION
  SELECT p.* FROM nodes x JOIN {P} p ON p.from_node = x.node AND p.status = ANY(%(ok)s) WHERE NOT x.is_valve
  UNION
  SELECT p.* FROM nodes x JOIN {P} p ON p.to_node = x.node AND p.status = ANY(%(ok)s) WHERE NOT x.is_valve
)
SELECT 'valve' AS role, x.node AS fid, x.state AS state, ST_AsGeoJSON(x.geom, 7) AS geometry, NULL::json AS pipe
  FROM nodes x WHERE x.is_valve
UNION ALL
SELECT 'pipe', p.fid, NULL, ST_AsGeoJSON(p.geom, 7),
  json_build_object('utility', p.utility, 'diameter_mm', p.diameter_mm, 'pressure_class', p.pressure_class,
                    'material', p.material, 'status', p.status, 'from_node', p.from_node, 'to_node', p.to_node)
  FROM pipes p
UNION ALL
SELECT 'building', b.fid, b.use, ST_AsGeoJSON(b.geom, 7), json_build_object('use', b.use, 'floors', b.floors,
                    'distance_m', round(d.m::numeric, 2))
  FROM (SELECT b.fid, min(ST_Distance({bm}, {pm})) AS m FROM pipes p
        JOIN {B} b ON b.geom && ST_Expand(p.geom, %(box)s) AND ST_DWithin({bm}, {pm}, %(within)s)
        GROUP BY b.fid) d JOIN {B} b ON b.fid = d.fid
"""


def burst(conn: psycopg.Connection, rules: PipelineRules, *, pipe: str | None = None, point: Any = None,
          utility: str | None = None) -> PlacesResult:
    """爆管关阀: the valves that isolate a burst on `pipe` (or the pipe nearest `point`)."""
    net = rules.network
    utilities = (utility,) if utility else net.utilities
    if utility is not None and utility not in net.utilities:
        raise InvalidInput("utility", f"'{utility[:20]}' has no valves here; one of {', '.join(net.utilities)}")
    fid, snapped = locate_pipe(conn, rules, pipe=pipe, point=point, utilities=utilities)
    within = net.customers_within_m
    query = sql.SQL(_BURST).format(bm=_metric("b.geom"), pm=_metric("p.geom"), **_tables(rules))
    rows = fetch_dicts(conn, query, {"fid": fid, "ok": list(net.traversed_status), "valve": net.valve_type,
                               "box": within * DEGREES_PER_METRE, "within": within})
    places: dict[str, list[dict[str, Any]]] = {"burst": [], "valves_to_close": [], "closed_valves": [],
                                                "isolated_pipes": [], "customers": []}
    for r in rows:
        if r["role"] == "valve":
            closed = r["state"] == net.closed_state
            places["closed_valves" if closed else "valves_to_close"].append(
                _feature(r["fid"], r["geometry"], {"fid": r["fid"], "role": "closed_valve" if closed
                                                   else "valve_to_close", "state": r["state"]}))
        elif r["role"] == "pipe":
            props = {"fid": r["fid"], **r["pipe"]}
            role = "burst" if r["fid"] == fid else "isolated_pipes"
            props["role"] = "burst_pipe" if role == "burst" else "isolated_pipe"
            places[role].append(_feature(r["fid"], r["geometry"], props))
            if role == "burst":
                places["isolated_pipes"].append(_feature(r["fid"], r["geometry"], {**props, "role": "isolated_pipe"}))
        else:
            places["customers"].append(_feature(r["fid"], r["geometry"], {"fid": r["fid"], "role": "customer",
                                                                           **r["pipe"]}))
    for items in places.values():
        items.sort(key=lambda f: f["id"])
    burst_props = places["burst"][0]["properties"] if places["burst"] else {}
    summary = {
        "pipe": fid, "utility": burst_props.get("utility"), "snapped_m": snapped,
        "valves_to_close": len(places["valves_to_close"]), "closed_valves": len(places["closed_valves"]),
        "isolated_pipes": len(places["isolated_pipes"]), "customers": len(places["customers"]),
        "isolated_length_m": None,
    }
    if places["isolated_pipes"]:
        length = conn.execute(sql.SQL("SELECT sum(ST_Length({pm})) FROM {P} p WHERE p.fid = ANY(%s)").format(
            pm=_metric("p.geom"), **_tables(rules)), ([f["id"] for f in places["isolated_pipes"]],)).fetchone()
        summary["isolated_length_m"] = round(float(length[0] or 0), 1) if length else None
    return PlacesResult("burst", "爆管关阀分析 · Burst isolation",
                          {"pipe": pipe, "point": point, "utility": utility, "customers_within_m": within},
                          summary, places, rules.path.name)


# -- trace -------------------------------------------------------------------------------------------

_TRACE = """
WITH RECURSIVE start AS (
  SELECT fid, from_node, to_node FROM {P} WHERE fid = %(fid)s
), reach(node) AS (
  SELECT unnest({seed}) FROM start
  UNION
  SELECT e.nxt FROM reach r
  JOIN LATERAL ({step}) e ON e.nxt IS NOT NULL
  WHERE NOT EXISTS (SELECT 1 FROM {N} n WHERE n.fid = r.node AND n.node_type = %(valve)s AND n.state = %(closed)s)
), open_nodes AS MATERIALIZED (
  SELECT r.node FROM reach r
  WHERE NOT EXISTS (SELECT 1 FROM {N} n WHERE n.fid = r.node AND n.node_type = %(valve)s AND n.state = %(closed)s)
), pipes AS (
  SELECT p.* FROM {P} p WHERE p.fid = %(fid)s
  UNION
  {pipes}
)
SELECT count(*) OVER () AS total, sum(ST_Length({pm})) OVER () AS length_m, {cols}
FROM pipes p ORDER BY p.fid LIMIT %(limit)s
"""
_DOWN_STEP = "SELECT p.to_node AS nxt FROM {P} p WHERE p.from_node = r.node AND p.status = ANY(%(ok)s)"
_UP_STEP = "SELECT p.from_node AS nxt FROM {P} p WHERE p.to_node = r.node AND p.status = ANY(%(ok)s)"
_DOWN_PIPES = "SELECT p.* FROM open_nodes x JOIN {P} p ON p.from_node = x.node AND p.status = ANY(%(ok)s)"
_UP_PIPES = "SELECT p.* FROM open_nodes x JOIN {P} p ON p.to_node = x.node AND p.status = ANY(%(ok)s)"


def trace(conn: psycopg.Connection, rules: PipelineRules, *, pipe: str | None = None, point: Any = None,
          direction: str = "downstream", utility: str | None = None) -> PlacesResult:
    """The pipes connected to a pipe, following from_node -> to_node (downstream), against it, or both;
    closed valves stop the trace and pipes not in service are not walked."""
    if direction not in ("downstream", "upstream", "both"):
        raise InvalidInput("direction", "downstream, upstream or both")
    t = _tables(rules)
    all_utilities = rules.pipelines.known_field("utility").values or ()
    fid, snapped = locate_pipe(conn, rules, pipe=pipe, point=point,
                               utilities=(utility,) if utility else tuple(all_utilities))
    steps, pipes = [], []
    if direction in ("downstream", "both"):
        steps.append(_DOWN_STEP)
        pipes.append(_DOWN_PIPES)
    if direction in ("upstream", "both"):
        steps.append(_UP_STEP)
        pipes.append(_UP_PIPES)
    seed = {"downstream": "ARRAY[to_node]", "upstream": "ARRAY[from_node]",
            "both": "ARRAY[from_node, to_node]"}[direction]
    query = sql.SQL(_TRACE).format(
        seed=sql.SQL(seed), step=sql.SQL(" UNION ALL ".join(steps)).format(**t),
        pipes=sql.SQL(" UNION ".join(pipes)).format(**t), pm=_metric("p.geom"), cols=sql.SQL(_PIPE_COLS), **t)
    net = rules.network
    rows = fetch_dicts(conn, query, {"fid": fid, "ok": list(net.traversed_status), "valve": net.valve_type,
                               "closed": net.closed_state, "limit": MAX_FEATURES})
    features = [_feature(r["fid"], r["geometry"], {**_pipe_props(r), "role": "traced_pipe"}) for r in rows]
    total = int(rows[0]["total"]) if rows else 0
    summary = {"pipe": fid, "snapped_m": snapped, "direction": direction, "pipes": total,
               "length_m": round(float(rows[0]["length_m"]), 1) if rows else 0.0,
               "truncated": total > len(features)}
    return PlacesResult("trace", f"连通性追踪 · Connectivity trace ({direction})",
                          {"pipe": pipe, "point": point, "direction": direction}, summary,
                          {"traced_pipes": features}, rules.path.name)


# -- cross-section -----------------------------------------------------------------------------------

_SECTION = """
WITH l AS (SELECT ST_SetSRID(ST_GeomFromGeoJSON(%(line)s), 4490) AS g),
lm AS (SELECT g, ST_Transform(g, {srid}) AS m FROM l)
SELECT {cols}, ST_AsGeoJSON(x.pt, 7) AS crossing,
  ST_LineLocatePoint(lm.m, x.ptm) * ST_Length(lm.m) AS along_m,
  ST_LineLocatePoint(ST_Transform(p.geom, {srid}), x.ptm) AS fraction
FROM lm JOIN {P} p ON p.geom && lm.g AND ST_Intersects(p.geom, lm.g)
CROSS JOIN LATERAL (SELECT d.geom AS pt, ST_Transform(d.geom, {srid}) AS ptm
                    FROM ST_Dump(ST_Intersection(p.geom, lm.g)) d WHERE GeometryType(d.geom) = 'POINT') x
WHERE p.status = ANY(%(status)s)
ORDER BY along_m, p.fid
"""


def _line(value: Any) -> str:
    if isinstance(value, dict) and value.get("type") == "Feature":
        value = value.get("geometry")
    if not isinstance(value, dict) or value.get("type") != "LineString":
        raise InvalidInput("line", "a GeoJSON LineString (lon, lat) drawn across the street")
    coords = value.get("coordinates")
    if not (isinstance(coords, list) and 2 <= len(coords) <= 100 and all(
            isinstance(c, list) and len(c) >= 2 and all(isinstance(v, int | float) for v in c[:2]) for c in coords)):
        raise InvalidInput("line", "2 to 100 positions [lon, lat]")
    return orjson.dumps({"type": "LineString", "coordinates": [c[:2] for c in coords]}).decode()


def cross_section(conn: psycopg.Connection, rules: PipelineRules, line: Any,
                  utilities: Iterable[str] | None = None) -> PlacesResult:
    """The pipes a line crosses, ordered by distance along it, with depth (cover) at the crossing."""
    text = _line(line)
    t = _tables(rules)
    length = conn.execute("SELECT ST_Length(ST_Transform(ST_SetSRID(ST_GeomFromGeoJSON(%s), 4490), 4550))",
                          (text,)).fetchone()
    if length is None or not (0 < float(length[0]) <= MAX_SECTION_M):
        raise InvalidInput("line", f"between 0 and {MAX_SECTION_M:g} m long")
    status = rules.pipelines.known_field("status").values or ()
    rows = fetch_dicts(conn, sql.SQL(_SECTION).format(cols=sql.SQL(_PIPE_COLS), **t),
                 {"line": text, "status": [s for s in status if s != "abandoned"] or list(status)})
    wanted = set(utilities) if utilities else None
    features = []
    for i, r in enumerate(r for r in rows if wanted is None or r["utility"] in wanted):
        depth = None
        if r["depth_start_m"] is not None and r["depth_end_m"] is not None:
            depth = round(r["depth_start_m"] + r["fraction"] * (r["depth_end_m"] - r["depth_start_m"]), 2)
        features.append(_feature(f"{i + 1}:{r['fid']}", r["crossing"], {
            **_pipe_props(r), "role": "crossing", "order": i + 1, "along_m": round(r["along_m"], 2),
            "depth_m": depth, "pipe_geometry": orjson.loads(r["geometry"])}))
    line_feature = _feature("section", text, {"role": "section_line", "length_m": round(float(length[0]), 2)})
    summary = {"length_m": round(float(length[0]), 2), "crossings": len(features),
               "utilities": sorted({f["properties"]["utility"] for f in features})}
    return PlacesResult("cross_section", "横断面 · Cross-section", {"line": orjson.loads(text)}, summary,
                          {"section": [line_feature], "crossings": features}, rules.path.name)


# -- clearance ---------------------------------------------------------------------------------------

def _side_predicates(side: PairSide, alias: str, params: dict[str, Any], key: str) -> list[sql.Composed]:
    a = sql.Identifier(alias)
    preds = [sql.SQL("{}.utility = ANY({})").format(a, sql.Placeholder(f"{key}_u"))]
    params[f"{key}_u"] = list(side.utility)
    if side.pressure_class:
        preds.append(sql.SQL("{}.pressure_class = ANY({})").format(a, sql.Placeholder(f"{key}_pc")))
        params[f"{key}_pc"] = list(side.pressure_class)
    if side.diameter_mm_min is not None:
        preds.append(sql.SQL("{}.diameter_mm >= {}").format(a, sql.Placeholder(f"{key}_dmin")))
        params[f"{key}_dmin"] = side.diameter_mm_min
    if side.diameter_mm_max is not None:
        preds.append(sql.SQL("{}.diameter_mm <= {}").format(a, sql.Placeholder(f"{key}_dmax")))
        params[f"{key}_dmax"] = side.diameter_mm_max
    return preds


def process_bbox(bbox: Any) -> list[float] | None:
    if bbox is None:
        return None
    if isinstance(bbox, str):
        bbox = bbox.split(",")
    try:
        box = [float(v) for v in bbox]
    except (TypeError, ValueError):
        raise InvalidInput("bbox", "minlon,minlat,maxlon,maxlat") from None
    if len(box) != 4 or box[0] >= box[2] or box[1] >= box[3]:
        raise InvalidInput("bbox", "minlon,minlat,maxlon,maxlat")
    # Degrees: anything past the globe (1e308, inf) would overflow the grid and buffer arithmetic downstream.
    if not (box[0] >= -180 and box[2] <= 180 and box[1] >= -90 and box[3] <= 90):
        raise InvalidInput("bbox", "longitudes lie between -180 and 180, latitudes between -90 and 90")
    return box


def clearance_statement(rules: PipelineRules, pair: ClearancePair, bbox: list[float] | None
                        ) -> tuple[sql.Composed, dict[str, Any]]:
    c = rules.clearances
    params: dict[str, Any] = {"min": pair.min_m, "box": (pair.min_m + 3.0) * DEGREES_PER_METRE,
                              "status": list(c.status), "cos": math.cos(math.radians(c.max_angle_deg))}
    b_preds = [*_side_predicates(pair.b, "b", params, "b"), sql.SQL("b.status = ANY(%(status)s)")]
    wall = c.measured_from == "wall"
    t = _tables(rules)
    window = sql.SQL("")
    if bbox is not None:
        params["bbox"] = bbox
        window = sql.SQL(" AND a.geom && ST_MakeEnvelope(%(bbox)s[1], %(bbox)s[2], %(bbox)s[3], %(bbox)s[4], 4490)")
    if pair.a.buildings:
        query = sql.SQL(
            "SELECT a.fid AS a_fid, 'building' AS a_utility, NULL::int AS a_diameter_mm, NULL AS a_pressure_class, "
            "b.fid AS b_fid, b.utility AS b_utility, b.diameter_mm AS b_diameter_mm, "
            "ST_Distance({am}, {bm}) - {brad} AS measured_m, "
            "ST_AsGeoJSON(ST_ShortestLine(a.geom, b.geom), 7) AS geometry "
            "FROM {B} a JOIN {P} b ON b.geom && ST_Expand(a.geom, %(box)s) AND {bp} "
            "WHERE ST_Distance({am}, {bm}) - {brad} < %(min)s{window} ORDER BY measured_m, a.fid, b.fid"
        ).format(am=_metric("a.geom"), bm=_metric("b.geom"), bp=sql.SQL(" AND ").join(b_preds),
                 brad=sql.SQL("coalesce(b.diameter_mm, 0) / 2000.0" if wall else "0"), window=window, **t)
        return query, params
    a_preds = [*_side_predicates(pair.a, "a", params, "a"), sql.SQL("a.status = ANY(%(status)s)")]
    radii = sql.SQL("(coalesce(a.diameter_mm, 0) + coalesce(b.diameter_mm, 0)) / 2000.0" if wall else "0")
    query = sql.SQL(
        "SELECT a_fid, a_utility, a_diameter_mm, a_pressure_class, b_fid, b_utility, b_diameter_mm, measured_m, "
        "geometry FROM (SELECT a.fid AS a_fid, a.utility AS a_utility, a.diameter_mm AS a_diameter_mm, "
        "a.pressure_class AS a_pressure_class, b.fid AS b_fid, b.utility AS b_utility, "
        "b.diameter_mm AS b_diameter_mm, ST_Distance({am}, {bm}) - {radii} AS measured_m, "
        "abs(cos(ST_Azimuth(ST_StartPoint({am}), ST_EndPoint({am})) "
        "- ST_Azimuth(ST_StartPoint({bm}), ST_EndPoint({bm})))) AS parallel, "
        "ST_AsGeoJSON(ST_ShortestLine(a.geom, b.geom), 7) AS geometry "
        "FROM {P} a JOIN {P} b ON b.geom && ST_Expand(a.geom, %(box)s) AND {bp} "
        "WHERE {ap}{window} AND NOT ST_Intersects(a.geom, b.geom)) x "
        "WHERE measured_m < %(min)s AND parallel >= %(cos)s ORDER BY measured_m, a_fid, b_fid"
    ).format(am=_metric("a.geom"), bm=_metric("b.geom"), radii=radii, bp=sql.SQL(" AND ").join(b_preds),
             ap=sql.SQL(" AND ").join(a_preds), window=window, **t)
    return query, params


def clearance(conn: psycopg.Connection, rules: PipelineRules, *, pairs: Iterable[str] | None = None,
              bbox: Any = None) -> PlacesResult:
    """Parallel runs closer than GB 50289 allows: per violation the rule, required and measured distance."""
    box = process_bbox(bbox)
    chosen = list(rules.clearances.pairs)
    if pairs is not None:
        wanted = list(pairs)
        unknown = [p for p in wanted if rules.pair(p) is None]
        if unknown:
            raise InvalidInput("pairs", f"unknown pair '{unknown[0][:40]}'; one of "
                               + ", ".join(p.id for p in rules.clearances.pairs))
        chosen = [p for p in chosen if p.id in wanted]
    violations: list[dict[str, Any]] = []
    per_pair: dict[str, int] = {}
    for pair in chosen:
        query, params = clearance_statement(rules, pair, box)
        rows = fetch_dicts(conn, query, params)
        per_pair[pair.id] = len(rows)
        for r in rows:
            violations.append(_feature(f"{pair.id}:{r['a_fid']}:{r['b_fid']}", r["geometry"], {
                "role": "violation", "rule": pair.id, "title": pair.title.zh, "title_en": pair.title.en,
                "required_m": pair.min_m, "measured_m": round(float(r["measured_m"]), 3),
                "a_fid": r["a_fid"], "a_utility": r["a_utility"], "a_diameter_mm": r["a_diameter_mm"],
                "a_pressure_class": r["a_pressure_class"], "b_fid": r["b_fid"], "b_utility": r["b_utility"],
                "b_diameter_mm": r["b_diameter_mm"]}))
    summary = {"violations": len(violations), "per_rule": per_pair,
               "measured_from": rules.clearances.measured_from, "max_angle_deg": rules.clearances.max_angle_deg,
               "truncated": len(violations) > MAX_FEATURES}
    return PlacesResult("clearance", "管线水平净距检查 (GB 50289) · Clearance check",
                          {"pairs": [p.id for p in chosen], "bbox": box}, summary,
                          {"violations": violations[:MAX_FEATURES]}, rules.path.name)


# -- cover -------------------------------------------------------------------------------------------

_COVER = """
WITH req AS (SELECT * FROM unnest(%(u)s::text[], %(m)s::float8[], %(rule)s::text[]) AS r(utility, required, rule)),
ends AS (
  SELECT p.fid, p.utility, p.from_node AS node, p.depth_start_m AS depth, ST_StartPoint(p.geom) AS pt
    FROM {P} p WHERE p.utility = ANY(%(u)s) AND p.status = ANY(%(status)s){window}
  UNION ALL
  SELECT p.fid, p.utility, p.to_node, p.depth_end_m, ST_EndPoint(p.geom)
    FROM {P} p WHERE p.utility = ANY(%(u)s) AND p.status = ANY(%(status)s){window}
)
SELECT coalesce(e.node, e.fid) AS node, e.utility, r.rule, r.required, min(e.depth) AS measured,
       array_agg(DISTINCT e.fid ORDER BY e.fid) AS pipes, ST_AsGeoJSON(min(e.pt), 7) AS geometry
FROM ends e JOIN req r ON r.utility = e.utility
WHERE e.depth < r.required
GROUP BY 1, 2, 3, 4 ORDER BY measured, node
"""


def cover(conn: psycopg.Connection, rules: PipelineRules, *, utilities: Iterable[str] | None = None,
          bbox: Any = None) -> PlacesResult:
    """End nodes whose cover (depth to the pipe top) is below the minimum for the utility."""
    box = process_bbox(bbox)
    c = rules.cover
    u, m, rule = [], [], []
    for minimum in c.minimums:
        for name in minimum.utility:
            if utilities is None or name in set(utilities):
                u.append(name)
                m.append(minimum.required(c.location))
                rule.append(minimum.id)
    params: dict[str, Any] = {"u": u, "m": m, "rule": rule, "status": list(c.status)}
    window = sql.SQL("")
    if box is not None:
        params["bbox"] = box
        window = sql.SQL(" AND p.geom && ST_MakeEnvelope(%(bbox)s[1], %(bbox)s[2], %(bbox)s[3], %(bbox)s[4], 4490)")
    rows = fetch_dicts(conn, sql.SQL(_COVER).format(window=window, **_tables(rules)), params)
    sources = {x.id: x.source for x in c.minimums}
    features = [_feature(r["node"], r["geometry"], {
        "role": "violation", "node": r["node"], "utility": r["utility"], "rule": r["rule"],
        "source": sources.get(r["rule"], ""), "location": c.location, "required_m": r["required"],
        "measured_m": round(float(r["measured"]), 2), "pipes": list(r["pipes"])}) for r in rows]
    summary = {"violations": len(features), "location": c.location,
               "minimums": {name: req for name, req in zip(u, m, strict=True)},
               "truncated": len(features) > MAX_FEATURES}
    return PlacesResult("cover", "覆土深度检查 · Minimum cover check", {"utilities": u, "bbox": box}, summary,
                          {"violations": features[:MAX_FEATURES]}, rules.path.name)


# -- output ------------------------------------------------------------------------------------------

def _style(result: PlacesResult, role: str) -> Style:
    return result.styles.get(role) or _STYLE.get(role, DEFAULT_STYLE)


_STYLE: dict[str, Style] = {  # role -> (stroke, fill, width, radius)
    "section_line": ("#111", "none", 2.0, 0), "isolated_pipe": ("#d62728", "none", 3.0, 0),
    "burst_pipe": ("#000", "none", 5.0, 0), "valve_to_close": ("#1f77b4", "#1f77b4", 1.0, 5),
    "closed_valve": ("#555", "#fff", 1.5, 5), "customer": ("#8c564b", "#e377c299", 0.6, 0),
    "traced_pipe": ("#2ca02c", "none", 2.5, 0), "crossing": ("#d62728", "#d62728", 1.0, 4),
    "violation": ("#d62728", "#d62728", 3.0, 4),
}
_DRAW_ORDER = ("customer", "traced_pipe", "isolated_pipe", "burst_pipe", "section_line", "violation",
               "crossing", "closed_valve", "valve_to_close")


def _drawing(result: PlacesResult) -> Drawing:
    features = [f for items in result.places.values() for f in items]
    frame = MapFrame([f["geometry"] for f in features]
                     + [f["properties"].get("pipe_geometry") for f in features])
    shapes: list[Shape] = []
    for role in (*_DRAW_ORDER, *result.styles):
        for f in features:
            p = f["properties"]
            if p.get("role") != role:
                continue
            if role == "crossing" and p.get("pipe_geometry"):
                shapes += frame.shapes(p["pipe_geometry"], str(p.get("fid")))  # the crossed pipe, plain
            shapes += frame.shapes(f["geometry"], f"{f['id']} {_props_text(p)}", _style(result, role))
    return frame.drawing(shapes)


def _props_text(p: dict[str, Any]) -> str:
    return "; ".join(f"{k}={v}" for k, v in p.items() if v is not None and k not in ("role", "pipe_geometry"))


def to_html(result: PlacesResult) -> str:
    """The page of a pipeline analysis (or of the sensor warnings): its map with every role in its style."""
    present = {f["properties"].get("role") for items in result.places.values() for f in items}
    legend = [(style[0], style[0], role) for role, style in {**_STYLE, **result.styles}.items() if role in present]
    return report_html(result, _drawing(result), legend)
