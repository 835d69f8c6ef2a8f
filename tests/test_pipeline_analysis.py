"""Pipeline analyses on the sample city, each against an independent computation.

The independent side reads the stored attributes and geometries (WKB) and does the rest itself: a
brute-force graph search in Python for valve sets and traces, pyproj to EPSG:4550 and shapely for
distances, crossings and cover.
"""

import math
from collections import defaultdict, deque
from pathlib import Path

import numpy as np
import psycopg
import pyproj
import pytest
import shapely

from gis.analysis import pipeline as pl
from gis.analysis import place_report
from gis.analysis.pipeline_rules import PipelineRules, default_pipeline_rules_path, load_pipeline_rules
from gis.errors import ConfigError
from gis.layers import LayerRegistry
from gis.settings import Settings

TO_4550 = pyproj.Transformer.from_crs("EPSG:4490", "EPSG:4550", always_xy=True).transform


def transform(fn, geom):
    return shapely.transform(geom, lambda xy: np.column_stack(fn(xy[:, 0], xy[:, 1])))


@pytest.fixture(scope="module")
def rules(settings: Settings, registry: LayerRegistry) -> PipelineRules:
    return load_pipeline_rules(default_pipeline_rules_path(settings.layers_dir), registry)


@pytest.fixture(scope="module")
def conn(loaded_db_url: str):
    with psycopg.connect(loaded_db_url, autocommit=True) as c:
        yield c


@pytest.fixture(scope="module")
def city(conn: psycopg.Connection) -> dict:
    pipes = {}
    for fid, utility, status, a, b, dmm, pc, d0, d1, wkb in conn.execute(
            "SELECT fid, utility, status, from_node, to_node, diameter_mm, pressure_class, depth_start_m, "
            "depth_end_m, ST_AsBinary(geom) FROM pipeline.pipelines"):
        geom = shapely.from_wkb(bytes(wkb))
        pipes[fid] = {"utility": utility, "status": status, "a": a, "b": b, "d": dmm, "pc": pc, "d0": d0, "d1": d1,
                      "geom": geom, "m": transform(TO_4550, geom)}
    nodes = {fid: (t, s) for fid, t, s in conn.execute("SELECT fid, node_type, state FROM pipeline.pipe_nodes")}
    buildings = {fid: transform(TO_4550, shapely.from_wkb(bytes(w)))
                 for fid, w in conn.execute("SELECT fid, ST_AsBinary(geom) FROM base.buildings")}
    incident = defaultdict(list)
    for fid, p in pipes.items():
        incident[p["a"]].append(fid)
        incident[p["b"]].append(fid)
    return {"pipes": pipes, "nodes": nodes, "buildings": buildings, "incident": incident}


def brute_burst(city: dict, fid: str) -> tuple[set, set, set]:
    """(valves to close, closed valves met, isolated pipes) by breadth-first search in Python."""
    pipes, nodes, incident = city["pipes"], city["nodes"], city["incident"]
    to_close, closed, isolated = set(), set(), {fid}
    seen = set()
    queue = deque([pipes[fid]["a"], pipes[fid]["b"]])
    while queue:
        node = queue.popleft()
        if node in seen:
            continue
        seen.add(node)
        kind, state = nodes.get(node, (None, None))
        if kind == "valve":
            (closed if state == "closed" else to_close).add(node)
            continue
        for p in incident[node]:
            if pipes[p]["status"] == "in_service":
                isolated.add(p)
                queue.extend((pipes[p]["a"], pipes[p]["b"]))
    return to_close, closed, isolated


def _burst_cases(city: dict) -> list[str]:
    pipes, nodes = city["pipes"], city["nodes"]
    live = sorted(f for f, p in pipes.items()
                  if p["utility"] in ("water", "gas", "heat") and p["status"] == "in_service")
    cases = live[::97][:12]
    # next to a closed valve, and next to a pipe out of service
    cases += [f for f in live if nodes.get(pipes[f]["a"], ("", ""))[1] == "closed"
              or nodes.get(pipes[f]["b"], ("", ""))[1] == "closed"][:3]
    out = {n for p in pipes.values() if p["status"] != "in_service" for n in (p["a"], p["b"])}
    cases += [f for f in live if pipes[f]["a"] in out or pipes[f]["b"] in out][:3]
    return cases


