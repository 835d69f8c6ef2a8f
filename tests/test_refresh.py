"""Refresh jobs against a real PostGIS: loading, history, unchanged reruns, bad deliveries, kills."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import pyogrio
import pytest
import shapely
from psycopg import sql

from gis import identifiers as ids
from gis.crs import gcj02_to_wgs84
from gis.errors import SourceError, ValidationFailed
from gis.layers import LayerRegistry, LayerSpec
from gis.refresh.runner import RefreshRequest, RefreshResult, run_refresh
from gis.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _source_count(spec: LayerSpec, settings: Settings) -> int:
    path = settings.samples_dir / spec.source.path
    if spec.source.format.value == "csv":
        with path.open(encoding="utf-8") as stream:
            return sum(1 for _ in csv.reader(stream)) - 1
    return int(pyogrio.read_info(path, layer=spec.source.layer)["features"])


def fingerprint(url: str, spec: LayerSpec) -> tuple[object, ...]:
    """Everything a reader could see of the layer, history included, plus each row's physical version."""
    with psycopg.connect(url) as conn:
        current = conn.execute(sql.SQL(
            "SELECT count(*), md5(string_agg(fid || encode(row_hash, 'hex') || refresh_id || xmin::text, ',' "
            "ORDER BY fid)) FROM {}").format(ids.current_table(spec))).fetchone()
        history = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ids.history_table(spec))).fetchone()
        stats = conn.execute("SELECT row_count, changed_refresh_id FROM ops.layer_stats WHERE layer_id = %s",
                             (spec.id,)).fetchone()
    return (current, history, stats)


def refresh(url: str, spec: LayerSpec, settings: Settings, source: Path | None = None,
            force: bool = False) -> RefreshResult:
    path = source or settings.samples_dir / spec.source.path
    return run_refresh(url, RefreshRequest(spec, path, settings.city_extent, settings.rejects_dir, force, False))


def test_every_layer_is_loaded_with_every_delivered_row(
    loaded_db_url: str, registry: LayerRegistry, settings: Settings
) -> None:
    with psycopg.connect(loaded_db_url) as conn:
        stats = dict(conn.execute("SELECT layer_id, row_count FROM ops.layer_stats").fetchall())
        for spec in registry.values():
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ids.current_table(spec))).fetchone()
            expected = _source_count(spec, settings)
            assert expected > 0, spec.id
            assert rows == (expected,), spec.id
            assert stats[spec.id] == expected, spec.id


def test_every_layer_table_is_in_cgcs2000(loaded_db_url: str, registry: LayerRegistry) -> None:
    with psycopg.connect(loaded_db_url) as conn:
        srids = dict(conn.execute(
            "SELECT f_table_schema || '.' || f_table_name, srid FROM geometry_columns "
            "WHERE f_table_schema IN ('base', 'pipeline', 'planning', 'environment', 'policing')").fetchall())
    expected = {f"{s.domain.value}.{t}" for s in registry.values() for t in (s.id, s.history_table)}
    assert set(srids) == expected
    assert set(srids.values()) == {4490}


def test_gcj02_delivery_is_moved_back_by_the_amap_offset(loaded_db_url: str) -> None:
    """Stored districts sit west and south of the GCJ-02 originals, by a few hundred metres."""
    original = gpd.read_file(ROOT / "data-samples/reference/shenyang_admin_boundaries_gcj02.geojson")
    heping = original[original["adcode"] == "210102"].geometry.iloc[0]
    with psycopg.connect(loaded_db_url) as conn:
        row = conn.execute("SELECT ST_AsBinary(geom) FROM base.admin_districts WHERE fid = '210102'").fetchone()
    assert row is not None
    stored = shapely.from_wkb(row[0])
    expected = shapely.transform(heping, gcj02_to_wgs84)
    assert stored.centroid.distance(expected.centroid) < 1e-7
    dx, dy = heping.centroid.x - stored.centroid.x, heping.centroid.y - stored.centroid.y
    assert 0.003 < dx < 0.009 and 0.001 < dy < 0.005


