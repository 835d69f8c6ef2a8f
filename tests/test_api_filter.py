"""OGC API Features Part 3: CQL2 text and JSON filters, checked against the same condition in SQL."""

import json

import httpx
import psycopg
import pytest
from api_models import error, features
from psycopg import sql

# (layer, CQL2 text, the same condition in SQL over the layer's current table)
CASES = [
    ("pipelines", "utility = 'gas'", "utility = 'gas'"),
    ("pipelines", "utility <> 'gas' AND diameter_mm >= 300", "utility <> 'gas' AND diameter_mm >= 300"),
    ("pipelines", "diameter_mm < 200 OR install_year > 2015", "diameter_mm < 200 OR install_year > 2015"),
    ("pipelines", "NOT (status = 'in_service')", "NOT (status = 'in_service')"),
    ("pipelines", "depth_start_m BETWEEN 1.0 AND 1.5", "depth_start_m BETWEEN 1.0 AND 1.5"),
    ("pipelines", "install_year NOT BETWEEN 1990 AND 2010", "install_year NOT BETWEEN 1990 AND 2010"),
    ("pipelines", "utility IN ('water', 'sewer', 'storm')", "utility IN ('water', 'sewer', 'storm')"),
    ("pipelines", "utility NOT IN ('water')", "utility NOT IN ('water')"),
    ("pipelines", "material IS NULL", "material IS NULL"),
    ("pipelines", "material IS NOT NULL", "material IS NOT NULL"),
    ("pipelines", "owner LIKE '沈阳%'", "owner LIKE '沈阳%'"),
    ("pipelines", "owner NOT LIKE '%公司'", "owner NOT LIKE '%公司'"),
    ("pipelines", "CASEI(utility) = CASEI('GAS')", "lower(utility) = 'gas'"),
    ("pipelines", "depth_start_m > depth_end_m", "depth_start_m > depth_end_m"),
    ("pipelines", "id = 'DL-S0000001'", "fid = 'DL-S0000001'"),
    ("pipelines", "S_INTERSECTS(geometry, BBOX(123.40, 41.74, 123.42, 41.76))",
     "ST_Intersects(geom, ST_MakeEnvelope(123.40, 41.74, 123.42, 41.76, 4490))"),
    ("buildings", "S_WITHIN(geometry, POLYGON((123.38 41.73, 123.42 41.73, 123.42 41.77, 123.38 41.77, "
     "123.38 41.73)))", "ST_Within(geom, ST_MakeEnvelope(123.38, 41.73, 123.42, 41.77, 4490))"),
    ("buildings", "S_DISJOINT(geometry, BBOX(123.38, 41.73, 123.42, 41.77))",
     "ST_Disjoint(geom, ST_MakeEnvelope(123.38, 41.73, 123.42, 41.77, 4490))"),
    ("police_jurisdictions", "S_CONTAINS(geometry, POINT(123.42 41.76))",
     "ST_Contains(geom, ST_SetSRID(ST_MakePoint(123.42, 41.76), 4490))"),
    ("pipe_nodes", "S_DWITHIN(geometry, POINT(123.42 41.76), 300)",
     "ST_DWithin(geom::geography, ST_SetSRID(ST_MakePoint(123.42, 41.76), 4490)::geography, 300)"),
    ("incidents", "T_INTERSECTS(occurred_at, INTERVAL('2026-01-01T00:00:00Z', '2026-01-31T00:00:00Z'))",
     "occurred_at BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-31T00:00:00Z'"),
    ("incidents", "T_BEFORE(occurred_at, TIMESTAMP('2026-02-01T00:00:00Z'))", "occurred_at < '2026-02-01T00:00:00Z'"),
    ("incidents", "T_AFTER(occurred_at, DATE('2026-10-01'))", "occurred_at > '2026-10-01T23:59:59.999999Z'"),
    ("incidents", "T_DURING(occurred_at, INTERVAL('2026-03-01', '..'))", "occurred_at > '2026-03-01T00:00:00Z'"),
    ("incidents", "occurred_at >= TIMESTAMP('2026-06-01T00:00:00+08:00') AND category = 'theft'",
     "occurred_at >= '2026-06-01T00:00:00+08' AND category = 'theft'"),
    ("land_use_plan", "approved_on < DATE('2020-01-01')", "approved_on < '2020-01-01'"),
    ("land_use_plan", "T_INTERSECTS(INTERVAL(valid_from, valid_to), DATE('2020-06-01'))",
     "valid_from <= '2020-06-01T23:59:59.999999Z' AND valid_to >= '2020-06-01T00:00Z'"),
]


