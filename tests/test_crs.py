"""gis.crs: GCJ-02 both ways, CRS names, and source geometries brought to storage (EPSG:4490)."""

import numpy as np
import pyproj
import pytest
import shapely

from gis.crs import (
    STORAGE_SRID,
    from_storage_to_gcj02,
    gcj02_to_wgs84,
    is_gcj02,
    parse_crs,
    to_storage_crs,
    wgs84_to_gcj02,
)
from gis.errors import SourceError

GEOD = pyproj.Geod(ellps="WGS84")
SHENYANG = (123.43, 41.80)  # lon, lat near the city centre


def around_shenyang(count: int = 2000) -> np.ndarray:
    """Points over the whole municipality (122.4-123.9 E, 41.2-43.1 N), fixed so failures repeat."""
    rng = np.random.default_rng(20260101)
    return np.column_stack([rng.uniform(122.4, 123.9, count), rng.uniform(41.2, 43.1, count)])


def metres_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    _, _, distance = GEOD.inv(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    return np.asarray(distance)


def test_round_trip_wgs84_gcj02_wgs84_is_below_a_centimetre() -> None:
    wgs = around_shenyang()
    back = gcj02_to_wgs84(wgs84_to_gcj02(wgs))
    assert metres_between(wgs, back).max() < 0.01


def test_round_trip_gcj02_wgs84_gcj02_is_below_a_centimetre() -> None:
    gcj = around_shenyang()
    again = wgs84_to_gcj02(gcj02_to_wgs84(gcj))
    assert metres_between(gcj, again).max() < 0.01


def test_gcj02_lies_a_few_hundred_metres_east_and_north_of_wgs84_at_shenyang() -> None:
    wgs = np.array([SHENYANG])
    gcj = wgs84_to_gcj02(wgs)[0]
    _, _, east = GEOD.inv(wgs[0, 0], wgs[0, 1], gcj[0], wgs[0, 1])
    _, _, north = GEOD.inv(wgs[0, 0], wgs[0, 1], wgs[0, 0], gcj[1])
    assert gcj[0] > wgs[0, 0] and gcj[1] > wgs[0, 1]
    assert 300 < east < 800  # about 510 m
    assert 150 < north < 450  # about 270 m
    assert 350 < float(metres_between(wgs, gcj[None, :])[0]) < 900


def test_the_offset_is_of_that_size_everywhere_in_the_municipality() -> None:
    wgs = around_shenyang()
    offset = metres_between(wgs, wgs84_to_gcj02(wgs))
    assert offset.min() > 300 and offset.max() < 900


# gis.crs uses the published formula's rectangle for "China" (72.004-137.8347 E, 0.8293-55.8271 N), so
# these lie outside it; Seoul or Bangkok, inside the rectangle, do get shifted (a known coarseness).
@pytest.mark.parametrize(
    "lonlat",
    [(2.35, 48.85), (-74.0, 40.7), (151.2, -33.9), (139.7, 35.7), (37.6, 55.75), (120.0, -8.0)],
    ids=["paris", "new-york", "sydney", "tokyo", "moscow", "indonesia"],
)
def test_no_offset_outside_china(lonlat: tuple[float, float]) -> None:
    point = np.array([lonlat])
    assert np.array_equal(wgs84_to_gcj02(point), point)
    assert np.array_equal(gcj02_to_wgs84(point), point)


def test_gcj02_names_are_recognised_and_have_no_pyproj_crs() -> None:
    for name in ("GCJ-02", "gcj02", " GCJ_02 "):
        assert is_gcj02(name)
        assert parse_crs(name.strip()) is None
    assert not is_gcj02("EPSG:4326")


def test_an_unknown_crs_name_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="nonsense"):
        parse_crs("nonsense")


def test_epsg_names_parse_to_their_crs() -> None:
    assert parse_crs("EPSG:4490").to_epsg() == STORAGE_SRID
    assert parse_crs("EPSG:4550").to_epsg() == 4550


def test_to_storage_crs_from_gauss_kruger_matches_pyproj() -> None:
    # A point in the city, as a survey in EPSG:4550 would deliver it (x = easting).
    to_gk = pyproj.Transformer.from_crs(4490, 4550, always_xy=True)
    easting, northing = to_gk.transform(*SHENYANG)
    stored = to_storage_crs(np.array([shapely.Point(easting, northing)]), "EPSG:4550")[0]
    expected = pyproj.Transformer.from_crs("EPSG:4550", "EPSG:4490", always_xy=True).transform(
        easting, northing
    )
    assert stored.x == pytest.approx(expected[0], abs=1e-9)
    assert stored.y == pytest.approx(expected[1], abs=1e-9)
    assert stored.x == pytest.approx(SHENYANG[0], abs=1e-8)  # lon first: storage keeps x = longitude


def test_to_storage_crs_keeps_storage_geometries_unchanged() -> None:
    geoms = np.array([shapely.Point(*SHENYANG)])
    assert to_storage_crs(geoms, "EPSG:4490") is geoms


def test_a_gcj02_polygon_round_trips_through_storage() -> None:
    polygon = shapely.box(123.40, 41.78, 123.45, 41.82)
    gcj = from_storage_to_gcj02(np.array([polygon]))
    back = to_storage_crs(gcj, "GCJ-02")[0]
    assert not shapely.equals_exact(gcj[0], polygon, tolerance=1e-4)  # it did move
    assert shapely.equals_exact(back, polygon, tolerance=1e-9)
