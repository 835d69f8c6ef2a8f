"""Policing analyses on the sample city, each against an independent computation.

The independent side reads the stored rows (geometries as WKB), moves them to EPSG:4550 with pyproj and does
the rest itself: shapely for containment, snapping and straight distances, a plain O(V^2) Dijkstra (no heap)
over the road segments for network distances, a direct count per cell and a per-cell loop for Gi*.
"""

import math
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import psycopg
import pyproj
import pytest
import shapely

from gis.analysis import place_report
from gis.analysis import policing as po
from gis.analysis.policing_rules import PolicingRules, default_policing_rules_path, load_policing_rules
from gis.errors import ConfigError, GisError
from gis.layers import LayerRegistry
from gis.security.policy import RowRule, Within
from gis.settings import Settings

TO_4550 = pyproj.Transformer.from_crs("EPSG:4490", "EPSG:4550", always_xy=True).transform
CITY = ZoneInfo("Asia/Shanghai")
POINTS = [[123.42, 41.76], [123.395, 41.74], [123.455, 41.785], [123.38, 41.77]]


def metric(geom: shapely.Geometry) -> shapely.Geometry:
    return shapely.transform(geom, lambda xy: np.column_stack(TO_4550(xy[:, 0], xy[:, 1])))


def rules_of(settings: Settings, registry: LayerRegistry) -> PolicingRules:
    return load_policing_rules(default_policing_rules_path(settings.layers_dir), registry)


@pytest.fixture(scope="module")
def rules(settings: Settings, registry: LayerRegistry) -> PolicingRules:
    return rules_of(settings, registry)


@pytest.fixture(scope="module")
def conn(loaded_db_url: str):
    with psycopg.connect(loaded_db_url, autocommit=True) as c:
        yield c


def read(conn: psycopg.Connection, query: str) -> list[tuple]:
    """Rows whose last column is WKB, with that geometry in EPSG:4550."""
    return [(*row[:-1], metric(shapely.from_wkb(bytes(row[-1])))) for row in conn.execute(query)]