def expected(db: psycopg.Connection, layer: str, condition: str) -> set[str]:
    schema = db.execute("SELECT table_schema FROM information_schema.tables WHERE table_name = %s",
                        (layer,)).fetchone()
    assert schema is not None
    # the condition is this module's own SQL (CASES above), the ground truth the API is compared with
    query = sql.SQL("SELECT fid FROM {} WHERE {}").format(sql.Identifier(schema[0], layer), sql.SQL(condition))
    rows = db.execute(query).fetchall()
    return {r[0] for r in rows}


def matched(client: httpx.Client, layer: str, params: dict[str, str]) -> set[str]:
    params = {"limit": "10000", **({"datetime": "../.."} if layer == "land_use_plan" else {}), **params}
    page = features(client.get(f"/collections/{layer}/items", params=params))
    assert page.link("next") is None
    return {f.id for f in page.features}


@pytest.mark.parametrize(("layer", "cql", "condition"), CASES, ids=[c[1][:60] for c in CASES])
def test_cql2_text_selects_what_sql_selects(client: httpx.Client, db: psycopg.Connection, layer: str, cql: str,
                                            condition: str) -> None:
    want = expected(db, layer, condition)
    assert matched(client, layer, {"filter": cql}) == want


def test_cases_are_not_trivial(db: psycopg.Connection) -> None:
    sizes = [len(expected(db, layer, condition)) for layer, _, condition in CASES]
    assert sum(1 for n in sizes if n > 0) >= len(CASES) - 2


JSON_CASES = [
    ("pipelines", {"op": "and", "args": [{"op": "=", "args": [{"property": "utility"}, "water"]},
                                         {"op": ">", "args": [{"property": "diameter_mm"}, 200]}]},
     "utility = 'water' AND diameter_mm > 200"),
    ("pipelines", {"op": "in", "args": [{"property": "status"}, ["abandoned", "out_of_service"]]},
     "status IN ('abandoned', 'out_of_service')"),
    ("pipelines", {"op": "between", "args": [{"property": "install_year"}, 2000, 2010]},
     "install_year BETWEEN 2000 AND 2010"),
    ("pipelines", {"op": "like", "args": [{"op": "casei", "args": [{"property": "owner"}]}, "%燃气%"]},
     "lower(owner) LIKE '%燃气%'"),
    ("pipelines", {"op": "isNull", "args": [{"property": "material"}]}, "material IS NULL"),
    ("buildings", {"op": "s_intersects", "args": [{"property": "geometry"},
                                                  {"type": "Point", "coordinates": [123.42, 41.76]}]},
     "ST_Intersects(geom, ST_SetSRID(ST_MakePoint(123.42, 41.76), 4490))"),
    ("pipelines", {"op": "s_intersects", "args": [{"property": "geometry"}, {"bbox": [123.40, 41.74, 123.42, 41.76]}]},
     "ST_Intersects(geom, ST_MakeEnvelope(123.40, 41.74, 123.42, 41.76, 4490))"),
    ("incidents", {"op": "t_intersects", "args": [{"property": "occurred_at"},
                                                  {"interval": ["2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z"]}]},
     "occurred_at BETWEEN '2026-05-01T00:00:00Z' AND '2026-05-02T00:00:00Z'"),
    ("incidents", {"op": "not", "args": [{"op": "=", "args": [{"property": "status"}, "closed"]}]},
     "NOT status = 'closed'"),
]


@pytest.mark.parametrize(("layer", "cql", "condition"), JSON_CASES, ids=[json.dumps(c[1])[:60] for c in JSON_CASES])
def test_cql2_json_selects_what_sql_selects(client: httpx.Client, db: psycopg.Connection, layer: str,
                                            cql: dict[str, object], condition: str) -> None:
    want = expected(db, layer, condition)
    assert matched(client, layer, {"filter": json.dumps(cql), "filter-lang": "cql2-json"}) == want


def test_filter_crs_reads_geometries_in_that_crs(client: httpx.Client, db: psycopg.Connection) -> None:
    row = db.execute("SELECT ST_X(g), ST_Y(g) FROM (SELECT ST_Transform(ST_SetSRID(ST_MakePoint(123.42, 41.76), "
                     "4490), 3857) g) t").fetchone()
    assert row is not None
    x, y = row
    cql = f"S_INTERSECTS(geometry, POINT({x} {y}))"
    want = expected(db, "police_jurisdictions", "ST_Intersects(geom, ST_SetSRID(ST_MakePoint(123.42, 41.76), 4490))")
    got = matched(client, "police_jurisdictions",
                  {"filter": cql, "filter-crs": "http://www.opengis.net/def/crs/EPSG/0/3857"})
    assert got == want and got


