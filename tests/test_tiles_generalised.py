"""Pre-built generalised copies for "now" tiles (gis.tiles_generalised): same features as the general path,
caught up by a worker's keeper after a refresh, never served behind the layer, never used for row-limited tiles or
as-of intervals; an as-of instant reads the copy's rows unchanged since and history, the general path's tile.

Which path a statement took is read from EXPLAIN ANALYZE (the relations actually scanned), not from timing."""

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import mapbox_vector_tile
import psycopg
import pytest
from psycopg import sql

from gis import identifiers as ids
from gis import tiles as mvt
from gis import tiles_generalised
from gis.features.cql2.parse import from_text
from gis.features.temporal import parse_datetime
from gis.layers import LayerRegistry, LayerSpec
from gis.refresh.runner import RefreshRequest, run_refresh
from gis.settings import Settings
from gis.tiles_keeper import CopyKeeper

TMS = "WebMercatorQuad"
LAYER = "pipelines"
DRAWN = frozenset({"utility"})  # what styles/pipeline/pipelines.qml draws with


def tile_at(lon: float, lat: float, z: int) -> mvt.Tile:
    import math

    n = 1 << z
    return mvt.Tile(z, int((lon + 180) / 360 * n),
                    int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n))


def densest_point(conn: psycopg.Connection, spec: LayerSpec) -> tuple[float, float]:
    """The centre of the layer's rows (the pipe network is densest in the city centre)."""
    row = conn.execute(sql.SQL("SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_Centroid(ST_Collect(ST_Centroid(geom))) c "
                               "FROM {}) s").format(ids.current_table(spec))).fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