@pytest.fixture(scope="module")
def city(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    return {
        "roads": read(conn, "SELECT fid, ST_AsBinary(geom) FROM base.roads"),
        "stations": read(conn, "SELECT fid, ST_AsBinary(geom) FROM policing.police_stations"),
        "jurisdictions": read(conn, "SELECT fid, station, ST_AsBinary(geom) FROM policing.police_jurisdictions"),
        "incidents": read(conn, "SELECT fid, occurred_at, category, ST_AsBinary(geom) FROM policing.incidents"),
    }


def test_jurisdiction_of_points_matches_shapely(conn, rules, city) -> None:
    for lon, lat in POINTS:
        point = metric(shapely.Point(lon, lat))
        expected = {fid for fid, _station, geom in city["jurisdictions"] if shapely.intersects(geom, point)}
        result = po.jurisdiction(conn, rules, {"type": "Point", "coordinates": [lon, lat]})
        assert {f["id"] for f in result.places["jurisdictions"]} == expected and expected
        station = next(s for fid, s, _g in city["jurisdictions"] if fid == result.summary["jurisdiction"])
        assert result.summary["station"] == station == result.places["stations"][0]["id"]
    outside = po.jurisdiction(conn, rules, [123.0, 41.0])
    assert outside.summary["inside"] is False and not outside.places["jurisdictions"]


def plain_dijkstra(nodes: int, edges: list[tuple[int, int, float]], sources: dict[int, float]) -> list[float]:
    """The textbook O(V^2) Dijkstra: scan for the nearest unsettled node, relax its edges."""
    neighbours: list[list[tuple[int, float]]] = [[] for _ in range(nodes)]
    for a, b, w in edges:
        neighbours[a].append((b, w))
        neighbours[b].append((a, w))
    dist = [math.inf] * nodes
    for n, d in sources.items():
        dist[n] = min(dist[n], d)
    settled = [False] * nodes
    for _ in range(nodes):
        best, node = math.inf, -1
        for i in range(nodes):
            if not settled[i] and dist[i] < best:
                best, node = dist[i], i
        if node < 0:
            break
        settled[node] = True
        for other, w in neighbours[node]:
            dist[other] = min(dist[other], dist[node] + w)
    return dist


def network_distances(city: dict[str, list[tuple]], lon: float, lat: float) -> dict[str, float]:
    """Point -> every station along the roads, snapping both to their nearest segment with shapely."""
    lines = [geom for _fid, geom in city["roads"]]
    index: dict[tuple[float, float], int] = {}

    def node(xy: tuple[float, float]) -> int:
        return index.setdefault((round(xy[0], 1), round(xy[1], 1)), len(index))

    ends = [(node(line.coords[0]), node(line.coords[-1])) for line in lines]
    edges = [(a, b, line.length) for (a, b), line in zip(ends, lines, strict=True)]

    def snap(point: shapely.Point) -> tuple[int, float, float]:
        k = int(np.argmin([line.distance(point) for line in lines]))
        return k, lines[k].project(point), lines[k].distance(point)

    k, along, leg = snap(metric(shapely.Point(lon, lat)))
    a, b = ends[k]
    dist = plain_dijkstra(len(index), edges, {a: along, b: lines[k].length - along})
    out = {}
    for fid, station in city["stations"]:
        j, s_along, s_leg = snap(station)
        u, v = ends[j]
        best = min(dist[u] + s_along, dist[v] + lines[j].length - s_along)
        if j == k:
            best = min(best, abs(s_along - along))
        out[fid] = leg + best + s_leg
    return out


def test_the_sample_roads_are_a_graph(conn, rules) -> None:
    graph = po.load_graph(conn, rules)
    assert graph.shared_ends >= rules.nearest.min_shared_ends


@pytest.mark.parametrize("where", POINTS[:3])
def test_nearest_by_network_matches_a_plain_dijkstra(conn, rules, city, where) -> None:
    result = po.nearest(conn, rules, where, count=4)
    expected = network_distances(city, *where)
    ranked = sorted(expected, key=lambda fid: (expected[fid], fid))[:4]
    got = result.places["stations"]
    assert result.summary["method"] == "network"
    assert [f["id"] for f in got] == ranked
    for f in got:
        assert f["properties"]["method"] == "network"
        assert f["properties"]["distance_m"] == pytest.approx(expected[f["id"]], abs=0.5)
        assert f["properties"]["distance_m"] >= f["properties"]["straight_m"] - 0.5
    routes = [f for f in result.places["routes"] if f["properties"]["role"] == "route"]
    assert len(routes) == 4 and all(r["geometry"]["type"] in ("LineString", "MultiLineString") for r in routes)


def test_nearest_falls_back_to_straight_lines(conn, settings, registry, city) -> None:
    """A point farther from every road than snap_within_m: straight-line distances, said so."""
    rules = rules_of(settings, registry)
    rules.nearest = rules.nearest.model_copy(update={"snap_within_m": 0.001})
    lon, lat = POINTS[0]
    result = po.nearest(conn, rules, [lon, lat], count=3)
    point = metric(shapely.Point(lon, lat))
    expected = sorted(((geom.distance(point), fid) for fid, geom in city["stations"]))[:3]
    assert result.summary["method"] == "straight_line"
    assert [f["id"] for f in result.places["stations"]] == [fid for _d, fid in expected]
    for f, (d, _fid) in zip(result.places["stations"], expected, strict=True):
        assert f["properties"]["distance_m"] == pytest.approx(d, abs=0.2)


def direct_gi_star(counts: dict[tuple[int, int], int], study: set[tuple[int, int]]) -> dict[tuple[int, int], float]:
    """Gi* cell by cell from its definition (Getis & Ord 1992, as in ArcGIS's Hot Spot Analysis), over the
    study cells: weights 1 for the cell and its 8 neighbours that are study cells."""
    n = len(study)
    values = [counts.get(c, 0) for c in study]
    mean = sum(values) / n
    s = math.sqrt(sum(v * v for v in values) / n - mean * mean)
    out = {}
    for i, j in study:
        neighbours = [(a, b) for a in range(i - 1, i + 2) for b in range(j - 1, j + 2) if (a, b) in study]
        w = [1.0] * len(neighbours)
        local = sum(counts.get(c, 0) for c in neighbours)
        numerator = local - mean * sum(w)
        denominator = s * math.sqrt((n * sum(x * x for x in w) - sum(w) ** 2) / (n - 1))
        out[(i, j)] = numerator / denominator
    return out


def test_hotspot_counts_and_gi_star_match_a_direct_computation(conn, rules, registry, city) -> None:
    result = po.hotspots(conn, rules, registry, po.RowScope(), datetime="2026-01-01/2026-06-30", cell_m=400)
    cell = 400.0
    start, end = datetime(2026, 1, 1, tzinfo=CITY), datetime(2026, 7, 1, tzinfo=CITY)
    points = [geom for _fid, at, _cat, geom in city["incidents"] if start <= at < end]
    ix0, iy0 = (int(v / cell) for v in result.summary["grid_origin_m"])
    cells = {(f["properties"]["ix"], f["properties"]["iy"]): f["properties"] for f in result.places["cells"]}
    xy = shapely.get_coordinates(shapely.MultiPoint(points) if points else shapely.MultiPoint())
    direct: dict[tuple[int, int], int] = {}
    for (gx, gy), props in cells.items():
        box = shapely.box(gx * cell, gy * cell, (gx + 1) * cell, (gy + 1) * cell)
        direct[(gx - ix0, gy - iy0)] = int(shapely.contains_xy(box, xy[:, 0], xy[:, 1]).sum())
        assert props["count"] == direct[(gx - ix0, gy - iy0)], (gx, gy)
    assert result.summary["incidents"] == len(points) == sum(p["count"] for p in cells.values())
    nx = max(gx for gx, _ in cells) - ix0 + 1
    ny = max(gy for _, gy in cells) - iy0 + 1
    assert result.summary["cells"] == nx * ny
    expected = direct_gi_star(direct, {(i, j) for i in range(nx) for j in range(ny)})
    for (gx, gy), props in cells.items():
        assert props["gi_z"] == pytest.approx(expected[(gx - ix0, gy - iy0)], abs=1e-4)
        z = expected[(gx - ix0, gy - iy0)]
        assert props["role"].startswith("hot") == (z >= 1.645)
    assert result.summary["hot_cells"].get("hot_99", 0) > 0  # the sample's commercial hotspots show


def test_a_jurisdiction_scope_counts_only_its_rows_over_its_area(conn, rules, registry, city) -> None:
    """Counts from the caller's rows only, and Gi* over the cells of the caller's jurisdiction only."""
    _fid, station, area = city["jurisdictions"][2]
    rule = RowRule(within=Within(layer="police_jurisdictions", field="station", equals_claim="jurisdiction"))
    cell = 300.0
    result = po.hotspots(conn, rules, registry, po.RowScope(rule, station), cell_m=cell)
    inside = [geom for _f, _at, _c, geom in city["incidents"] if shapely.intersects(area, geom)]
    assert result.summary["incidents"] == len(inside) > 0
    minx, miny, maxx, maxy = area.bounds
    study = {(i, j) for i in range(math.floor(minx / cell), math.floor(maxx / cell) + 1)
             for j in range(math.floor(miny / cell), math.floor(maxy / cell) + 1)
             if shapely.intersects(area, shapely.box(i * cell, j * cell, (i + 1) * cell, (j + 1) * cell))}
    assert result.summary["cells"] == len(study)
    counts: dict[tuple[int, int], int] = {}
    for geom in inside:
        key = (math.floor(geom.x / cell), math.floor(geom.y / cell))
        counts[key] = counts.get(key, 0) + 1
    expected = direct_gi_star(counts, study)
    cells = {(f["properties"]["ix"], f["properties"]["iy"]): f["properties"] for f in result.places["cells"]}
    assert set(cells) <= study and {c for c, n in counts.items() if n} <= set(cells)
    for key, props in cells.items():
        assert props["count"] == counts.get(key, 0)
        assert props["gi_z"] == pytest.approx(expected[key], abs=1e-4)
    nothing = po.hotspots(conn, rules, registry, po.RowScope(rule, None))
    assert nothing.summary["incidents"] == 0 and not nothing.places["cells"]


def test_categories_and_bbox_narrow_the_count(conn, rules, registry) -> None:
    box = [123.40, 41.74, 123.44, 41.77]
    result = po.hotspots(conn, rules, registry, po.RowScope(), bbox=box, categories=["theft"], cell_m=250)
    rows = conn.execute("SELECT category, ST_X(geom), ST_Y(geom) FROM policing.incidents").fetchall()
    expected = sum(1 for cat, lon, lat in rows
                   if cat == "theft" and box[0] <= lon <= box[2] and box[1] <= lat <= box[3])
    assert result.summary["incidents"] == expected > 0
    xs, ys = TO_4550([box[0], box[2], box[0], box[2]], [box[1], box[1], box[3], box[3]])
    columns = math.floor(max(xs) / 250) - math.floor(min(xs) / 250) + 1
    rows_ = math.floor(max(ys) / 250) - math.floor(min(ys) / 250) + 1
    assert result.summary["cells"] == columns * rows_  # the grid covers the bbox, empty cells included


def test_outputs_geojson_and_html(conn, rules, registry) -> None:
    result = po.hotspots(conn, rules, registry, po.RowScope())
    collection = orjson.loads(orjson.dumps(place_report.to_geojson(result)))
    assert collection["features"] and all(f["geometry"]["type"] == "Polygon" for f in collection["features"])
    page = place_report.to_html(result, po.STYLES, po.LEGEND)
    assert "<svg" in page and "hot spot 99" in page


@pytest.mark.parametrize(("call", "parameter"), [
    (lambda c, r, g: po.nearest(c, r, [123.42, 41.76], count=0), "count"),
    (lambda c, r, g: po.nearest(c, r, {"type": "LineString", "coordinates": []}), "point"),
    (lambda c, r, g: po.hotspots(c, r, g, po.RowScope(), cell_m=5), "cell_m"),
    (lambda c, r, g: po.hotspots(c, r, g, po.RowScope(), cell_m=50, bbox=[123.0, 41.5, 123.9, 42.1]), "cell_m"),
    (lambda c, r, g: po.hotspots(c, r, g, po.RowScope(), categories=["murder"]), "categories"),
    (lambda c, r, g: po.hotspots(c, r, g, po.RowScope(), datetime="2026-13-01/.."), "datetime"),
])
def test_bad_input_names_the_parameter(conn, rules, registry, call, parameter: str) -> None:
    with pytest.raises(GisError) as caught:
        call(conn, rules, registry)
    assert getattr(caught.value, "parameter", None) == parameter


def test_a_broken_rules_file_names_the_key(tmp_path: Path, settings: Settings, registry: LayerRegistry) -> None:
    text = default_policing_rules_path(settings.layers_dir).read_text(encoding="utf-8")
    broken = tmp_path / "policing-rules.yml"
    broken.write_text(text.replace("station_field: station", "station_field: precinct"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"jurisdictions\.station_field"):
        load_policing_rules(broken, registry)