def test_filter_combines_with_bbox(client: httpx.Client, db: psycopg.Connection) -> None:
    want = expected(db, "pipelines", "utility = 'water' AND ST_Intersects(geom, "
                    "ST_MakeEnvelope(123.38, 41.73, 123.43, 41.77, 4490))")
    assert matched(client, "pipelines", {"filter": "utility = 'water'", "bbox": "123.38,41.73,123.43,41.77"}) == want


def test_filtered_pages_walk_with_the_cursor(client: httpx.Client, db: psycopg.Connection) -> None:
    ids: list[str] = []
    response = client.get("/collections/pipelines/items", params={"filter": "diameter_mm >= 300", "limit": 50})
    while True:
        page = features(response)
        ids += [f.id for f in page.features]
        nxt = page.link("next")
        if nxt is None:
            break
        response = client.get(nxt.href)
    assert sorted(ids) == sorted(expected(db, "pipelines", "diameter_mm >= 300"))


@pytest.mark.parametrize("cql", [
    "diameter_mm = 'wide'", "utility > 3", "nosuch = 1", "S_INTERSECTS(utility, POINT(1 2))",
    "T_AFTER(utility, DATE('2020-01-01'))", "utility LIKE 3", "install_year + 1 = 2000", "A_CONTAINS(x, y)",
    "ACCENTI(owner) = 1", "myfunction(owner)", "geometry = 1", "utility IN (1, 2)",
    "S_INTERSECTS(geometry, BBOX(3, 0, 1, 1))", "S_DWITHIN(geometry, POINT(1 2), -5)", "utility = 1e400",
    "T_AFTER(install_year, DATE('2020-01-01'))", "CASEI(diameter_mm) = 'a'",
    "utility = TIMESTAMP('2020-13-01T00:00:00Z')",
    "utility = 'a' AND", "(utility = 'a'", "utility = 'a''", "DATE('2020-02-30') = approved_on",
])
def test_bad_filter_is_400_naming_filter(client: httpx.Client, cql: str) -> None:
    assert error(client.get("/collections/pipelines/items", params={"filter": cql}), 400).parameter == "filter"


@pytest.mark.parametrize("cql", [
    '{"op": "=", "args": [{"property": "utility"}]}', '{"op": "and", "args": [true]}', '[1, 2]',
    '{"op": "s_intersects", "args": [{"property": "geometry"}, {"type": "Point", "coordinates": []}]}',
    '{"op": "+", "args": [1, 2]}', '{"op": "=", "args": [{"property": 5}, 1]}', '"text"',
])
def test_bad_json_filter_is_400_naming_filter(client: httpx.Client, cql: str) -> None:
    response = client.get("/collections/pipelines/items", params={"filter": cql, "filter-lang": "cql2-json"})
    assert error(response, 400).parameter == "filter"


# -- every temporal and spatial function the conformance page claims ------------------------------------------

ALLEN = {  # CQL2's definitions over closed intervals [s1, e1], [s2, e2]
    "T_AFTER": lambda s1, e1, s2, e2: s1 > e2,
    "T_BEFORE": lambda s1, e1, s2, e2: e1 < s2,
    "T_CONTAINS": lambda s1, e1, s2, e2: s1 < s2 and e1 > e2,
    "T_DISJOINT": lambda s1, e1, s2, e2: not (s1 <= e2 and e1 >= s2),
    "T_DURING": lambda s1, e1, s2, e2: s1 > s2 and e1 < e2,
    "T_EQUALS": lambda s1, e1, s2, e2: s1 == s2 and e1 == e2,
    "T_FINISHEDBY": lambda s1, e1, s2, e2: s1 < s2 and e1 == e2,
    "T_FINISHES": lambda s1, e1, s2, e2: s1 > s2 and e1 == e2,
    "T_INTERSECTS": lambda s1, e1, s2, e2: s1 <= e2 and e1 >= s2,
    "T_MEETS": lambda s1, e1, s2, e2: e1 == s2,
    "T_METBY": lambda s1, e1, s2, e2: s1 == e2,
    "T_OVERLAPPEDBY": lambda s1, e1, s2, e2: s2 < s1 < e2 < e1,
    "T_OVERLAPS": lambda s1, e1, s2, e2: s1 < s2 < e1 < e2,
    "T_STARTEDBY": lambda s1, e1, s2, e2: s1 == s2 and e1 > e2,
    "T_STARTS": lambda s1, e1, s2, e2: s1 == s2 and e1 < e2,
}