def test_plan_parcels_can_take_effect_in_the_future(loaded_db_url: str) -> None:
    with psycopg.connect(loaded_db_url) as conn:
        future = conn.execute("SELECT count(*) FROM planning.land_use_plan WHERE valid_from > now()").fetchone()
    assert future and future[0] > 0


def test_unchanged_delivery_is_recognised_and_writes_no_row(
    clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings
) -> None:
    url, spec = clone_db(), registry["roads"]
    before = fingerprint(url, spec)
    result = refresh(url, spec, settings)
    assert result.source_unchanged
    assert fingerprint(url, spec) == before


def test_forced_rerun_compares_rows_and_rewrites_none(
    clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings
) -> None:
    url, spec = clone_db(), registry["pipelines"]
    before = fingerprint(url, spec)
    result = refresh(url, spec, settings, force=True)
    assert (result.counts.inserted, result.counts.updated, result.counts.closed) == (0, 0, 0)
    assert result.counts.unchanged == before[0][0]  # type: ignore[index]
    assert fingerprint(url, spec)[:2] == before[:2]


def _changed_stations(settings: Settings, spec: LayerSpec, out: Path) -> tuple[str, str, str]:
    """The police stations delivery with one renamed, one dropped and one added; returns their fids."""
    frame = gpd.read_file(settings.samples_dir / spec.source.path)
    renamed, dropped = str(frame.loc[0, spec.source.fid]), str(frame.loc[1, spec.source.fid])
    frame.loc[0, "name"] = "改名派出所"
    added = frame.iloc[[2]].copy()
    added[spec.source.fid] = "NEW-0001"
    frame = gpd.GeoDataFrame(
        pd.concat([frame.drop(index=1), added], ignore_index=True), geometry=frame.geometry.name, crs=frame.crs)
    frame.to_file(out, driver="GeoJSON")
    return renamed, dropped, "NEW-0001"


def test_changed_delivery_keeps_old_versions_in_history(
    clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, tmp_path: Path
) -> None:
    url, spec = clone_db(), registry["police_stations"]
    renamed, dropped, added = _changed_stations(settings, spec, tmp_path / "stations.geojson")
    with psycopg.connect(url) as conn:
        before_time = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        old_name = conn.execute("SELECT name FROM policing.police_stations WHERE fid = %s", (renamed,)).fetchone()
    time.sleep(0.05)
    result = refresh(url, spec, settings, source=tmp_path / "stations.geojson")
    assert (result.counts.inserted, result.counts.updated, result.counts.closed) == (1, 1, 1)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT name FROM policing.police_stations WHERE fid = %s",
                            (renamed,)).fetchone() == ("改名派出所",)
        assert conn.execute("SELECT 1 FROM policing.police_stations WHERE fid = %s", (dropped,)).fetchone() is None
        assert conn.execute("SELECT 1 FROM policing.police_stations WHERE fid = %s", (added,)).fetchone()
        history = conn.execute(
            "SELECT fid, name FROM policing.police_stations_history WHERE valid_from <= %s AND valid_to > %s "
            "ORDER BY fid", (before_time, before_time)).fetchall()
    assert sorted(fid for fid, _ in history) == sorted([renamed, dropped])
    assert (renamed, old_name[0]) in history  # type: ignore[index]