def test_burst_matches_a_brute_force_search(conn, rules, city) -> None:
    cases = _burst_cases(city)
    assert len(cases) >= 15
    saw_closed = False
    for fid in cases:
        result = pl.burst(conn, rules, pipe=fid)
        to_close, closed, isolated = brute_burst(city, fid)
        assert {f["id"] for f in result.places["valves_to_close"]} == to_close, fid
        assert {f["id"] for f in result.places["closed_valves"]} == closed, fid
        assert {f["id"] for f in result.places["isolated_pipes"]} == isolated, fid
        saw_closed |= bool(closed)
        lines = shapely.union_all([city["pipes"][p]["m"] for p in isolated])
        customers = {b for b, g in city["buildings"].items() if g.distance(lines) <= rules.network.customers_within_m}
        got = {f["id"] for f in result.places["customers"]}
        near_edge = {b for b in customers ^ got
                     if abs(city["buildings"][b].distance(lines) - rules.network.customers_within_m) < 0.05}
        assert customers ^ got <= near_edge, fid
    assert saw_closed, "no case met a closed valve"


def test_burst_from_a_point_snaps_to_the_nearest_pipe(conn, rules, city) -> None:
    fid = _burst_cases(city)[0]
    mid = city["pipes"][fid]["geom"].interpolate(0.5, normalized=True)
    result = pl.burst(conn, rules, point={"type": "Point", "coordinates": [mid.x, mid.y]})
    assert result.summary["pipe"] == fid and result.summary["snapped_m"] < 0.5
    with pytest.raises(pl.InvalidInput):
        pl.burst(conn, rules, point=[0.0, 0.0])


@pytest.mark.parametrize("direction", ["downstream", "upstream", "both"])
def test_trace_matches_a_brute_force_search(conn, rules, city, direction) -> None:
    pipes, nodes, incident = city["pipes"], city["nodes"], city["incident"]
    for fid in _burst_cases(city)[:6]:
        found, seen = {fid}, set()
        start = {"downstream": [pipes[fid]["b"]], "upstream": [pipes[fid]["a"]],
                 "both": [pipes[fid]["a"], pipes[fid]["b"]]}[direction]
        queue = deque(start)
        while queue:
            node = queue.popleft()
            if node in seen or nodes.get(node) == ("valve", "closed"):
                continue
            seen.add(node)
            for p in incident[node]:
                q = pipes[p]
                if q["status"] != "in_service":
                    continue
                if direction in ("downstream", "both") and q["a"] == node:
                    found.add(p)
                    queue.append(q["b"])
                if direction in ("upstream", "both") and q["b"] == node:
                    found.add(p)
                    queue.append(q["a"])
        result = pl.trace(conn, rules, pipe=fid, direction=direction)
        assert result.summary["pipes"] == len(found), fid
        if not result.summary["truncated"]:
            assert {f["id"] for f in result.places["traced_pipes"]} == found, fid


def test_cross_section_orders_crossings_along_the_line(conn, rules, city) -> None:
    # across the street of a water main, through its midpoint, 40 m each side
    fid = _burst_cases(city)[0]
    m = city["pipes"][fid]["m"]
    mid = m.interpolate(0.5, normalized=True)
    (x0, y0), (x1, y1) = m.coords[0], m.coords[-1]
    length = math.hypot(x1 - x0, y1 - y0)
    nx, ny = -(y1 - y0) / length, (x1 - x0) / length
    back = pyproj.Transformer.from_crs("EPSG:4550", "EPSG:4490", always_xy=True).transform
    ends = [back(mid.x - 40 * nx, mid.y - 40 * ny), back(mid.x + 40 * nx, mid.y + 40 * ny)]
    line = shapely.LineString(ends)
    result = pl.cross_section(conn, rules, {"type": "LineString", "coordinates": [list(e) for e in ends]})
    line_m = transform(TO_4550, line)
    expected = []
    for f, p in city["pipes"].items():
        if p["status"] != "abandoned" and p["geom"].intersects(line):
            pt = transform(TO_4550, p["geom"].intersection(line))
            frac = p["m"].project(pt) / p["m"].length
            expected.append((line_m.project(pt), f, p["d0"] + frac * (p["d1"] - p["d0"])))
    expected.sort()
    got = [(c["properties"]["along_m"], c["properties"]["fid"], c["properties"]["depth_m"])
           for c in result.places["crossings"]]
    assert [f for _, f, _ in got] == [f for _, f, _ in expected] and fid in [f for _, f, _ in got]
    for (a1, _, d1), (a2, _, d2) in zip(got, expected, strict=True):
        assert abs(a1 - a2) < 0.05 and abs(d1 - d2) < 0.011
    assert len(got) >= 5


def _side(p: dict, side) -> bool:
    return (p["utility"] in side.utility and (not side.pressure_class or p["pc"] in side.pressure_class)
            and (side.diameter_mm_min is None or (p["d"] or 0) >= side.diameter_mm_min)
            and (side.diameter_mm_max is None or (p["d"] or 0) <= side.diameter_mm_max))