@pytest.fixture(scope="module")
def plan_validity(db: psycopg.Connection) -> list[tuple[str, object, object]]:
    return db.execute("SELECT fid, valid_from, valid_to FROM planning.land_use_plan").fetchall()


@pytest.mark.parametrize("op", sorted(ALLEN))
def test_temporal_function_on_validity_intervals(client: httpx.Client, db: psycopg.Connection,
                                                 plan_validity: list[tuple[str, object, object]], op: str) -> None:
    # the literal interval runs from one parcel's start to another parcel's end, so equality cases occur
    row = db.execute("SELECT min(valid_from), max(valid_to) FROM planning.land_use_plan").fetchone()
    assert row is not None
    start, end = row
    literal = f"INTERVAL('{start.isoformat()}', '{end.isoformat()}')"
    # a parcel still valid has no end (valid_to NULL): every relation to it is unknown, so it is not selected
    want = {fid for fid, s1, e1 in plan_validity if e1 is not None and ALLEN[op](s1, e1, start, end)}
    got = matched(client, "land_use_plan", {"filter": f"{op}(INTERVAL(valid_from, valid_to), {literal})"})
    assert got == want


SPATIAL = [
    ("buildings", "S_TOUCHES", "ST_Touches"), ("roads", "S_CROSSES", "ST_Crosses"),
    ("basic_farmland", "S_OVERLAPS", "ST_Overlaps"), ("buildings", "S_EQUALS", "ST_Equals"),
    ("buildings", "S_CONTAINS", "ST_Contains"), ("pipelines", "S_INTERSECTS", "ST_Intersects"),
]


@pytest.mark.parametrize(("layer", "function", "postgis"), SPATIAL)
def test_spatial_function_with_a_feature_geometry(client: httpx.Client, db: psycopg.Connection, layer: str,
                                                  function: str, postgis: str) -> None:
    """The literal is another layer's or the same layer's geometry, so the relation has hits."""
    first_building = "SELECT ST_AsText({}) FROM base.buildings ORDER BY fid LIMIT 1"
    probe = {"buildings": first_building.format("ST_Boundary(geom)" if function == "S_TOUCHES" else "geom"),
             "roads": "SELECT ST_AsText(ST_MakeLine(ST_PointOnSurface(a.geom), ST_PointOnSurface(b.geom))) FROM "
                      "base.roads a, base.roads b WHERE a.fid < b.fid ORDER BY a.fid, b.fid DESC LIMIT 1",
             "basic_farmland": "SELECT ST_AsText(ST_Buffer(geom, 0.002, 2)) FROM planning.basic_farmland "
                               "ORDER BY fid LIMIT 1",
             "pipelines": "SELECT ST_AsText(ST_Buffer(ST_Centroid(ST_Collect(geom)), 0.01, 2)) FROM "
                          "pipeline.pipelines"}[layer]
    row = db.execute(probe.encode()).fetchone()
    assert row is not None
    wkt = row[0]
    if function == "S_CONTAINS":
        wkt = db.execute("SELECT ST_AsText(ST_PointOnSurface(ST_GeomFromText(%s)))", (wkt,)).fetchone()[0]  # type: ignore[index]
    schema = {"buildings": "base", "roads": "base", "basic_farmland": "planning", "pipelines": "pipeline"}[layer]
    query = sql.SQL("SELECT fid FROM {} WHERE {}(geom, ST_GeomFromText(%s, 4490))").format(
        sql.Identifier(schema, layer), sql.SQL(postgis))
    want = {r[0] for r in db.execute(query, (wkt,)).fetchall()}
    assert want
    assert matched(client, layer, {"filter": f"{function}(geometry, {wkt})"}) == want


# -- semantics the differential test against cql2-rs found wrong --------------------------------------------

