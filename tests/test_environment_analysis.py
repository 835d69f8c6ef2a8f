"""Environmental analyses on the sample city, each against an independent computation.

The independent side reads the stored rows (plain SELECTs, geometries as WKB) and does the rest itself:
pandas for the latest values and the exceedances (with GB 3095-2012's grade II table written out here),
pyproj to EPSG:4550 and shapely for the source buffers and their overlaps.
"""

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pandas as pd
import psycopg
import pyproj
import pytest
import shapely

from gis.analysis import environment as env
from gis.analysis import place_report
from gis.analysis.environment_rules import (
    EnvironmentRules,
    default_environment_rules_path,
    load_environment_rules,
)
from gis.errors import ConfigError, GisError
from gis.layers import LayerRegistry
from gis.settings import Settings

CITY = ZoneInfo("Asia/Shanghai")
# GB 3095-2012 table 1, grade II: 24-hour means (O3: daily maximum 8-hour mean), in µg/m³ (CO mg/m³).
GRADE_II_DAILY = {"SO2": 150.0, "NO2": 80.0, "CO": 4.0, "O3": 160.0, "PM10": 150.0, "PM2.5": 75.0}
GRADE_II_ANNUAL = {"SO2": 60.0, "NO2": 40.0, "PM10": 70.0, "PM2.5": 35.0}
GRADE_II_HOURLY = {"SO2": 500.0, "NO2": 200.0, "CO": 10.0, "O3": 200.0}
TO_4550 = pyproj.Transformer.from_crs("EPSG:4490", "EPSG:4550", always_xy=True).transform


def metric(geom: shapely.Geometry) -> shapely.Geometry:
    return shapely.transform(geom, lambda xy: np.column_stack(TO_4550(xy[:, 0], xy[:, 1])))


@pytest.fixture(scope="module")
def rules(settings: Settings, registry: LayerRegistry) -> EnvironmentRules:
    return load_environment_rules(default_environment_rules_path(settings.layers_dir), registry)


@pytest.fixture(scope="module")
def conn(loaded_db_url: str):
    with psycopg.connect(loaded_db_url, autocommit=True) as c:
        yield c


@pytest.fixture(scope="module")
def observations(conn: psycopg.Connection) -> pd.DataFrame:
    rows = conn.execute("SELECT fid, station, pollutant, observed_at, value FROM environment.observations").fetchall()
    return pd.DataFrame(rows, columns=["fid", "station", "pollutant", "observed_at", "value"])


def test_the_limits_file_is_gb_3095_grade_ii(rules: EnvironmentRules) -> None:
    table = {(lim.pollutant, lim.period): lim.limit for lim in rules.air_quality.limits}
    expected = ({(p, "8h" if p == "O3" else "24h"): v for p, v in GRADE_II_DAILY.items()}
                | {(p, "annual"): v for p, v in GRADE_II_ANNUAL.items()}
                | {(p, "1h"): v for p, v in GRADE_II_HOURLY.items()})
    assert table == expected
    assert {lim.pollutant: lim.unit for lim in rules.air_quality.limits}["CO"] == "mg/m³"


def test_latest_matches_a_pandas_groupby(conn, rules, observations) -> None:
    as_of = datetime(2026, 3, 10, 12, tzinfo=CITY)
    result = env.latest(conn, rules, datetime=as_of.isoformat())
    before = observations[observations.observed_at <= as_of]
    expected = before.loc[before.groupby(["station", "pollutant"]).observed_at.idxmax()]
    got = {(f["id"], p): v for f in result.places["stations"] for p, v in f["properties"]["latest"].items()}
    assert len(got) == len(expected) > 0
    for row in expected.itertuples():
        value = got[(row.station, row.pollutant)]
        assert value["value"] == pytest.approx(row.value)
        assert datetime.fromisoformat(value["observed_at"]) == row.observed_at
        limit = GRADE_II_DAILY.get(row.pollutant)
        assert value["exceeds"] == (limit is not None and row.value > limit)


def test_exceedances_match_a_pandas_count(conn, rules, observations) -> None:
    window = "2025-12-01/2026-02-28"
    result = env.exceedances(conn, rules, datetime=window)
    start, end = datetime(2025, 12, 1, tzinfo=CITY), datetime(2026, 3, 1, tzinfo=CITY)
    inside = observations[(observations.observed_at >= start) & (observations.observed_at < end)
                          & observations.pollutant.isin(list(GRADE_II_DAILY))]
    over = inside[inside.value > inside.pollutant.map(GRADE_II_DAILY)]
    assert result.summary["observations_checked"] == len(inside)
    assert result.summary["exceedances"] == len(over) > 0
    assert result.summary["by_pollutant"] == {p: int((over.pollutant == p).sum()) for p in sorted(GRADE_II_DAILY)}
    assert {f["id"] for f in result.places["exceedances"]} == set(over.fid)
    for f in result.places["exceedances"][:50]:
        p = f["properties"]
        assert p["ratio"] == pytest.approx(p["value"] / GRADE_II_DAILY[p["pollutant"]], abs=1e-3)
    not_evaluated = {(n["pollutant"], n["period"]) for n in result.summary["not_evaluated"]}
    assert not_evaluated == {(p, "annual") for p in GRADE_II_ANNUAL} | {(p, "1h") for p in GRADE_II_HOURLY}


