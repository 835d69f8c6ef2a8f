"""Raster refresh: a delivered GeoTIFF validated, reprojected into a versioned COG, history by datetime.

Each module test works on its own clone of the template database and its own rasters directory.
"""

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pyproj
import pytest
import rasterio
from conftest import cloned_database
from rasterio.transform import Affine

from gis import cli
from gis.errors import SourceError
from gis.layers import LayerRegistry, RasterSpec
from gis.rasters import versions
from gis.rasters.refresh import RasterRefreshRequest, RasterRefreshResult, run_raster_refresh
from gis.settings import Settings


@pytest.fixture(scope="module")
def raster_db(server_url: str, template_db: str) -> Iterator[str]:
    with cloned_database(server_url, template_db, "gis_test_rasters_refresh") as url:
        yield url


@pytest.fixture(scope="module")
def rasters_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rasters")


def refresh(url: str, settings: Settings, spec: RasterSpec, rasters_dir: Path, source: Path | None = None,
            force: bool = False) -> RasterRefreshResult:
    path = source if source is not None else settings.samples_dir / spec.source.path
    return run_raster_refresh(url, RasterRefreshRequest(spec, path, settings.city_extent, rasters_dir, force))


@pytest.fixture(scope="module")
def loaded(raster_db: str, settings: Settings, registry: LayerRegistry, rasters_dir: Path) -> dict[str, Path]:
    """Every raster layer refreshed from its sample into this module's directory: layer id -> its COG."""
    found = {}
    for spec in registry.rasters.values():  # forced: the template holds these very deliveries already
        result = refresh(raster_db, settings, spec, rasters_dir, force=True)
        assert result.path is not None
        found[spec.id] = result.path
    return found


def current(url: str, layer_id: str, at: datetime | None = None) -> versions.RasterVersion:
    with psycopg.connect(url) as conn:
        found = versions.version_at(conn, layer_id, at)
    assert found is not None
    return found


def bilinear(path: Path, x: float, y: float) -> float:
    """Bilinear interpolation between the four cell centres around (x, y), computed here from the raw grid."""
    with rasterio.open(path) as src:
        grid = src.read(1).astype(np.float64)
        col, row = ~src.transform @ (x, y)
    c, r = col - 0.5, row - 0.5
    c0, r0 = int(np.floor(c)), int(np.floor(r))
    fx, fy = c - c0, r - r0
    window = grid[r0:r0 + 2, c0:c0 + 2]
    return float(window[0, 0] * (1 - fx) * (1 - fy) + window[0, 1] * fx * (1 - fy)
                 + window[1, 0] * (1 - fx) * fy + window[1, 1] * fx * fy)


def variant(source: Path, target: Path, **changes: object) -> Path:
    """A copy of a delivery with its data, CRS, nodata or transform changed, as a bad delivery would come."""
    with rasterio.open(source) as src:
        profile = src.profile
        data = src.read()
    offset = changes.pop("add", None)
    if offset is not None:
        data = np.where(data != src.nodata, data + offset, data).astype(data.dtype)
    profile.update(changes)
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(data)
    return target


# -- what a refresh writes ----------------------------------------------------------------------------

def test_refresh_writes_a_tiled_cog_with_overviews_in_the_layer_crs(loaded: dict[str, Path],
                                                                    registry: LayerRegistry) -> None:
    for layer_id, path in loaded.items():
        spec = registry.rasters[layer_id]
        with rasterio.open(path) as cog:
            assert cog.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert cog.crs == rasterio.crs.CRS.from_user_input(spec.crs)
            assert cog.nodata == spec.nodata and cog.count == len(spec.bands)
            assert cog.block_shapes[0] == (256, 256) and cog.profile["tiled"]
            assert cog.overviews(1), f"{layer_id}: no overviews"
            assert all(cog.overviews(b) == cog.overviews(1) for b in cog.indexes)


def test_reprojection_keeps_the_value_at_a_known_point(loaded: dict[str, Path], settings: Settings,
                                                       registry: LayerRegistry) -> None:
    """A COG cell in EPSG:4490 holds the delivery's (EPSG:4550) elevation at that cell's centre."""
    source = settings.samples_dir / registry.rasters["dem"].source.path
    to_source = pyproj.Transformer.from_crs("EPSG:4490", "EPSG:4550", always_xy=True)
    with rasterio.open(loaded["dem"]) as cog:
        for lon, lat in ((123.41, 41.75), (123.45, 41.78), (123.38, 41.73)):
            row, col = cog.index(lon, lat)
            centre_lon, centre_lat = cog.xy(row, col)
            stored = float(cog.read(1, window=((row, row + 1), (col, col + 1)))[0, 0])
            expected = bilinear(source, *to_source.transform(centre_lon, centre_lat))
            assert stored == pytest.approx(expected, abs=0.01)