@pytest.mark.parametrize(("cql", "condition"), [
    ("CASEI(utility) = 'GAS'", "FALSE"),  # only the property is lowered, not the literal
    ("CASEI(utility) = 'gas'", "utility = 'gas'"),
    ("utility = CASEI('GAS')", "utility = 'gas'"),
    ("ACCENTI(utility) = 'gás'", "FALSE"),  # only the property loses its accents
    ("ACCENTI(utility) = ACCENTI('gás')", "utility = 'gas'"),
    ("ACCENTI(CASEI(utility)) LIKE ACCENTI(CASEI('WÄT%'))", "utility LIKE 'wat%'"),
    ("utility <> 'it\\'s'", "utility IS NOT NULL"),  # \' escapes a quote
])
def test_casei_accenti_and_escapes(client: httpx.Client, db: psycopg.Connection, cql: str, condition: str) -> None:
    want = expected(db, "pipelines", condition)
    assert matched(client, "pipelines", {"filter": cql}) == want
    assert want or "FALSE" in condition


@pytest.mark.parametrize(("cql", "condition"), [
    ("T_AFTER(valid_to, TIMESTAMP('2028-01-01T00:00:00Z'))", "valid_to > '2028-01-01T00:00:00Z'"),
    ("NOT T_AFTER(valid_to, TIMESTAMP('2028-01-01T00:00:00Z'))", "valid_to <= '2028-01-01T00:00:00Z'"),
    ("NOT (valid_to > TIMESTAMP('2020-01-01T00:00:00Z'))", "valid_to <= '2020-01-01T00:00:00Z'"),
    ("NOT T_METBY(INTERVAL(valid_from, valid_to), INTERVAL('2000-01-01', '2030-01-01'))",
     "valid_to IS NOT NULL AND valid_from <> '2030-01-01T00:00:00Z'"),
])
def test_null_in_a_comparison_or_temporal_function_is_unknown(client: httpx.Client, db: psycopg.Connection,
                                                              cql: str, condition: str) -> None:
    """A parcel still valid (valid_to NULL) is neither after 2028 nor not after it."""
    rows = db.execute(sql.SQL("SELECT fid FROM planning.land_use_plan WHERE {} UNION "
                              "SELECT fid FROM planning.land_use_plan_history WHERE {}").format(
        sql.SQL(condition), sql.SQL(condition))).fetchall()
    assert matched(client, "land_use_plan", {"filter": cql}) == {r[0] for r in rows}
    open_ended = db.execute("SELECT count(*) FROM planning.land_use_plan WHERE valid_to IS NULL").fetchone()
    assert open_ended is not None and open_ended[0] > 0


def test_is_null_works_on_the_geometry(client: httpx.Client, db: psycopg.Connection) -> None:
    assert matched(client, "buildings", {"filter": "geometry IS NULL"}) == set()
    assert matched(client, "buildings", {"filter": "geometry IS NOT NULL"}) == expected(db, "buildings", "TRUE")


def test_a_geojson_literal_with_a_bbox_member_means_its_geometry(client: httpx.Client, db: psycopg.Connection) -> None:
    row = db.execute("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM base.buildings "
                     "ORDER BY fid LIMIT 1) t").fetchone()
    assert row is not None
    x, y = row
    point = {"type": "Point", "coordinates": [x, y], "bbox": [x - 0.1, y - 0.1, x + 0.1, y + 0.1]}
    cql = {"op": "s_intersects", "args": [{"property": "geometry"}, point]}
    got = matched(client, "buildings", {"filter": json.dumps(cql), "filter-lang": "cql2-json"})
    want = expected(db, "buildings", f"ST_Intersects(geom, ST_SetSRID(ST_MakePoint({x!r}, {y!r}), 4490))")
    assert got == want and len(want) < len(expected(db, "buildings", "TRUE")) / 10


@pytest.mark.parametrize("crs", [None, "http://www.opengis.net/def/crs/EPSG/0/3857",
                                 "http://www.opengis.net/def/crs/EPSG/0/4490"])
def test_s_equals_finds_a_feature_by_its_geometry_as_served(client: httpx.Client, crs: str | None) -> None:
    """Served coordinates are rounded (7 decimals in degrees, centimetres in metres): equal to the stored ones."""
    params = {"limit": "3"} | ({"crs": crs} if crs else {})
    served = features(client.get("/collections/buildings/items", params=params)).features
    assert served
    for feature in served:
        geometry = feature.model_dump()["geometry"]
        cql = {"op": "s_equals", "args": [{"property": "geometry"}, geometry]}
        query = {"filter": json.dumps(cql), "filter-lang": "cql2-json"} | ({"filter-crs": crs} if crs else {})
        assert matched(client, "buildings", query) == {feature.id}