def test_exceedances_filter_stations_and_pollutants(conn, rules, observations) -> None:
    station = sorted(observations.station.unique())[0]
    result = env.exceedances(conn, rules, stations=[station], pollutants=["PM2.5"])
    rows = observations[(observations.station == station) & (observations.pollutant == "PM2.5")]
    assert result.summary["observations_checked"] == len(rows)
    assert result.summary["exceedances"] == int((rows.value > 75).sum())


def test_source_buffers_match_shapely(conn, rules) -> None:
    result = env.source_buffers(conn, rules)

    def read(query: str) -> list[tuple[str, str, shapely.Geometry]]:
        return [(fid, extra, metric(shapely.from_wkb(bytes(wkb)))) for fid, extra, wkb in conn.execute(query)]

    sources = read("SELECT fid, emission_class, ST_AsBinary(geom) FROM environment.pollution_sources")
    industries = dict(conn.execute("SELECT fid, industry FROM environment.pollution_sources").fetchall())
    redline = read("SELECT fid, level, ST_AsBinary(geom) FROM planning.ecological_redline")
    water = read("SELECT fid, kind, ST_AsBinary(geom) FROM base.water_bodies")
    distances = {"key": 1000.0, "general": 500.0, "minor": 200.0}
    by_fid = {f["id"]: f["properties"] for f in result.places["sources"]}
    assert set(by_fid) == {s[0] for s in sources}
    reaching_red = reaching_water = 0
    for fid, emission, point in sources:
        metres = 300.0 if industries[fid] == "污水处理及其再生利用" else distances[emission]
        zone = shapely.buffer(point, metres, quad_segs=32)
        red_hits = {f: shapely.area(shapely.intersection(zone, g)) for f, _level, g in redline
                    if shapely.intersects(zone, g)}
        water_hits = {f: shapely.area(shapely.intersection(zone, g)) for f, _kind, g in water
                      if shapely.intersects(zone, g)}
        got = by_fid[fid]
        assert got["buffer_m"] == metres
        assert set(got["redline"]) == set(red_hits), fid
        assert set(got["water"]) == set(water_hits), fid
        assert got["redline_area_m2"] == pytest.approx(sum(red_hits.values()), rel=1e-3, abs=1.0)
        assert got["water_area_m2"] == pytest.approx(sum(water_hits.values()), rel=1e-3, abs=1.0)
        reaching_red += bool(red_hits)
        reaching_water += bool(water_hits)
    assert result.summary["sources_reaching_redline"] == reaching_red
    assert result.summary["sources_reaching_water"] == reaching_water > 0  # the sewage works sit by the river


def test_outputs_geojson_and_html(conn, rules) -> None:
    result = env.source_buffers(conn, rules, emission_classes=["key"])
    collection = orjson.loads(orjson.dumps(place_report.to_geojson(result)))
    roles = {f["properties"]["role"] for f in collection["features"]}
    assert {"source", "buffer_in_conflict"} <= roles
    assert all("crs" not in f["geometry"] for f in collection["features"])  # RFC 7946: no crs member
    page = place_report.to_html(result, env.STYLES, env.LEGEND)
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and page.count("<path") >= len(
        result.places["buffers"])


@pytest.mark.parametrize(("call", "parameter"), [
    (lambda c, r: env.exceedances(c, r, datetime="yesterday"), "datetime"),
    (lambda c, r: env.latest(c, r, pollutants=["PM1"]), "pollutants"),
    (lambda c, r: env.source_buffers(c, r, emission_classes=["huge"]), "emission_classes"),
    (lambda c, r: env.latest(c, r, stations="SY-AIR-01"), "stations"),
])
def test_bad_input_names_the_parameter(conn, rules, call, parameter: str) -> None:
    with pytest.raises(GisError) as caught:
        call(conn, rules)
    assert getattr(caught.value, "parameter", None) == parameter


def test_a_broken_rules_file_names_the_key(tmp_path: Path, settings: Settings, registry: LayerRegistry) -> None:
    text = default_environment_rules_path(settings.layers_dir).read_text(encoding="utf-8")
    broken = tmp_path / "environment-rules.yml"
    broken.write_text(text.replace("{pollutant: NO2, period: 24h", "{pollutant: NOX, period: 24h"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"air_quality\.limits\[4\]\.pollutant"):
        load_environment_rules(broken, registry)
    broken.write_text(text.replace("    minor: 200\n", ""), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"by_emission_class: no distance for minor"):
        load_environment_rules(broken, registry)