def scanned(conn: psycopg.Connection, query: sql.Composable, params: dict[str, object]) -> set[str]:
    """schema.relation of every table or index scan the statement actually ran (EXPLAIN ANALYZE)."""
    plan = conn.execute(sql.SQL("EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) {}").format(query), params).fetchone()
    assert plan is not None
    found: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        if "Relation Name" in node and node.get("Actual Loops", 0) > 0:
            found.add(f"{node['Schema']}.{node['Relation Name']}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0][0]["Plan"])
    return found


def features(conn: psycopg.Connection, spec: LayerSpec, tile: mvt.Tile, **options: Any) -> list[tuple[Any, ...]]:
    """The tile's features as (fid, properties, geometry), in the order the tile holds them."""
    query, params = mvt.tile_statement(spec, tile, drawn=DRAWN, **options)
    row = conn.execute(query, params, binary=True).fetchone()
    assert row is not None
    data = mvt.tile_result(row).data
    if not data:
        return []
    return [(f["properties"].get("fid", f["properties"].get(mvt.MERGED_ID)), f["properties"], f["geometry"])
            for f in mapbox_vector_tile.decode(data)[spec.id]["features"]]


def general_path(conn: psycopg.Connection, spec: LayerSpec, tile: mvt.Tile, **options: Any) -> list[tuple[Any, ...]]:
    """The same tile as the general path builds it: the copy set to no version, for this transaction only."""
    with conn.transaction(force_rollback=True):
        conn.execute("UPDATE tiles.generalised SET version = NULL WHERE layer_id = %s", (spec.id,))
        return features(conn, spec, tile, **options)


def by_fid(data: bytes, spec: LayerSpec) -> dict[str, dict[str, Any]]:
    return {f["properties"]["fid"]: f["properties"] for f in mapbox_vector_tile.decode(data)[spec.id]["features"]}


def copy_table(spec: LayerSpec) -> str:
    return f"tiles.{spec.id}"


@pytest.fixture(scope="module")
def conn(loaded_db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(loaded_db_url, autocommit=True) as connection:
        yield connection


def copy_and_layer_versions(conn: psycopg.Connection, layer_id: str) -> tuple[int | None, int]:
    row = conn.execute("SELECT g.version, s.changed_refresh_id FROM tiles.generalised g "
                       "JOIN ops.layer_stats s USING (layer_id) WHERE layer_id = %s", (layer_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def test_a_refresh_leaves_the_copy_behind_and_a_keeper_catches_it_up(
        clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, tmp_path: Path) -> None:
    spec, url = registry[LAYER], clone_db()
    _changed_delivery(url, spec, settings, tmp_path / "pipelines.gpkg")
    run_refresh(url, RefreshRequest(spec, tmp_path / "pipelines.gpkg", settings.city_extent,
                                    settings.rejects_dir, False, False))
    with psycopg.connect(url, autocommit=True) as conn:
        copy, layer = copy_and_layer_versions(conn, LAYER)
        assert copy is not None and copy < layer  # the refresh ended when the layer had changed
        assert tiles_generalised.stale_layers(url, registry, settings.styles_dir) == [LAYER]
        assert CopyKeeper(url, registry, 0, settings.styles_dir).run_once() == [LAYER]
        assert copy_and_layer_versions(conn, LAYER) == (layer, layer)
        assert tiles_generalised.stale_layers(url, registry, settings.styles_dir) == []
        # In the background, as a worker runs it: a copy never built is built whole.
        conn.execute("UPDATE tiles.generalised SET version = NULL WHERE layer_id = %s", (LAYER,))
        conn.execute("TRUNCATE tiles.pipelines")
        keeper = CopyKeeper(url, registry, 0.2, settings.styles_dir)
        keeper.start()
        try:
            deadline = time.monotonic() + 120
            while copy_and_layer_versions(conn, LAYER)[0] != layer and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            keeper.stop()
        assert copy_and_layer_versions(conn, LAYER) == (layer, layer)
        assert conn.execute("SELECT count(*) FROM tiles.pipelines").fetchone() != (0,)


def test_points_have_no_copy(conn: psycopg.Connection, registry: LayerRegistry) -> None:
    # points are drawn whole: no copy, their tiles always take the general path
    assert not tiles_generalised.has_copy(registry["police_stations"])
    assert conn.execute("SELECT count(*) FROM tiles.generalised WHERE layer_id = 'police_stations'").fetchone() == (0,)


@pytest.mark.parametrize("z", [8, 10, 12, 13, 14, 17])
def test_a_tile_from_the_copy_is_the_tile_of_the_general_path(conn: psycopg.Connection, registry: LayerRegistry,
                                                               z: int) -> None:
    spec = registry[LAYER]
    tile = tile_at(*densest_point(conn, spec), z)
    query, params = mvt.tile_statement(spec, tile, drawn=DRAWN)
    used = scanned(conn, query, params)
    assert copy_table(spec) in used and f"{spec.domain.value}.{spec.id}" not in used
    built, general = features(conn, spec, tile), general_path(conn, spec, tile)
    assert built and built == general  # the same fids, properties and geometry, in the same order


def _length(geometry: dict[str, Any]) -> float:
    """A decoded (Multi)LineString's length in tile units."""
    import itertools
    import math

    parts = geometry["coordinates"] if geometry["type"] == "MultiLineString" else [geometry["coordinates"]]
    return sum(math.dist(a, b) for part in parts for a, b in itertools.pairwise(part))


@pytest.mark.parametrize("z", [10, 11])
def test_low_zoom_line_tiles_draw_merged_lines_marked_as_such(conn: psycopg.Connection, registry: LayerRegistry,
                                                              z: int) -> None:
    # Below MERGE_ZOOM a pipe segment is less than a pixel: the tile draws the segments merged into lines per
    # utility, each with a synthetic id and the flag, never a fid a click would follow to one feature.
    spec = registry[LAYER]
    tile = tile_at(*densest_point(conn, spec), z)
    found = features(conn, spec, tile)
    assert found
    for _id, properties, _geometry in found:
        assert set(properties) == {mvt.MERGED_ID, mvt.MERGED, *DRAWN} and properties[mvt.MERGED] is True
    assert len({f[0] for f in found}) == len(found) and all(f[0].startswith("merged/") for f in found)
    # merged: the longest line drawn is longer than any one segment of the layer (tile units: 4096 a tile)
    longest = conn.execute(sql.SQL("SELECT max(ST_Length(ST_Transform(geom, 3857))) FROM {}").format(
        ids.current_table(spec))).fetchone()[0]  # type: ignore[index]
    per_metre = mvt.EXTENT / (mvt.TILE_SIZE * mvt.cell_size(z))
    assert max(_length(f[2]) for f in found) > 1.5 * longest * per_metre
    # drawn by what the style draws with: every utility the tile's segments have is drawn
    utilities = {r[0] for r in conn.execute(sql.SQL(
        "SELECT DISTINCT utility FROM {} WHERE geom && ST_Transform(ST_TileEnvelope(%s, %s, %s), 4490)").format(
            ids.current_table(spec)), (tile.z, tile.x, tile.y)).fetchall()}
    assert {f[1]["utility"] for f in found} == utilities


def test_a_merged_band_keeps_only_the_lines_some_tile_draws(clone_db: Callable[[], str], registry: LayerRegistry,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # With a cap of 30 lines a tile, the copy's merged bands keep each tile's first 30 (by length, then id) and
    # those of its neighbours, not every line: still the very tiles of the general path, around the densest one.
    spec, url, cap = registry[LAYER], clone_db(), 30
    detail = mvt.zoom_detail

    def capped(z: int, geometry: Any) -> mvt.ZoomDetail:
        found = detail(z, geometry)
        return mvt.ZoomDetail(cap, found.simplify, found.min_size, found.all_fields)

    monkeypatch.setattr(mvt, "zoom_detail", capped)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE tiles.generalised SET version = NULL WHERE layer_id = %s", (spec.id,))
        tiles_generalised.catch_up(url, spec, DRAWN)
        for z in (10, 11):
            every = conn.execute(sql.SQL("SELECT count(*) FROM ({}) ch WHERE ch.size >= %s").format(mvt.chains(
                spec, sql.SQL("(SELECT fid, utility, ST_Transform(geom, 3857) AS g FROM {})").format(
                    ids.current_table(spec)), tuple(DRAWN))), (mvt.merged_min_length(z),)).fetchone()[0]  # type: ignore[index]
            kept = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE band = %s").format(
                ids.generalised_table(spec)), (z,)).fetchone()[0]  # type: ignore[index]
            assert 0 < kept < every, z
            centre = tile_at(*densest_point(conn, spec), z)
            for dx, dy in ((0, 0), (1, 0), (0, 1), (-1, -1)):
                tile = mvt.Tile(z, centre.x + dx, centre.y + dy)
                built = features(conn, spec, tile)
                assert built == general_path(conn, spec, tile), (z, dx, dy)
                assert len(built) <= cap


def test_a_full_tile_keeps_the_largest_rows_from_the_copy_too(conn: psycopg.Connection, registry: LayerRegistry,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # The sample's z12 tile holds fewer rows than the cap: a cap of 40 shows which rows each path keeps.
    spec, cap = registry[LAYER], 40
    detail = mvt.zoom_detail

    def capped(z: int, geometry: Any) -> mvt.ZoomDetail:
        found = detail(z, geometry)
        return mvt.ZoomDetail(cap, found.simplify, found.min_size, found.all_fields)

    monkeypatch.setattr(mvt, "zoom_detail", capped)
    tile = tile_at(*densest_point(conn, spec), 12)
    pixel = detail(12, spec.geometry).min_size
    largest = [r[0] for r in conn.execute(sql.SQL(
        "SELECT fid FROM {} WHERE geom && ST_Transform(ST_TileEnvelope(%s, %s, %s, margin => %s), 4490) "
        "AND (ST_XMax(geom) - ST_XMin(geom)) + (ST_YMax(geom) - ST_YMin(geom)) >= %s "
        "ORDER BY (ST_XMax(geom) - ST_XMin(geom)) + (ST_YMax(geom) - ST_YMin(geom)) DESC, fid LIMIT %s").format(
            ids.current_table(spec)), (tile.z, tile.x, tile.y, mvt.BUFFER / mvt.EXTENT, pixel, cap)).fetchall()]
    assert len(largest) == cap
    built = features(conn, spec, tile)
    assert sorted(f[0] for f in built) == sorted(largest)
    assert built == general_path(conn, spec, tile)


def test_a_copy_behind_the_layer_is_never_served(clone_db: Callable[[], str], registry: LayerRegistry) -> None:
    # A write the copy has not caught up with (an edit, say) moves the layer's version: until a catch-up, its
    # tiles come from the layer's table, with the write in them.
    spec, url = registry[LAYER], clone_db()
    with psycopg.connect(url, autocommit=True) as conn:
        tile = tile_at(*densest_point(conn, spec), 12)
        fid = features(conn, spec, tile)[0][0]
        conn.execute(sql.SQL("UPDATE {} SET utility = 'gas', refresh_id = "
                             "(SELECT changed_refresh_id FROM ops.layer_stats WHERE layer_id = %s) WHERE fid = %s"
                             ).format(ids.current_table(spec)), (spec.id, fid))
        conn.execute("UPDATE tiles.generalised SET version = version - 1 WHERE layer_id = %s", (spec.id,))
        query, params = mvt.tile_statement(spec, tile, drawn=DRAWN)
        assert copy_table(spec) not in scanned(conn, query, params)
        assert dict((f[0], f[1]) for f in features(conn, spec, tile))[fid]["utility"] == "gas"
        # Caught up: only the rows written since the copy's version are rebuilt, and the copy is served again.
        assert tiles_generalised.catch_up(url, spec, DRAWN) == conn.execute(
            "SELECT changed_refresh_id FROM ops.layer_stats WHERE layer_id = %s", (spec.id,)).fetchone()[0]  # type: ignore[index]
        assert copy_table(spec) in scanned(conn, query, params)
        assert dict((f[0], f[1]) for f in features(conn, spec, tile))[fid]["utility"] == "gas"


def test_interval_merged_and_row_limited_tiles_read_the_layer_not_the_copy(conn: psycopg.Connection,
                                                                           registry: LayerRegistry) -> None:
    spec = registry[LAYER]
    tile = tile_at(*densest_point(conn, spec), 12)
    sewers = from_text("utility = 'sewer'")
    query, params = mvt.tile_statement(spec, tile, rows=sewers, drawn=DRAWN)
    assert copy_table(spec) not in scanned(conn, query, params)
    found = features(conn, spec, tile, rows=sewers)
    assert found and {f[1]["utility"] for f in found} == {"sewer"}
    assert {f[1]["utility"] for f in features(conn, spec, tile)} > {"sewer"}  # the copy's tile has the others
    interval = parse_datetime("2000-01-01T00:00:00Z/2100-01-01T00:00:00Z")  # several versions of a fid: DISTINCT
    query, params = mvt.tile_statement(spec, tile, time=interval, drawn=DRAWN)
    assert copy_table(spec) not in scanned(conn, query, params)
    instant = parse_datetime("2000-01-01T00:00:00Z")  # a merged line joins rows of any age: merged on the fly
    query, params = mvt.tile_statement(spec, tile_at(*densest_point(conn, spec), 10), time=instant, drawn=DRAWN)
    assert copy_table(spec) not in scanned(conn, query, params)


@pytest.mark.parametrize("z", [12, 14, 16])
def test_an_as_of_tile_reads_the_copy_and_history_and_is_the_general_paths_tile(
        clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, z: int) -> None:
    # After a delivery that changes one pipe and removes another, a tile as of before it holds their old versions
    # (from history) beside the rows unchanged since (from the copy), and is the general path's tile exactly;
    # it never reads the current table.
    spec, url = registry[LAYER], clone_db()
    changed, old_utility, removed = _changed_delivery(url, spec, settings, tmp_path / "pipelines.gpkg")
    with psycopg.connect(url, autocommit=True) as conn:
        before = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    run_refresh(url, RefreshRequest(spec, tmp_path / "pipelines.gpkg", settings.city_extent, settings.rejects_dir,
                                    False, False))
    tiles_generalised.catch_up(url, spec, DRAWN)
    with psycopg.connect(url, autocommit=True) as conn:
        after = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        for fid in (changed, removed):
            row = conn.execute(sql.SQL("SELECT ST_X(c), ST_Y(c) FROM {}, ST_Centroid(geom) c WHERE fid = %s").format(
                ids.history_table(spec)), (fid,)).fetchone()
            assert row is not None
            tile = tile_at(row[0], row[1], z)
            for when in (before, after):
                instant = parse_datetime(when.isoformat())
                query, params = mvt.tile_statement(spec, tile, time=instant, drawn=DRAWN)
                used = scanned(conn, query, params)
                assert copy_table(spec) in used and f"{spec.domain.value}.{spec.id}" not in used, used
                assert f"{spec.domain.value}.{spec.id}_history" in used
                built = features(conn, spec, tile, time=instant)
                with monkeypatch.context() as patched:
                    patched.setattr(mvt, "reads_copy_as_of", lambda *_: False)
                    query, params = mvt.tile_statement(spec, tile, time=instant, drawn=DRAWN)
                    assert copy_table(spec) not in scanned(conn, query, params)
                    assert built == features(conn, spec, tile, time=instant), when
                past = {f[0]: f[1] for f in built}
                now = {f[0]: f[1] for f in features(conn, spec, tile)}
                if when == before and fid == changed:
                    assert past[changed]["utility"] == old_utility and now[changed]["utility"] != old_utility
                elif when == before:
                    assert removed in past and removed not in now
                else:  # as of after the refresh: what the layer holds now
                    assert past == now


def _changed_delivery(url: str, spec: LayerSpec, settings: Settings, out: Path) -> tuple[str, str, str]:
    """The pipelines delivery with the first pipe of the densest z12 tile turned into a gas main and the second
    left out; returns (changed fid, its old utility, removed fid)."""
    with psycopg.connect(url) as conn:
        tile = tile_at(*densest_point(conn, spec), 12)
        first, second = [f[:2] for f in features(conn, spec, tile)[:2]]
    frame = gpd.read_file(settings.samples_dir / spec.source.path, layer=spec.source.layer)
    key = frame[spec.source.fid].astype(str)
    new = "heat" if first[1]["utility"] == "gas" else "gas"
    frame.loc[key == first[0], "utility"] = new
    frame[key != second[0]].to_file(out, driver="GPKG", layer=spec.source.layer)
    return first[0], first[1]["utility"], second[0]


def test_the_copy_follows_a_refresh_and_as_of_tiles_still_show_the_past(
        clone_db: Callable[[], str], serve_api: Callable[[str], AbstractContextManager[str]],
        registry: LayerRegistry, settings: Settings, admin_headers: dict[str, str], tmp_path: Path) -> None:
    spec, url = registry[LAYER], clone_db()
    changed, old_utility, removed = _changed_delivery(url, spec, settings, tmp_path / "pipelines.gpkg")
    with psycopg.connect(url, autocommit=True) as conn:
        before = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        tile = tile_at(*densest_point(conn, spec), 12)
    path = f"/collections/{spec.id}/tiles/{TMS}/{tile.z}/{tile.y}/{tile.x}"
    with serve_api(url) as base, httpx.Client(base_url=base, headers=admin_headers, timeout=60) as http:
        old = http.get(path)
        run_refresh(url, RefreshRequest(spec, tmp_path / "pipelines.gpkg", settings.city_extent,
                                        settings.rejects_dir, False, False))
        tiles_generalised.catch_up(url, spec, DRAWN)  # or the server's keeper, whichever holds the lock first
        with psycopg.connect(url, autocommit=True) as conn:
            version = conn.execute("SELECT changed_refresh_id FROM ops.layer_stats WHERE layer_id = %s",
                                   (spec.id,)).fetchone()[0]  # type: ignore[index]
            assert conn.execute("SELECT version FROM tiles.generalised WHERE layer_id = %s",
                                (spec.id,)).fetchone() == (version,)
            query, params = mvt.tile_statement(spec, tile, drawn=DRAWN)
            assert copy_table(spec) in scanned(conn, query, params)
            assert features(conn, spec, tile) == general_path(conn, spec, tile)
            merged = tile_at(*densest_point(conn, spec), 10)  # the merged bands are merged anew
            assert features(conn, spec, merged) == general_path(conn, spec, merged)
        new = http.get(path)
        assert new.status_code == 200 and new.headers["etag"] != old.headers["etag"]
        now = by_fid(new.content, spec)
        assert now[changed]["utility"] != old_utility and removed not in now
        past = by_fid(http.get(path, params={"datetime": before.isoformat()}).content, spec)
        assert past[changed]["utility"] == old_utility and removed in past


def test_gis_tiles_builds_a_copy_anew_and_refuses_an_unknown_layer(
        clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from gis.cli import main

    spec, url = registry[LAYER], clone_db()
    for name, value in {"GIS_DATABASE_URL": url, "GIS_LAYERS_DIR": str(settings.layers_dir),
                        "GIS_STYLES_DIR": str(settings.styles_dir)}.items():
        monkeypatch.setenv(name, value)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE tiles.generalised SET version = NULL WHERE layer_id = %s", (spec.id,))
        conn.execute("TRUNCATE tiles.pipelines")  # an upgraded database: the copy was never built
        assert main(["tiles", "no_such_layer"]) == 2
        assert "no such layer: no_such_layer" in capsys.readouterr().err
        assert main(["tiles", spec.id]) == 0
        version = conn.execute("SELECT changed_refresh_id FROM ops.layer_stats WHERE layer_id = %s",
                               (spec.id,)).fetchone()[0]  # type: ignore[index]
        assert f"{spec.id}: generalised copy at version {version}" in capsys.readouterr().out
        tile = tile_at(*densest_point(conn, spec), 12)
        built = features(conn, spec, tile)
        assert built and built == general_path(conn, spec, tile)


def test_bands_below_detail_carry_only_the_drawn_fields(conn: psycopg.Connection, registry: LayerRegistry) -> None:
    # A tile below DETAIL_ZOOM holds fid and what the style draws with; the copy keeps no more for those bands.
    spec = registry[LAYER]
    assert conn.execute("SELECT fields FROM tiles.generalised WHERE layer_id = %s", (LAYER,)).fetchone() == (
        sorted(DRAWN),)
    others = [f for f in spec.field_names if f not in DRAWN]
    assert others
    for name in [*others, *DRAWN]:
        below, detail = conn.execute(sql.SQL(
            "SELECT count({c}) FILTER (WHERE band < %s), count({c}) FILTER (WHERE band = %s) FROM {t}").format(
                c=sql.Identifier(name), t=ids.generalised_table(spec)), (mvt.DETAIL_ZOOM, mvt.DETAIL_ZOOM)).fetchone()
        assert detail > 0  # DETAIL_ZOOM's band carries every field (a click shows them)
        assert (below > 0) == (name in DRAWN), name


def test_a_copy_carrying_other_fields_is_not_served_and_is_built_anew(
        clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings) -> None:
    spec, url = registry[LAYER], clone_db()
    with psycopg.connect(url, autocommit=True) as conn:
        low, detail = tile_at(*densest_point(conn, spec), 12), tile_at(*densest_point(conn, spec), 14)
        # as if built for a style that draws with nothing: its low bands lack the utility the tile carries
        conn.execute("UPDATE tiles.generalised SET fields = '{}' WHERE layer_id = %s", (LAYER,))
        query, params = mvt.tile_statement(spec, low, drawn=DRAWN)
        assert copy_table(spec) not in scanned(conn, query, params)
        assert {f[1]["utility"] for f in features(conn, spec, low)}  # the general path, with the utility
        query, params = mvt.tile_statement(spec, detail, drawn=DRAWN)
        assert copy_table(spec) in scanned(conn, query, params)  # DETAIL_ZOOM's band carries every field anyway
        assert tiles_generalised.stale_layers(url, registry, settings.styles_dir) == [LAYER]
        tiles_generalised.catch_up(url, spec, DRAWN)
        assert conn.execute("SELECT fields FROM tiles.generalised WHERE layer_id = %s", (LAYER,)).fetchone() == (
            sorted(DRAWN),)
        query, params = mvt.tile_statement(spec, low, drawn=DRAWN)
        assert copy_table(spec) in scanned(conn, query, params)
        assert features(conn, spec, low) == general_path(conn, spec, low)


def test_a_catch_up_finds_the_changed_rows_by_the_fid_index(conn: psycopg.Connection, registry: LayerRegistry) -> None:
    spec = registry[LAYER]
    statement = sql.SQL("EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) {}").format(tiles_generalised.delete_changed(spec))
    with conn.transaction(force_rollback=True):
        plan = conn.execute(statement, {"have": 0}).fetchone()  # every row is newer than version 0
    assert plan is not None
    copy_scans: list[str] = []
    indexes: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        if node.get("Schema") == "tiles" and node["Node Type"] != "ModifyTable":
            copy_scans.append(node["Node Type"])
        if "Index Name" in node:
            indexes.add(node["Index Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0][0]["Plan"])
    assert copy_scans in (["Index Scan"], ["Bitmap Heap Scan"]), copy_scans  # never a scan of the whole copy
    assert f"{spec.id}_fid_idx" in indexes