def test_land_cover_classes_survive_reprojection(loaded: dict[str, Path], settings: Settings,
                                                 registry: LayerRegistry) -> None:
    """Nearest-neighbour resampling: every stored code is a class of the layer, none averaged."""
    spec = registry.rasters["land_cover"]
    codes = {int(s.value) for s in spec.rendering.stops} | {int(spec.nodata)}
    with rasterio.open(loaded["land_cover"]) as cog:
        assert set(np.unique(cog.read(1)).tolist()) <= codes
        assert set(np.unique(cog.read(1, out_shape=(cog.height // 4, cog.width // 4))).tolist()) <= codes


def test_version_is_recorded_with_its_file_bounds_and_checksum(loaded: dict[str, Path], raster_db: str) -> None:
    version = current(raster_db, "dem")
    with rasterio.open(loaded["dem"]) as cog:
        assert version.path == loaded["dem"].resolve()
        assert version.bounds == pytest.approx(tuple(cog.bounds))
        assert (version.width, version.height, version.bands) == (cog.width, cog.height, 1)
        assert version.overviews == tuple(cog.overviews(1))
    assert version.valid_to is None and len(version.checksum) == 64


def test_an_unchanged_delivery_is_skipped_by_checksum(loaded: dict[str, Path], raster_db: str, settings: Settings,
                                                      registry: LayerRegistry, rasters_dir: Path) -> None:
    before = current(raster_db, "land_cover")
    again = refresh(raster_db, settings, registry.rasters["land_cover"], rasters_dir)
    assert again.source_unchanged and again.version_id is None
    assert current(raster_db, "land_cover").version_id == before.version_id


# -- bad deliveries --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "expected"), [
    ({"crs": "EPSG:4549"}, "CRS is EPSG:4549, the layer's deliveries are in EPSG:4550"),
    ({"nodata": None}, "declares no nodata value"),
    ({"transform": Affine.translation(3_000_000, 0)}, "leave the city extent"),
    ({"nodata": -1.0}, "nodata is -1, the layer's is -9999"),
])
def test_a_bad_delivery_is_refused_in_one_line_and_the_served_version_stays(
        change: dict[str, object], expected: str, loaded: dict[str, Path], raster_db: str, settings: Settings,
        registry: LayerRegistry, rasters_dir: Path, tmp_path: Path) -> None:
    spec = registry.rasters["dem"]
    source = settings.samples_dir / spec.source.path
    if "transform" in change:
        with rasterio.open(source) as src:
            change = {"transform": change["transform"] @ src.transform}  # type: ignore[operator]
    bad = variant(source, tmp_path / "bad.tif", **change)
    before = current(raster_db, "dem")
    files = sorted(rasters_dir.rglob("*.tif"))
    with pytest.raises(SourceError) as caught:
        refresh(raster_db, settings, spec, rasters_dir, bad)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert current(raster_db, "dem").version_id == before.version_id
    assert sorted(rasters_dir.rglob("*.tif")) == files  # nothing half-written left behind
    with psycopg.connect(raster_db) as conn:
        logged = conn.execute("SELECT status, message FROM ops.refresh_log WHERE layer_id = 'dem' "
                              "ORDER BY refresh_id DESC LIMIT 1").fetchone()
    assert logged is not None and logged[0] == "failed" and expected in logged[1]


def test_the_cli_names_a_bad_delivery_in_one_line(raster_db: str, settings: Settings, tmp_path: Path,
                                                  registry: LayerRegistry, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    source = settings.samples_dir / registry.rasters["dem"].source.path
    bad = variant(source, tmp_path / "no-crs.tif", crs=None)
    monkeypatch.setenv("GIS_DATABASE_URL", raster_db)
    monkeypatch.setenv("GIS_RASTERS_DIR", str(tmp_path / "cli-rasters"))
    monkeypatch.setenv("GIS_LAYERS_DIR", str(settings.layers_dir))
    monkeypatch.setenv("GIS_STYLES_DIR", str(settings.styles_dir))
    assert cli.main(["refresh", "dem", "--source", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["gis: refresh dem failed: no-crs.tif: declares no CRS; the layer's deliveries are in EPSG:4550"]


def test_gis_layers_lists_each_raster_with_its_current_size_and_version(
        loaded: dict[str, Path], raster_db: str, settings: Settings, registry: LayerRegistry,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GIS_DATABASE_URL", raster_db)
    monkeypatch.setenv("GIS_LAYERS_DIR", str(settings.layers_dir))
    monkeypatch.setenv("GIS_STYLES_DIR", str(settings.styles_dir))
    assert cli.main(["layers"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    for raster_id in registry.rasters:
        version = current(raster_db, raster_id)
        assert lines[raster_id][2:] == ["raster", registry.rasters[raster_id].access.value,
                                        f"{version.width}x{version.height}x{version.bands}", f"v{version.version_id}"]


# -- history ---------------------------------------------------------------------------------------------

def test_datetime_picks_the_version_valid_then(loaded: dict[str, Path], raster_db: str, settings: Settings,
                                               registry: LayerRegistry, rasters_dir: Path, tmp_path: Path) -> None:
    spec = registry.rasters["dem"]
    old = current(raster_db, "dem")
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    raised = variant(settings.samples_dir / spec.source.path, tmp_path / "dem-plus-10.tif", add=10.0)
    new = refresh(raster_db, settings, spec, rasters_dir, raised)
    assert new.version_id is not None and new.version_id != old.version_id
    then, now = current(raster_db, "dem", between), current(raster_db, "dem")
    assert then.version_id == old.version_id and then.path.is_file()
    assert now.version_id == new.version_id and then.valid_to == now.valid_from
    with rasterio.open(then.path) as a, rasterio.open(now.path) as b:
        assert b.read(1, window=((300, 301), (300, 301)))[0, 0] == pytest.approx(
            a.read(1, window=((300, 301), (300, 301)))[0, 0] + 10.0, abs=1e-3)
    # back to the sample, so the other tests of this module see it
    assert refresh(raster_db, settings, spec, rasters_dir, force=True).version_id is not None
