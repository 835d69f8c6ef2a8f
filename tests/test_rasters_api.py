"""Raster layers over the service: collections, OGC API Coverages (GeoTIFF subsets), PNG map tiles, and the
raster-sample and dem-profile processes; every number checked against rasterio reads of the served COG.
"""

import io
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
import rasterio
from conftest import ADMIN_HEADERS
from PIL import Image
from rasterio.io import MemoryFile
from rasterio.windows import Window

from gis.layers import LayerRegistry
from gis.rasters import versions

HALF = 20037508.342789244
TILE_SIZE = 256


@pytest.fixture(scope="module")
def raster_db(loaded_db_url: str) -> str:
    """The suite's loaded database: its template refreshed every raster layer from its sample."""
    return loaded_db_url


@pytest.fixture(scope="module")
def base(api_url: str) -> str:
    return api_url


@pytest.fixture(scope="module")
def admin(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, headers=ADMIN_HEADERS, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def anonymous(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=60) as c:
        yield c


def cog(url: str, layer_id: str) -> Path:
    with psycopg.connect(url) as conn:
        found = versions.version_at(conn, layer_id)
    assert found is not None
    return found.path


def bilinear(path: Path, lon: float, lat: float) -> float:
    """Between the four cell centres around the point, computed here from the raw grid."""
    with rasterio.open(path) as src:
        col, row = ~src.transform @ (lon, lat)
        c0, r0 = math.floor(col - 0.5), math.floor(row - 0.5)
        fx, fy = col - 0.5 - c0, row - 0.5 - r0
        w = src.read(1, window=Window(c0, r0, 2, 2)).astype(np.float64)
    return float(w[0, 0] * (1 - fx) * (1 - fy) + w[0, 1] * fx * (1 - fy) + w[1, 0] * (1 - fx) * fy + w[1, 1] * fx * fy)


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2 ** z
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


def pixel_lonlat(z: int, col: int, row: int, i: int, j: int) -> tuple[float, float]:
    """The lon/lat of the centre of pixel (i, j) of a WebMercatorQuad tile."""
    size = 2 * HALF / 2 ** z / TILE_SIZE
    mx, my = -HALF + (col * TILE_SIZE + i + 0.5) * size, HALF - (row * TILE_SIZE + j + 0.5) * size
    return mx / HALF * 180.0, math.degrees(math.atan(math.sinh(my / HALF * math.pi)))


def execute(client: httpx.Client, process: str, inputs: dict[str, object]) -> httpx.Response:
    return client.post(f"/processes/{process}/execution", json={"inputs": inputs})


# -- collections ------------------------------------------------------------------------------------------

def test_rasters_are_collections_with_coverage_and_map_links(anonymous: httpx.Client) -> None:
    listed = {c["id"]: c for c in anonymous.get("/collections").json()["collections"]}
    dem = listed["dem"]
    assert dem["itemType"] == "coverage" and dem["dataType"] == "coverage"
    rels = {link["rel"] for link in dem["links"]}
    assert {"http://www.opengis.net/def/rel/ogc/1.0/coverage", "http://www.opengis.net/def/rel/ogc/1.0/schema",
            "http://www.opengis.net/def/rel/ogc/1.0/tilesets-map"} <= rels
    assert "items" not in rels
    assert "roads" in listed and listed["roads"]["itemType"] == "feature"
    assert anonymous.get("/collections/dem").json()["extent"]["spatial"]["bbox"] == dem["extent"]["spatial"]["bbox"]


def test_an_internal_raster_is_hidden_from_anonymous_callers_and_audited(anonymous: httpx.Client,
                                                                        admin: httpx.Client,
                                                                        raster_db: str) -> None:
    assert "imagery" not in {c["id"] for c in anonymous.get("/collections").json()["collections"]}
    for path in ("/collections/imagery", "/collections/imagery/coverage",
                 "/collections/imagery/map/tiles/WebMercatorQuad/14/6160/13715"):
        response = anonymous.get(path)
        assert response.status_code == 404 and response.json()["description"] == "no layer 'imagery'"
    assert admin.get("/collections/imagery/coverage", params={"bbox": "123.40,41.74,123.41,41.75"}).status_code == 200
    with psycopg.connect(raster_db) as conn:
        row = conn.execute("SELECT subject, path FROM ops.audit_log WHERE layer_id = 'imagery' "
                           "ORDER BY 1 DESC LIMIT 1").fetchone()
    assert row is not None and row[1] == "/collections/imagery/coverage"


def test_rangetype_describes_the_bands(anonymous: httpx.Client) -> None:
    schema = anonymous.get("/collections/dem/coverage/rangetype").json()
    assert schema["properties"]["elevation"]["x-ogc-unit"] == "m"
    classes = anonymous.get("/collections/land_cover/schema").json()["properties"]["class"]["oneOf"]
    assert classes[0] == {"const": 1.0, "title": "水域 water"}


# -- coverage -----------------------------------------------------------------------------------------------

def test_coverage_subset_matches_a_direct_read_of_the_cog(anonymous: httpx.Client, raster_db: str) -> None:
    bbox = (123.402, 41.741, 123.418, 41.757)
    response = anonymous.get("/collections/dem/coverage", params={"bbox": ",".join(map(str, bbox))})
    assert response.status_code == 200 and response.headers["content-type"].startswith("image/tiff")
    with MemoryFile(response.content) as memory, memory.open() as got, rasterio.open(cog(raster_db, "dem")) as src:
        # whole cells covering the box, at most one cell beyond it on each side
        left, bottom, right, top = got.bounds
        rx, ry = src.res
        assert left <= bbox[0] < left + rx and right - rx < bbox[2] <= right
        assert bottom <= bbox[1] < bottom + ry and top - ry < bbox[3] <= top
        row, col = src.index(left + rx / 2, top - ry / 2)
        expected = src.read(1, window=Window(col, row, got.width, got.height))
        assert got.crs == src.crs and got.nodata == src.nodata
        np.testing.assert_array_equal(got.read(1), expected)


def test_subset_and_bbox_in_another_crs_give_the_same_cells(anonymous: httpx.Client) -> None:
    by_bbox = anonymous.get("/collections/land_cover/coverage", params={"bbox": "123.40,41.74,123.41,41.75"})
    by_subset = anonymous.get("/collections/land_cover/coverage",
                              params={"subset": "Lat(41.74:41.75),Lon(123.40:123.41)"})
    by_lat_lon = anonymous.get("/collections/land_cover/coverage", params={
        "bbox": "41.74,123.40,41.75,123.41", "bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/4490"})
    arrays = []
    for response in (by_bbox, by_subset, by_lat_lon):
        assert response.status_code == 200, response.text
        with MemoryFile(response.content) as memory, memory.open() as found:
            arrays.append(found.read())
    np.testing.assert_array_equal(arrays[0], arrays[1])
    np.testing.assert_array_equal(arrays[0], arrays[2])


@pytest.mark.parametrize(("params", "parameter"), [
    ({"bbox": "123.4,41.7,123.5"}, "bbox"),
    ({"bbox": "100,10,101,11"}, "bbox"),
    ({"subset": "Height(1:2)"}, "subset"),
    ({"bbox-crs": "EPSG:9999", "bbox": "1,2,3,4"}, "bbox-crs"),
    ({"f": "png"}, "f"),
    ({"datetime": "yesterday"}, "datetime"),
    ({"colour": "red"}, "colour"),
])
def test_bad_coverage_requests_are_400_naming_the_parameter(anonymous: httpx.Client, params: dict[str, str],
                                                            parameter: str) -> None:
    response = anonymous.get("/collections/dem/coverage", params=params)
    assert response.status_code == 400
    assert response.json()["parameter"] == parameter


def test_coverage_before_the_first_version_is_404(anonymous: httpx.Client) -> None:
    response = anonymous.get("/collections/dem/coverage", params={"datetime": "2001-01-01T00:00:00Z"})
    assert response.status_code == 404 and "no version" in response.json()["description"]


# -- map tiles ----------------------------------------------------------------------------------------------

def _tile(client: httpx.Client, path: str) -> np.ndarray:
    response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (TILE_SIZE, TILE_SIZE) and image.mode == "RGBA"
    return np.asarray(image)


def test_land_cover_tile_has_the_class_palette_where_the_classes_are(anonymous: httpx.Client, raster_db: str,
                                                                     registry: LayerRegistry) -> None:
    spec = registry.rasters["land_cover"]
    palette = {int(s.value): tuple(int(s.colour[k:k + 2], 16) for k in (1, 3, 5)) for s in spec.rendering.stops}
    z = 14
    col, row = tile_of(123.41, 41.75, z)
    image = _tile(anonymous, f"/collections/land_cover/map/tiles/WebMercatorQuad/{z}/{row}/{col}")
    with rasterio.open(cog(raster_db, "land_cover")) as src:
        pixels = [(i, j) for i in range(4, TILE_SIZE, 12) for j in range(4, TILE_SIZE, 12)]
        codes = [int(v[0]) for v in src.sample([pixel_lonlat(z, col, row, i, j) for i, j in pixels])]
    hits = [tuple(image[j, i, :3]) == palette[code] and image[j, i, 3] == 255
            for (i, j), code in zip(pixels, codes, strict=True)]
    assert sum(hits) / len(hits) >= 0.97  # cell edges may round either way
    assert len(set(codes)) >= 3


def test_dem_ramp_tile_colours_follow_the_stops(anonymous: httpx.Client, raster_db: str,
                                                registry: LayerRegistry) -> None:
    stops = registry.rasters["dem"].rendering.stops
    at = [s.value for s in stops]
    rgb = [[int(s.colour[k:k + 2], 16) for s in stops] for k in (1, 3, 5)]
    z = 15
    col, row = tile_of(123.43, 41.77, z)
    image = _tile(anonymous, f"/collections/dem/styles/ramp/map/tiles/WebMercatorQuad/{z}/{row}/{col}")
    path = cog(raster_db, "dem")
    for i in range(8, TILE_SIZE, 40):
        for j in range(8, TILE_SIZE, 40):
            value = bilinear(path, *pixel_lonlat(z, col, row, i, j))
            expected = [np.interp(value, at, channel) for channel in rgb]
            assert np.abs(image[j, i, :3].astype(float) - expected).max() <= 3, (i, j, value)


def test_dem_default_tile_is_shaded_and_transparent_outside_the_data(anonymous: httpx.Client) -> None:
    z = 11
    col, row = tile_of(123.42, 41.76, z)
    image = _tile(anonymous, f"/collections/dem/map/tiles/WebMercatorQuad/{z}/{row}/{col}")
    alpha = image[..., 3]
    assert (alpha == 255).any() and (alpha == 0).any()  # the DEM covers part of a zoom-11 tile
    assert len(np.unique(image[alpha == 255][:, :3], axis=0)) > 50


def test_tiles_carry_the_version_etag_and_answer_304(anonymous: httpx.Client) -> None:
    path = "/collections/dem/map/tiles/WebMercatorQuad/13/3077/6904"
    first = anonymous.get(path)
    etag = first.headers["etag"]
    assert "dem-v" in etag and first.headers["cache-control"].startswith("public")
    again = anonymous.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""


def test_tilejson_points_at_the_tiles(anonymous: httpx.Client, base: str) -> None:
    document = anonymous.get("/collections/dem/map/tiles/WebMercatorQuad/tilejson.json").json()
    assert document["tiles"] == [f"{base}/collections/dem/map/tiles/WebMercatorQuad/{{z}}/{{y}}/{{x}}"]
    lon0, lat0, lon1, lat1 = document["bounds"]
    assert 123.2 < lon0 < lon1 < 123.6 and 41.6 < lat0 < lat1 < 41.9


def test_a_tile_outside_the_matrix_is_400(anonymous: httpx.Client) -> None:
    response = anonymous.get("/collections/dem/map/tiles/WebMercatorQuad/3/9/0")
    assert response.status_code == 400 and response.json()["parameter"] == "tileRow"


# -- processes ---------------------------------------------------------------------------------------------

POINTS = [[123.4012, 41.7431], [123.4477, 41.7702], [123.3911, 41.7803]]


def test_sampling_matches_rasterio_sampling_of_the_served_cog(anonymous: httpx.Client, raster_db: str) -> None:
    path = cog(raster_db, "dem")
    nearest = execute(anonymous, "raster-sample", {"points": {"type": "MultiPoint", "coordinates": POINTS},
                                                   "method": "nearest"})
    assert nearest.status_code == 200, nearest.text
    with rasterio.open(path) as src:
        expected = [float(v[0]) for v in src.sample(POINTS)]
    assert [f["properties"]["value"] for f in nearest.json()["features"]] == pytest.approx(expected, abs=1e-4)
    smooth = execute(anonymous, "raster-sample", {"points": {"type": "MultiPoint", "coordinates": POINTS}})
    values = [f["properties"]["value"] for f in smooth.json()["features"]]
    assert values == pytest.approx([bilinear(path, lon, lat) for lon, lat in POINTS], abs=1e-6)


def test_sampling_takes_points_in_another_crs(anonymous: httpx.Client) -> None:
    import pyproj

    to_gk = pyproj.Transformer.from_crs("EPSG:4490", "EPSG:4550", always_xy=True)
    projected = [list(to_gk.transform(lon, lat)) for lon, lat in POINTS]
    lonlat = execute(anonymous, "raster-sample", {"points": {"type": "MultiPoint", "coordinates": POINTS}}).json()
    gk = execute(anonymous, "raster-sample", {"points": {"type": "MultiPoint", "coordinates": projected},
                                              "crs": "EPSG:4550"}).json()
    assert [f["properties"]["value"] for f in gk["features"]] == pytest.approx(
        [f["properties"]["value"] for f in lonlat["features"]], abs=1e-6)


@pytest.mark.parametrize(("inputs", "parameter"), [
    ({"points": {"type": "LineString", "coordinates": [[123.4, 41.7], [123.5, 41.8]]}}, "points"),
    ({"points": {"type": "Point", "coordinates": [123.4, 41.75]}, "method": "cubic"}, "method"),
    ({"points": {"type": "Point", "coordinates": [123.4, 41.75]}, "crs": "EPSG:0"}, "crs"),
    ({"points": {"type": "Point", "coordinates": [123.4, 41.75]}, "shape": 1}, "shape"),
])
def test_bad_sampling_input_is_400(anonymous: httpx.Client, inputs: dict[str, object], parameter: str) -> None:
    response = execute(anonymous, "raster-sample", inputs)
    assert response.status_code == 400
    assert parameter in response.json()["description"]


def _pipes(url: str, count: int) -> list[tuple[str, float, float]]:
    """A run of connected water pipes (each one's to_node the next one's from_node) with their depths."""
    with psycopg.connect(url) as conn:
        first = conn.execute("SELECT fid FROM pipeline.pipelines WHERE utility = 'water' AND depth_start_m IS NOT NULL "
                             "ORDER BY fid LIMIT 1").fetchone()
        assert first is not None
        run, fid = [], first[0]
        while fid is not None and len(run) < count:
            row = conn.execute("SELECT fid, depth_start_m, depth_end_m, to_node FROM pipeline.pipelines "
                               "WHERE fid = %s", (fid,)).fetchone()
            assert row is not None
            run.append((row[0], row[1], row[2]))
            following = conn.execute(
                "SELECT fid FROM pipeline.pipelines WHERE from_node = %s AND utility = 'water' "
                "AND fid <> ALL(%s) ORDER BY fid LIMIT 1", (row[3], [r[0] for r in run])).fetchone()
            fid = following[0] if following else None
    return run


def test_profile_along_pipes_comes_back_as_data_matching_the_dem_and_the_depths(
        admin: httpx.Client, raster_db: str) -> None:
    pipes = _pipes(raster_db, 3)
    assert len(pipes) >= 2
    response = execute(admin, "dem-profile", {"pipes": [p[0] for p in pipes], "step_m": 10})
    assert response.status_code == 200, response.text
    found = response.json()
    path = cog(raster_db, "dem")
    points = found["points"]
    for point in points:
        assert point["ground_m"] == pytest.approx(bilinear(path, point["lon"], point["lat"]), abs=2e-3)
    for (fid, depth_start, depth_end), pipe in zip(pipes, found["pipes"], strict=True):
        on_pipe = [p for p in points if p["pipe"] == fid]
        assert pipe["fid"] == fid
        assert on_pipe[0]["ground_m"] - on_pipe[0]["pipe_top_m"] == pytest.approx(depth_start, abs=2e-3)
        assert on_pipe[-1]["ground_m"] - on_pipe[-1]["pipe_top_m"] == pytest.approx(depth_end, abs=2e-3)
        assert on_pipe[-1]["distance_m"] == pytest.approx(pipe["to_m"], abs=1e-3)
    distances = [p["distance_m"] for p in points]
    assert distances == sorted(distances) and found["length_m"] == pytest.approx(found["pipes"][-1]["to_m"], abs=0.01)


def test_profile_comes_back_as_a_chart(admin: httpx.Client, raster_db: str) -> None:
    fids = [p[0] for p in _pipes(raster_db, 2)]
    svg = execute(admin, "dem-profile", {"pipes": fids, "format": "svg"})
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.startswith("<svg") and "pipe top" in svg.text and "<path" in svg.text
    page = execute(admin, "dem-profile", {"pipes": fids, "format": "html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<svg" in page.text and fids[0] in page.text
    assert not any(tag in page.text for tag in ("<script", "<link", "src="))  # no CDN: nothing fetched


def test_profile_along_a_line_gives_the_ground_only(anonymous: httpx.Client, raster_db: str) -> None:
    line = {"type": "LineString", "coordinates": [[123.40, 41.75], [123.42, 41.75]]}
    found = execute(anonymous, "dem-profile", {"line": line, "step_m": 50}).json()
    assert found["pipes"] == [] and all(p["pipe_top_m"] is None for p in found["points"])
    assert 1600 < found["length_m"] < 1700  # 0.02° of longitude at 41.75° N
    path = cog(raster_db, "dem")
    assert found["points"][3]["ground_m"] == pytest.approx(
        bilinear(path, found["points"][3]["lon"], found["points"][3]["lat"]), abs=2e-3)


def test_profile_of_pipes_needs_a_caller_who_may_read_them(anonymous: httpx.Client, raster_db: str) -> None:
    fids = [p[0] for p in _pipes(raster_db, 1)]
    response = execute(anonymous, "dem-profile", {"pipes": fids})
    # The process machinery answers every refused input with 400; the pipes' existence is not revealed.
    assert response.status_code == 400 and "may not read" in response.json()["description"]


@pytest.mark.parametrize(("inputs", "parameter"), [
    ({"pipes": ["NO-SUCH-PIPE"]}, "pipes"),
    ({"pipes": ["x"], "step_m": 0}, "step_m"),
    ({}, "inputs"),
    ({"line": {"type": "Point", "coordinates": [123.4, 41.75]}}, "line"),
    ({"pipes": ["x"], "format": "pdf"}, "format"),
])
def test_bad_profile_input_is_400_naming_it(admin: httpx.Client, inputs: dict[str, object], parameter: str) -> None:
    response = execute(admin, "dem-profile", inputs)
    assert response.status_code == 400
    assert parameter in response.json()["description"]