def _write_geojson(path: Path, features: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return path


def _water(fid: str, name: str, kind: str, geometry: dict[str, object] | None) -> dict[str, object]:
    return {"type": "Feature", "properties": {"id": fid, "name": name, "kind": kind}, "geometry": geometry}


SQUARE = {"type": "Polygon", "coordinates": [[[123.40, 41.80], [123.41, 41.80], [123.41, 41.81],
                                             [123.40, 41.81], [123.40, 41.80]]]}
BOWTIE = {"type": "Polygon", "coordinates": [[[123.40, 41.80], [123.41, 41.81], [123.41, 41.80],
                                             [123.40, 41.81], [123.40, 41.80]]]}
# A square with a zero-width spike: invalid, and repairable into one polygon.
SPIKE = {"type": "Polygon", "coordinates": [[[123.40, 41.80], [123.41, 41.80], [123.41, 41.81], [123.405, 41.81],
                                            [123.405, 41.815], [123.405, 41.81], [123.40, 41.81], [123.40, 41.80]]]}
FAR_AWAY = {"type": "Polygon", "coordinates": [[[116.40, 39.90], [116.41, 39.90], [116.41, 39.91],
                                               [116.40, 39.90]]]}
A_POINT = {"type": "Point", "coordinates": [123.40, 41.80]}

BAD_ROWS = {
    "duplicate_fid": ([_water("W1", "甲", "lake", SQUARE), _water("W1", "乙", "lake", SQUARE)],
                      "appears more than once"),
    "coded_value_not_allowed": ([_water("W1", "甲", "ocean", SQUARE)], "kind: 'ocean' is not one of"),
    "required_value_missing": ([_water("W1", None, "lake", SQUARE)], "name: required, missing"),  # type: ignore[arg-type]
    "no_geometry": ([_water("W1", "甲", "lake", None)], "no geometry"),
    "wrong_geometry_type": ([_water("W1", "甲", "lake", A_POINT)], "geometry is a Point, layer takes Polygon"),
    "bowtie_repairs_into_two_parts": ([_water("W1", "甲", "lake", BOWTIE)], "2 parts, layer takes a single Polygon"),
    "outside_the_city": ([_water("W1", "甲", "lake", FAR_AWAY)], "outside the city's extent"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_rows_reject_the_delivery_list_the_rows_and_change_nothing(
    case: str, clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, tmp_path: Path
) -> None:
    url, spec = clone_db(), registry["water_bodies"]
    features, reason = BAD_ROWS[case]
    good = [_water(f"OK{i}", "好", "lake", SQUARE) for i in range(3)]
    source = _write_geojson(tmp_path / "water.geojson", good + features)
    before = fingerprint(url, spec)
    with pytest.raises(ValidationFailed, match=reason) as failure:
        refresh(url, spec, settings, source=source)
    assert fingerprint(url, spec) == before
    with open(failure.value.rejects_path or "", encoding="utf-8") as stream:
        rejected = list(csv.DictReader(stream))
    assert rejected and all(reason in row["problem"] for row in rejected)
    assert {row["source_row"] for row in rejected} <= {"4", "5"}  # the bad rows follow the three good ones


def test_duplicate_fids_are_rejected_in_a_first_load_too(
    clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, tmp_path: Path
) -> None:
    """Into an empty layer rows are copied straight in; a repeated fid still rejects the delivery."""
    url, spec = clone_db(), registry["water_bodies"]
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM base.water_bodies")
    source = _write_geojson(tmp_path / "water.geojson", [_water("W1", "甲", "lake", SQUARE),
                                                          _water("W2", "乙", "lake", SQUARE),
                                                          _water("W1", "丙", "lake", SQUARE)])
    with pytest.raises(ValidationFailed, match="appears more than once") as failure:
        refresh(url, spec, settings, source=source)
    with open(failure.value.rejects_path or "", encoding="utf-8") as stream:
        assert [row["source_row"] for row in csv.DictReader(stream)] == ["1", "3"]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM base.water_bodies").fetchone() == (0,)


def test_self_intersecting_polygon_is_repaired_not_rejected(
    clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, tmp_path: Path
) -> None:
    url, spec = clone_db(), registry["water_bodies"]
    assert not shapely.geometry.shape(SPIKE).is_valid
    source = _write_geojson(tmp_path / "water.geojson", [_water("SPK", "尖角湖", "lake", SPIKE)])
    result = refresh(url, spec, settings, source=source)
    assert result.counts.inserted == 1
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT ST_IsValid(geom), ST_GeometryType(geom), ST_Area(geom) "
                              "FROM base.water_bodies").fetchall()
    assert len(stored) == 1 and stored[0][:2] == (True, "ST_Polygon")
    assert stored[0][2] == pytest.approx(0.0001, rel=1e-6)  # the square's area: the spike had none


def test_missing_file_is_one_clear_error(clone_db: Callable[[], str], registry: LayerRegistry,
                                          settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="source file not found"):
        refresh(clone_db(), registry["roads"], settings, source=tmp_path / "nothing.shp")


def test_corrupt_file_is_one_clear_error_and_changes_nothing(
    clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, tmp_path: Path
) -> None:
    url, spec = clone_db(), registry["buildings"]
    corrupt = tmp_path / "buildings.gpkg"
    corrupt.write_bytes(b"this is not a geopackage" * 100)
    before = fingerprint(url, spec)
    with pytest.raises(SourceError, match="not a readable gpkg file"):
        refresh(url, spec, settings, source=corrupt)
    assert fingerprint(url, spec) == before


def test_wrong_schema_names_the_missing_column(
    clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, tmp_path: Path
) -> None:
    feature = {"type": "Feature", "properties": {"id": "W1", "title": "x"}, "geometry": SQUARE}
    source = _write_geojson(tmp_path / "water.geojson", [feature])
    with pytest.raises(SourceError, match=r"wrong schema .* no column 'name', 'kind'"):
        refresh(clone_db(), registry["water_bodies"], settings, source=source)


def test_unknown_crs_is_one_clear_error(clone_db: Callable[[], str], registry: LayerRegistry,
                                        settings: Settings) -> None:
    spec = registry["water_bodies"]
    broken = spec.model_copy(update={"source": spec.source.model_copy(update={"crs": "EPSG:999999"})})
    with pytest.raises(SourceError, match="unknown CRS 'EPSG:999999'"):
        refresh(clone_db(), broken, settings)


def test_failed_refresh_is_logged(clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings,
                                  tmp_path: Path) -> None:
    url = clone_db()
    with pytest.raises(SourceError):
        refresh(url, registry["roads"], settings, source=tmp_path / "nothing.shp")
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status, message FROM ops.refresh_log WHERE layer_id = 'roads' "
                           "ORDER BY refresh_id DESC LIMIT 1").fetchone()
    assert row is not None and row[0] == "failed" and "not found" in row[1]


def _gis(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIS_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "gis.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300, check=False)


def test_cli_bad_delivery_exits_non_zero_with_one_line(clone_db: Callable[[], str], tmp_path: Path) -> None:
    bad = tmp_path / "water.geojson"
    bad.write_text("{not json", encoding="utf-8")
    result = _gis(clone_db(), "refresh", "water_bodies", "--source", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gis: refresh water_bodies failed: ")


def _big_nodes_delivery(settings: Settings, spec: LayerSpec, out: Path, copies: int) -> Path:
    """The pipe nodes delivery repeated with new ids: large enough that a refresh takes seconds."""
    frame = gpd.read_file(settings.samples_dir / spec.source.path, layer=spec.source.layer)
    parts = []
    for copy in range(copies):
        part = frame.copy()
        part[spec.source.fid] = [f"{fid}-{copy}" for fid in part[spec.source.fid]]
        parts.append(part)
    big = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry=frame.geometry.name, crs=frame.crs)
    big.to_file(out, layer=spec.source.layer, driver="GPKG")
    return out


def _refresh_backend(url: str, layer_id: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT query FROM pg_stat_activity WHERE application_name = %s AND state = 'active'",
            (f"gis-refresh:{layer_id}",)).fetchone()
    return row[0] if row else None


def test_refresh_killed_half_way_leaves_the_layer_as_it_was(
    clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, tmp_path: Path
) -> None:
    url, spec = clone_db(), registry["pipe_nodes"]
    copies = max(2, 400_000 // max(_source_count(spec, settings), 1))
    source = _big_nodes_delivery(settings, spec, tmp_path / "nodes.gpkg", copies)
    before = fingerprint(url, spec)
    env = {**os.environ, "GIS_DATABASE_URL": url}
    job = subprocess.Popen([sys.executable, "-m", "gis.cli", "refresh", "pipe_nodes", "--source", str(source),
                            "--quiet"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        query = _refresh_backend(url, spec.id)
        if query and query.lstrip().upper().startswith("COPY"):
            break
        time.sleep(0.05)
    assert job.poll() is None, "the refresh finished before it could be killed"
    job.send_signal(signal.SIGKILL)
    job.wait()
    # The server notices the dead client and rolls back; wait for its session to go.
    while _refresh_backend(url, spec.id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fingerprint(url, spec) == before
    rerun = refresh(url, spec, settings, source=source)
    assert rerun.counts.inserted == copies * _source_count(spec, settings)
    assert rerun.counts.closed == before[0][0]  # type: ignore[index]


def test_migrations_rerun_apply_nothing(clone_db: Callable[[], str], registry: LayerRegistry) -> None:
    from gis.db.migrate import migrate

    with psycopg.connect(clone_db()) as conn:
        assert migrate(conn, registry) == []


def test_new_field_adds_a_column_and_a_type_change_is_refused(
    clone_db: Callable[[], str], registry: LayerRegistry
) -> None:
    from gis.db.migrate import add_new_fields
    from gis.errors import ConfigError
    from gis.layers import FieldSpec, FieldType

    spec = registry["roads"]
    widened = spec.model_copy(update={"fields": (*spec.fields, FieldSpec(name="surface", type=FieldType.text))})
    with psycopg.connect(clone_db()) as conn:
        assert add_new_fields(conn, widened) == ["roads.surface", "roads_history.surface"]
        retyped = spec.model_copy(update={"fields": tuple(
            f.model_copy(update={"type": FieldType.text}) if f.name == "lanes" else f for f in spec.fields)})
        with pytest.raises(ConfigError, match="'lanes' is integer in the database but text"):
            add_new_fields(conn, retyped)


def test_numbers_stay_numbers(loaded_db_url: str) -> None:
    with psycopg.connect(loaded_db_url) as conn:
        lanes, width = conn.execute("SELECT lanes, width_m FROM base.roads LIMIT 1").fetchone()  # type: ignore[misc]
    assert isinstance(lanes, int) and isinstance(width, float)
    assert np.isfinite(width)


def test_current_rows_give_each_fid_its_stored_hash(clone_db: Callable[[], str], registry: LayerRegistry) -> None:
    # What a delivery is compared with: every current fid (a non-ASCII one too) with the hash stored for it.
    from gis.refresh.merge import fetch_current_rows

    url, spec = clone_db(), registry["police_stations"]
    with psycopg.connect(url) as conn:
        first = conn.execute("SELECT fid FROM policing.police_stations ORDER BY fid LIMIT 1").fetchone()[0]  # type: ignore[index]
        conn.execute("UPDATE policing.police_stations SET fid = '派出所-甲' WHERE fid = %s", (first,))
        stored = dict(conn.execute("SELECT fid, row_hash FROM policing.police_stations").fetchall())
    current = fetch_current_rows(url, spec)
    got = {str(fid): int(h).to_bytes(8, "big") for fid, h in zip(current.fids, current.hashes, strict=True)}
    assert "派出所-甲" in got and got == stored


def test_current_rows_of_an_empty_layer_are_none(clone_db: Callable[[], str], registry: LayerRegistry) -> None:
    from gis.refresh.merge import fetch_current_rows

    url, spec = clone_db(), registry["police_stations"]
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM policing.police_stations")
    assert len(fetch_current_rows(url, spec).fids) == 0


def test_text_loses_nul_and_record_separators_only() -> None:
    # The quick scan of a column's bytes lets text without them through untouched, and finds them anywhere.
    from gis.refresh.normalise import as_text

    plain = pd.Series(["  甲 ", "b", None, "c\td"])
    assert as_text(plain).fillna("-").tolist() == ["甲", "b", "-", "c\td"]
    dirty = pd.Series(["a", "x\x00y", "p\x1eq", "\x00"])
    assert as_text(dirty).fillna("-").tolist() == ["a", "x y", "p q", "-"]
