"""OGC API Features Part 2: responses and bounding boxes in CRS84, EPSG:4490, 4326, 3857 and 4549."""

from collections.abc import Iterator

import httpx
import psycopg
import pytest
from api_models import error, features

EPSG = "http://www.opengis.net/def/crs/EPSG/0/"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"


@pytest.fixture(scope="module")
def client(api_url: str, admin_headers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, headers=admin_headers, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def station(loaded_db_url: str) -> dict[int, tuple[str, float, float]]:
    """One police station: srid -> (fid, x, y) as PostGIS computes it (x = easting / longitude)."""
    with psycopg.connect(loaded_db_url) as conn:
        row = conn.execute("SELECT fid FROM policing.police_stations ORDER BY fid LIMIT 1").fetchone()
        assert row is not None
        found = {}
        for srid in (4490, 4326, 3857, 4549):
            xy = conn.execute("SELECT ST_X(g), ST_Y(g) FROM (SELECT ST_Transform(geom, %s) g FROM "
                              "policing.police_stations WHERE fid = %s) t", (srid, row[0])).fetchone()
            assert xy is not None
            found[srid] = (row[0], float(xy[0]), float(xy[1]))
        return found


def first_point(client: httpx.Client, crs: str | None) -> tuple[httpx.Response, list[float]]:
    params = {"limit": 1, **({"crs": crs} if crs else {})}
    response = client.get("/collections/police_stations/items", params=params)
    return response, features(response).features[0].geometry.coordinates  # type: ignore[union-attr]


def test_default_is_crs84_lon_lat(client: httpx.Client, station: dict[int, tuple[str, float, float]]) -> None:
    response, (x, y) = first_point(client, None)
    assert response.headers["content-crs"] == f"<{CRS84}>"
    assert (x, y) == pytest.approx(station[4490][1:], abs=1e-6)


@pytest.mark.parametrize("srid", [4490, 4326])
def test_geographic_epsg_crs_is_lat_lon(client: httpx.Client, station: dict[int, tuple[str, float, float]],
                                        srid: int) -> None:
    response, (first, second) = first_point(client, f"{EPSG}{srid}")
    assert response.headers["content-crs"] == f"<{EPSG}{srid}>"
    assert (first, second) == pytest.approx((station[srid][2], station[srid][1]), abs=1e-6)


def test_web_mercator_is_easting_northing(client: httpx.Client, station: dict[int, tuple[str, float, float]]) -> None:
    _, (x, y) = first_point(client, f"{EPSG}3857")
    assert (x, y) == pytest.approx(station[3857][1:], abs=0.01)


def test_gauss_kruger_is_northing_easting(client: httpx.Client, station: dict[int, tuple[str, float, float]]) -> None:
    _, (first, second) = first_point(client, f"{EPSG}4549")
    assert (first, second) == pytest.approx((station[4549][2], station[4549][1]), abs=0.01)
    assert first > 4_000_000  # a northing, not an easting


def test_crs_short_form_is_understood(client: httpx.Client) -> None:
    response, _ = first_point(client, "EPSG:3857")
    assert response.headers["content-crs"] == f"<{EPSG}3857>"


def test_one_item_in_a_requested_crs(client: httpx.Client, station: dict[int, tuple[str, float, float]]) -> None:
    fid = station[4490][0]
    response = client.get(f"/collections/police_stations/items/{fid}", params={"crs": f"{EPSG}3857"})
    assert response.headers["content-crs"] == f"<{EPSG}3857>"
    assert response.json()["geometry"]["coordinates"] == pytest.approx(station[3857][1:], abs=0.01)


def _bbox_ids(client: httpx.Client, bbox: str, bbox_crs: str | None) -> list[str]:
    params = {"limit": 100, "bbox": bbox, **({"bbox-crs": bbox_crs} if bbox_crs else {})}
    return [f.id for f in features(client.get("/collections/police_stations/items", params=params)).features]


@pytest.mark.parametrize("srid", [4490, 4326, 3857, 4549])
def test_bbox_in_any_crs_finds_the_point(client: httpx.Client, station: dict[int, tuple[str, float, float]],
                                         srid: int) -> None:
    fid, x, y = station[srid]
    d = 1e-4 if srid in (4490, 4326) else 10.0
    northing_first = srid in (4490, 4326, 4549)
    box = (y - d, x - d, y + d, x + d) if northing_first else (x - d, y - d, x + d, y + d)
    assert fid in _bbox_ids(client, ",".join(map(str, box)), f"{EPSG}{srid}")


def test_lon_lat_numbers_as_epsg_4326_are_refused(client: httpx.Client,
                                                  station: dict[int, tuple[str, float, float]]) -> None:
    _, x, y = station[4326]
    box = f"{x - 1e-4},{y - 1e-4},{x + 1e-4},{y + 1e-4}"  # lon/lat numbers, but EPSG:4326 is lat/lon: latitude 123
    response = client.get("/collections/police_stations/items", params={"bbox": box, "bbox-crs": f"{EPSG}4326"})
    assert error(response, 400).parameter == "bbox"