def _azimuth(g) -> float:
    (x0, y0), (x1, y1) = g.coords[0], g.coords[-1]
    return math.atan2(x1 - x0, y1 - y0)


def test_clearance_matches_shapely_distances(conn, rules, city) -> None:
    result = pl.clearance(conn, rules)
    got = {(v["properties"]["rule"], v["properties"]["a_fid"], v["properties"]["b_fid"]): v["properties"]["measured_m"]
           for v in result.places["violations"]}
    pipes = city["pipes"]
    status = set(rules.clearances.status)
    cos_max = math.cos(math.radians(rules.clearances.max_angle_deg))
    expected = {}
    for pair in rules.clearances.pairs:
        bs = [f for f, p in pipes.items() if p["status"] in status and _side(p, pair.b)]
        tree = shapely.STRtree([pipes[f]["m"] for f in bs])
        if pair.a.buildings:
            a_items = list(city["buildings"].items())
        else:
            a_items = [(f, p["m"]) for f, p in pipes.items() if p["status"] in status and _side(p, pair.a)]
        for fa, ga in a_items:
            for j in tree.query(ga, predicate="dwithin", distance=pair.min_m):
                fb = bs[j]
                gb = pipes[fb]["m"]
                if not pair.a.buildings:
                    if pipes[fa]["geom"].intersects(pipes[fb]["geom"]):
                        continue
                    if abs(math.cos(_azimuth(ga) - _azimuth(gb))) < cos_max:
                        continue
                d = ga.distance(gb)
                if d < pair.min_m:
                    expected[(pair.id, fa, fb)] = d
    assert len(expected) >= 20
    # a pair right at the limit may fall either way between two implementations
    limit = {p.id: p.min_m for p in rules.clearances.pairs}
    borderline = {k for k in set(got) ^ set(expected)
                  if abs(expected.get(k, got.get(k, 0.0)) - limit[k[0]]) < 1e-3}
    assert set(got) ^ set(expected) <= borderline
    for k in set(got) & set(expected):
        assert abs(got[k] - expected[k]) < 0.01, k
    assert {v["properties"]["required_m"] for v in result.places["violations"]} <= {
        p.min_m for p in rules.clearances.pairs}


def test_cover_matches_a_python_scan(conn, rules, city) -> None:
    result = pl.cover(conn, rules)
    required = {u: m.required(rules.cover.location) for m in rules.cover.minimums for u in m.utility}
    status = set(rules.cover.status)
    shallow: dict[str, float] = {}
    for p in city["pipes"].values():
        if p["utility"] in required and p["status"] in status:
            for node, depth in ((p["a"], p["d0"]), (p["b"], p["d1"])):
                if depth is not None and depth < required[p["utility"]]:
                    shallow[node] = min(depth, shallow.get(node, math.inf))
    got = {f["properties"]["node"]: f["properties"]["measured_m"] for f in result.places["violations"]}
    assert got == pytest.approx(shallow, abs=0.005) and len(got) >= 5
    assert {f["properties"]["utility"] for f in result.places["violations"]} <= set(required)


def test_outputs_geojson_and_html(conn, rules, city) -> None:
    result = pl.burst(conn, rules, pipe=_burst_cases(city)[0])
    gj = place_report.to_geojson(result)
    assert gj["type"] == "FeatureCollection" and all(f["geometry"] for f in gj["features"])
    roles = {f["properties"]["role"] for f in gj["features"]}
    assert {"burst_pipe", "isolated_pipe", "valve_to_close"} <= roles
    page = pl.to_html(result)
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<path" in page and "<circle" in page
    assert "<script" not in page and 'src="http' not in page and 'href="http' not in page  # self-contained
    assert place_report.to_json(result)["summary"]["valves_to_close"] == len(result.places["valves_to_close"])


def test_network_indexes_exist(conn) -> None:
    names = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'pipeline'")}
    assert {"pipelines_from_node", "pipelines_to_node"} <= names


def test_a_broken_rules_file_names_the_key(tmp_path: Path, settings: Settings, registry: LayerRegistry) -> None:
    text = default_pipeline_rules_path(settings.layers_dir).read_text(encoding="utf-8")
    bad = tmp_path / "pipeline-rules.yml"
    bad.write_text(text.replace("a: {utility: [telecom]}", "a: {utility: [telegraph]}"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"clearances.pairs\[7\].a.utility.*telegraph"):
        load_pipeline_rules(bad, registry)
    bad.write_text(text.replace("min_m: 2.5", "min_m: -1"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"clearances.pairs\[0\].min_m"):
        load_pipeline_rules(bad, registry)
