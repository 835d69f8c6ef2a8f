"""OGC API Tiles against the real service on a loaded database: metadata, MVT content, ETag and caching."""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, timedelta
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
from gis.layers import GeometryType, LayerRegistry, LayerSpec
from gis.refresh.runner import RefreshRequest, run_refresh
from gis.settings import Settings
from services.common.tile_cache import TileCache

TMS = "WebMercatorQuad"


@pytest.fixture(scope="module")
def client(api_url: str, admin_headers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, headers=admin_headers, timeout=60) as http:
        yield http


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    """(z, column, row) of the WebMercatorQuad tile holding the point."""
    import math

    n = 1 << z
    rad = math.radians(lat)
    return z, int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(rad)) / math.pi) / 2 * n)


def a_feature(url: str, spec: LayerSpec) -> dict[str, Any]:
    """One stored row of the layer (the first by fid) with a point on it, as the database holds it."""
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute(sql.SQL(
            "SELECT t.*, ST_X(ST_PointOnSurface(geom)) AS lon, ST_Y(ST_PointOnSurface(geom)) AS lat "
            "FROM {} t ORDER BY fid LIMIT 1").format(ids.current_table(spec)))
        row = cursor.fetchone()
    assert row is not None, f"{spec.id} is empty in the test database"
    return row


def tile_path(layer_id: str, z: int, x: int, y: int) -> str:
    return f"/collections/{layer_id}/tiles/{TMS}/{z}/{y}/{x}"


def decode(content: bytes) -> dict[str, Any]:
    return mapbox_vector_tile.decode(content)


def expected_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    return value


# -- the tile matrix set and the metadata documents ---------------------------------------------------


def test_tile_matrix_sets_list_web_mercator_quad(client: httpx.Client) -> None:
    body = client.get("/tileMatrixSets").json()
    assert [t["id"] for t in body["tileMatrixSets"]] == [TMS]
    assert body["tileMatrixSets"][0]["uri"] == "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"
    assert body["tileMatrixSets"][0]["links"][0]["href"].endswith(f"/tileMatrixSets/{TMS}")


def test_web_mercator_quad_definition_has_the_standard_matrices(client: httpx.Client) -> None:
    body = client.get(f"/tileMatrixSets/{TMS}").json()
    assert body["crs"] == "http://www.opengis.net/def/crs/EPSG/0/3857"
    matrices = body["tileMatrices"]
    assert [m["id"] for m in matrices] == [str(z) for z in range(25)]
    assert matrices[0]["scaleDenominator"] == pytest.approx(559082264.0287178)
    assert matrices[0]["cellSize"] == pytest.approx(156543.03392804097)
    assert matrices[14]["matrixWidth"] == matrices[14]["matrixHeight"] == 16384
    assert matrices[3]["pointOfOrigin"] == pytest.approx([-20037508.3427892, 20037508.3427892])


def test_unknown_tile_matrix_set_is_404(client: httpx.Client) -> None:
    assert client.get("/tileMatrixSets/WorldCRS84Quad").status_code == 404
    assert client.get("/collections/roads/tiles/WorldCRS84Quad/0/0/0").status_code == 404


def test_tilesets_list_links_to_the_tileset(client: httpx.Client) -> None:
    body = client.get("/collections/roads/tiles").json()
    (tileset,) = body["tilesets"]
    assert tileset["dataType"] == "vector"
    assert tileset["tileMatrixSetURI"].endswith("/WebMercatorQuad")
    rels = {link["rel"]: link["href"] for link in tileset["links"]}
    assert rels["self"].endswith(f"/collections/roads/tiles/{TMS}")


def test_tileset_metadata_links_the_tile_template_and_tilejson(
    client: httpx.Client, registry: LayerRegistry
) -> None:
    response = client.get(f"/collections/pipelines/tiles/{TMS}")
    assert response.status_code == 200
    body = response.json()
    links = {link["rel"]: link for link in body["links"]}
    item = links["item"]
    assert item["type"] == "application/vnd.mapbox-vector-tile" and item["templated"] is True
    assert item["href"].endswith(f"/collections/pipelines/tiles/{TMS}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}")
    assert links["describedby"]["href"].endswith(f"/collections/pipelines/tiles/{TMS}/tilejson.json")
    assert links["http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"]["href"].endswith(f"/tileMatrixSets/{TMS}")
    (layer,) = body["layers"]
    assert layer["id"] == "pipelines" and layer["geometryDimension"] == 1
    assert set(layer["propertiesSchema"]["properties"]) == {"fid", *registry["pipelines"].field_names}
    lower, upper = body["boundingBox"]["lowerLeft"], body["boundingBox"]["upperRight"]
    assert 122 < lower[0] < upper[0] < 124.5 and 40.5 < lower[1] < upper[1] < 43.5


def test_tilejson_describes_the_layer(client: httpx.Client, registry: LayerRegistry) -> None:
    body = client.get(f"/collections/land_use_plan/tiles/{TMS}/tilejson.json").json()
    assert body["tilejson"] == "3.0.0"
    (template,) = body["tiles"]
    assert template.endswith(f"/collections/land_use_plan/tiles/{TMS}/{{z}}/{{y}}/{{x}}")
    (layer,) = body["vector_layers"]
    assert layer["id"] == "land_use_plan"
    assert set(layer["fields"]) == {"fid", *registry["land_use_plan"].field_names}
    assert layer["fields"]["plot_ratio"] == "Number"
    west, south, east, north = body["bounds"]
    assert west < body["center"][0] < east and south < body["center"][1] < north


def test_unknown_collection_is_404(client: httpx.Client) -> None:
    for path in ("/collections/nope/tiles", f"/collections/nope/tiles/{TMS}",
                 f"/collections/nope/tiles/{TMS}/tilejson.json", tile_path("nope", 0, 0, 0)):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "NotFound"


# -- tiles ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer_id", ["pipelines", "land_use_plan", "police_stations", "observations"])
def test_tile_carries_the_feature_with_its_declared_fields_and_fid(
    client: httpx.Client, loaded_db_url: str, registry: LayerRegistry, layer_id: str
) -> None:
    spec = registry[layer_id]
    row = a_feature(loaded_db_url, spec)
    z, x, y = tile_of(row["lon"], row["lat"], 16)
    response = client.get(tile_path(layer_id, z, x, y))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    layers = decode(response.content)
    assert list(layers) == [layer_id]
    features = {f["properties"]["fid"]: f for f in layers[layer_id]["features"]}
    feature = features[row["fid"]]
    expected = {"fid": row["fid"]} | {
        name: expected_value(row[name]) for name in spec.field_names if row[name] is not None}
    assert feature["properties"].keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, float):
            assert feature["properties"][name] == pytest.approx(value), name
        else:
            assert feature["properties"][name] == value, name
    family = spec.geometry.value.removeprefix("Multi")
    assert feature["geometry"]["type"].removeprefix("Multi") == family
    assert layers[layer_id]["extent"] == mvt.EXTENT


def test_tile_geometry_is_placed_in_web_mercator(client: httpx.Client, loaded_db_url: str,
                                                 registry: LayerRegistry) -> None:
    row = a_feature(loaded_db_url, registry["police_stations"])
    z = 18
    _, x, y = tile_of(row["lon"], row["lat"], z)
    layers = decode(client.get(tile_path("police_stations", z, x, y)).content)
    (feature,) = [f for f in layers["police_stations"]["features"] if f["properties"]["fid"] == row["fid"]]
    px, py = feature["geometry"]["coordinates"]
    # Where the point falls inside its tile, computed independently from lon/lat (y up in the decoder).
    import math

    n = 1 << z
    fx = (row["lon"] + 180) / 360 * n - x
    fy = (1 - math.asinh(math.tan(math.radians(row["lat"]))) / math.pi) / 2 * n - y
    assert px == pytest.approx(fx * mvt.EXTENT, abs=2)
    assert py == pytest.approx((1 - fy) * mvt.EXTENT, abs=2)


def test_tile_without_data_is_204(client: httpx.Client) -> None:
    response = client.get(tile_path("pipelines", 14, 0, 0))
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["etag"]


def test_low_zoom_tile_of_the_city_is_bounded(client: httpx.Client, loaded_db_url: str,
                                              registry: LayerRegistry) -> None:
    row = a_feature(loaded_db_url, registry["pipelines"])
    z, x, y = tile_of(row["lon"], row["lat"], 8)
    response = client.get(tile_path("pipelines", z, x, y))
    assert response.status_code in (200, 204)
    if response.status_code == 200:
        count = len(decode(response.content)["pipelines"]["features"])
        assert count <= mvt.zoom_detail(8, registry["pipelines"].geometry).max_features


@pytest.mark.parametrize("z", [0, 1])
def test_world_scale_tiles_whose_margin_crosses_the_antimeridian_still_draw_the_city(
        client: httpx.Client, loaded_db_url: str, registry: LayerRegistry, z: int) -> None:
    row = a_feature(loaded_db_url, registry["place_names"])
    z, x, y = tile_of(row["lon"], row["lat"], z)
    response = client.get(tile_path("place_names", z, x, y))
    assert response.status_code == 200, response.text
    assert decode(response.content)["place_names"]["features"]


@pytest.mark.parametrize(("path", "parameter"), [
    ((25, 0, 0), "tileMatrix"),
    ((-1, 0, 0), "tileMatrix"),
    ((3, 8, 0), "tileCol"),
    ((3, 0, 8), "tileRow"),
    ((14, -1, 0), "tileCol"),
])
def test_tile_address_out_of_range_is_400_naming_the_parameter(
    client: httpx.Client, path: tuple[int, int, int], parameter: str
) -> None:
    z, x, y = path
    response = client.get(tile_path("roads", z, x, y))
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "InvalidParameterValue"
    assert body["parameter"] == parameter
    assert parameter in body["description"]


def test_tile_address_not_a_number_is_400(client: httpx.Client) -> None:
    response = client.get(f"/collections/roads/tiles/{TMS}/14/abc/1")
    assert response.status_code == 400
    assert response.json()["parameter"] == "tileRow"


# -- caching --------------------------------------------------------------------------------------------


def _a_tile(url: str, spec: LayerSpec, z: int = 15) -> str:
    row = a_feature(url, spec)
    return tile_path(spec.id, *tile_of(row["lon"], row["lat"], z))


def test_cache_control_is_public_only_for_open_layers(client: httpx.Client, loaded_db_url: str,
                                                      registry: LayerRegistry) -> None:
    public = client.get(_a_tile(loaded_db_url, registry["roads"]))
    internal = client.get(_a_tile(loaded_db_url, registry["pipelines"]))
    assert public.headers["cache-control"].startswith("public, max-age=")
    assert internal.headers["cache-control"].startswith("private, max-age=")


def test_etag_names_the_layer_version_and_the_tile(client: httpx.Client, loaded_db_url: str,
                                                   registry: LayerRegistry) -> None:
    path = _a_tile(loaded_db_url, registry["roads"])
    first, second = client.get(path), client.get(path)
    assert first.headers["etag"] == second.headers["etag"]
    other = client.get(_a_tile(loaded_db_url, registry["roads"], z=14))
    assert other.headers["etag"] != first.headers["etag"]
    with psycopg.connect(loaded_db_url) as conn:
        version = conn.execute("SELECT changed_refresh_id FROM ops.layer_stats WHERE layer_id = 'roads'").fetchone()
    assert version is not None and f".r{version[0]}." in first.headers["etag"]


def test_if_none_match_with_the_current_etag_is_304(client: httpx.Client, loaded_db_url: str,
                                                    registry: LayerRegistry) -> None:
    path = _a_tile(loaded_db_url, registry["pipelines"])
    etag = client.get(path).headers["etag"]
    for header in (etag, etag.removeprefix("W/"), f'"something-else", {etag}'):
        response = client.get(path, headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert response.headers["cache-control"].endswith(f"max-age={300}")
    assert client.get(path, headers={"If-None-Match": '"something-else"'}).status_code == 200


def _renamed_station_delivery(url: str, spec: LayerSpec, settings: Settings, out: Path) -> str:
    """The police stations delivery with the first station renamed; returns its fid."""
    fid = a_feature(url, spec)["fid"]
    frame = gpd.read_file(settings.samples_dir / spec.source.path)
    frame.loc[frame[spec.source.fid].astype(str) == fid, "name"] = "改名派出所"
    frame.to_file(out, driver="GeoJSON")
    return fid


def test_etag_changes_exactly_when_a_refresh_changes_the_layer(
    clone_db: Callable[[], str], serve_api: Callable[[str], AbstractContextManager[str]],
    registry: LayerRegistry, settings: Settings, tmp_path: Path
) -> None:
    url, spec = clone_db(), registry["police_stations"]
    path = _a_tile(url, spec, z=16)

    def refresh(source: Path, force: bool = False) -> None:
        run_refresh(url, RefreshRequest(spec, source, settings.city_extent, settings.rejects_dir, force, False))

    with serve_api(url) as base, httpx.Client(base_url=base, timeout=60) as http:
        before = http.get(path)  # built, and kept in the service's tile cache
        refresh(settings.samples_dir / spec.source.path, force=True)  # compares every row, changes none
        unchanged = http.get(path, headers={"If-None-Match": before.headers["etag"]})
        assert unchanged.status_code == 304
        again = http.get(path)
        assert (again.headers["etag"], again.content) == (before.headers["etag"], before.content)

        fid = _renamed_station_delivery(url, spec, settings, tmp_path / "stations.geojson")
        with psycopg.connect(url) as conn:
            before_refresh = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        refresh(tmp_path / "stations.geojson")
        after = http.get(path, headers={"If-None-Match": before.headers["etag"]})
        assert after.status_code == 200
        assert after.headers["etag"] != before.headers["etag"]
        names = {f["properties"]["fid"]: f["properties"]["name"]
                 for f in decode(after.content)["police_stations"]["features"]}
        assert names[fid] == "改名派出所"  # the cached tile of the old version was not served
        assert http.get(path, headers={"If-None-Match": after.headers["etag"]}).status_code == 304
        assert http.get(path).content == after.content

        then = http.get(path, params={"datetime": before_refresh.isoformat()})
        assert then.status_code == 200 and then.headers["etag"] != after.headers["etag"]
        old_names = {f["properties"]["fid"]: f["properties"]["name"]
                     for f in decode(then.content)["police_stations"]["features"]}
        assert old_names[fid] != "改名派出所"  # the version valid then, from history


# -- the SQL side, without a server ----------------------------------------------------------------------


def test_tile_address_validation() -> None:
    assert mvt.Tile(0, 0, 0) == mvt.Tile(0, 0, 0)
    with pytest.raises(mvt.TileOutOfRange) as caught:
        mvt.Tile(2, 4, 0)
    assert caught.value.parameter == "tileCol"
    with pytest.raises(mvt.TileOutOfRange):
        mvt.Tile(True, 0, 0)  # a bool is not a tile matrix


def test_zoom_detail_keeps_points_whole_and_generalises_lines_to_the_pixel() -> None:
    assert mvt.zoom_detail(5, GeometryType.Point).min_size == 0
    assert mvt.zoom_detail(5, GeometryType.Point).simplify == 0
    high, low = mvt.zoom_detail(14, GeometryType.LineString), mvt.zoom_detail(10, GeometryType.Polygon)
    assert high.simplify == 0 and high.min_size == pytest.approx(360 / 2**14 / 4096) and not high.all_fields
    assert all(mvt.zoom_detail(15, geometry).all_fields for geometry in (GeometryType.LineString, GeometryType.Point))
    pixel = 360 / 2**10 / 256  # one pixel of a 256-pixel tile at z10, in degrees of longitude
    # simplified on the map's grid (EPSG:3857), to half its pixel: 2 * 20037508.34 m / 256 / 2^10 across
    assert low.simplify == pytest.approx(40075016.69 / 256 / 2**10 / 2) and low.min_size == pytest.approx(pixel)
    assert low.max_features < high.max_features and not low.all_fields


def test_tile_below_the_detail_zoom_carries_only_what_the_style_draws(client: httpx.Client, loaded_db_url: str,
                                                                      registry: LayerRegistry) -> None:
    # pipelines are drawn by utility (styles/pipeline/pipelines.qml): a city-wide map needs nothing else.
    row = a_feature(loaded_db_url, registry["pipelines"])
    # From FIELDS_ZOOM (15) on a tile carries every field; z14, the last generalised zoom, still only what is drawn.
    every = {"fid", *registry["pipelines"].field_names}
    merged = {mvt.MERGED_ID, mvt.MERGED, "utility"}  # below MERGE_ZOOM: lines merged from many segments, no fid
    for z, wanted in ((10, merged), (12, {"fid", "utility"}), (14, {"fid", "utility"}), (15, every)):
        layers = decode(client.get(tile_path("pipelines", *tile_of(row["lon"], row["lat"], z))).content)
        keys = [set(f["properties"]) for f in layers["pipelines"]["features"]]
        assert keys and all(k <= wanted for k in keys) and set().union(*keys) == wanted, z


def test_full_tile_keeps_its_first_rows_by_rank_not_by_storage(
        clone_db: Callable[[], str], serve_api: Callable[[str], AbstractContextManager[str]],
        admin_headers: dict[str, str]) -> None:
    # 22,995 observations at the stations: one z8 tile over the city holds more than its 4,000 rows. It keeps
    # the first 4,000 by fid (points have no size to rank by), wherever they are stored: here the first half
    # by fid is rewritten, so it lies after the second half in the table.
    url = clone_db()
    z, x, y = tile_of(123.43, 41.8, 8)
    cap = mvt.zoom_detail(z, GeometryType.Point).max_features
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE environment.observations SET value = value WHERE fid <= "
                     "(SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY fid) FROM environment.observations)")
        inside = [r[0] for r in conn.execute(
            "SELECT fid FROM environment.observations WHERE geom && ST_Transform(ST_TileEnvelope(%s, %s, %s, "
            "margin => %s), 4490) ORDER BY fid", (z, x, y, mvt.BUFFER / mvt.EXTENT)).fetchall()]
    assert len(inside) > cap
    with serve_api(url) as api:
        answer = httpx.get(api + tile_path("observations", z, x, y), headers=admin_headers, timeout=60)
    fids = sorted(f["properties"]["fid"] for f in decode(answer.content)["observations"]["features"])
    assert fids == inside[:cap]


def test_tile_sql_names_only_registry_identifiers(registry: LayerRegistry) -> None:
    text = mvt.tile_sql(registry["pipelines"], 14).as_string(None)
    assert '"pipeline"."pipelines"' in text
    assert "ST_AsMVT" in text and "ST_TileEnvelope" in text
    assert "%(z)s" in text and "%(known)s" in text  # values travel as parameters


def test_tile_cache_keeps_the_most_recent_tiles_within_its_bytes() -> None:
    cache = TileCache(max_bytes=1600)
    cache.put(("a", 1, 0, 0), 7, b"x" * 100)
    cache.put(("a", 1, 0, 1), 7, b"y" * 100)
    assert cache.get(("a", 1, 0, 0)) == (7, b"x" * 100)  # now the most recently used
    for n in range(15):  # 1,700 bytes in all: one tile must go
        cache.put(("b", 5, n, 0), 8, b"z" * 100)
    assert cache.get(("a", 1, 0, 0)) is not None
    assert cache.get(("a", 1, 0, 1)) is None  # the least recently used went first
    cache.put(("a", 1, 0, 0), 9, b"w" * 50)  # a newer version replaces the old one
    assert cache.get(("a", 1, 0, 0)) == (9, b"w" * 50)
    cache.put(("huge", 1, 0, 0), 9, b"h" * 200)  # over a sixteenth of the budget: not kept
    assert cache.get(("huge", 1, 0, 0)) is None


def test_tile_cache_of_zero_bytes_keeps_nothing() -> None:
    cache = TileCache(max_bytes=0)
    cache.put(("a", 1, 0, 0), 7, b"")
    cache.put(("a", 1, 0, 1), 7, b"x")
    assert len(cache) == 0


def test_plan_parcels_appear_in_tiles_when_they_take_effect(client: httpx.Client, loaded_db_url: str) -> None:
    with psycopg.connect(loaded_db_url) as conn:
        row = conn.execute(
            "SELECT fid, valid_from, ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)) "
            "FROM planning.land_use_plan WHERE valid_from > now() ORDER BY fid LIMIT 1").fetchone()
    assert row is not None, "the sample plan has no parcel that takes effect later"
    fid, valid_from, lon, lat = row
    path = tile_path("land_use_plan", *tile_of(lon, lat, 16))

    def fids(response: httpx.Response) -> set[str]:
        if response.status_code == 204:
            return set()
        return {f["properties"]["fid"] for f in decode(response.content)["land_use_plan"]["features"]}

    now = client.get(path)
    later = client.get(path, params={"datetime": (valid_from + timedelta(days=1)).isoformat()})
    assert fid not in fids(now)  # as the items of the collection answer "now"
    assert fid in fids(later)
    assert ".d" in now.headers["etag"]  # "now" moves with the day for a layer with dates of its own
    assert later.headers["etag"] != now.headers["etag"]


def test_bad_datetime_is_400_naming_it(client: httpx.Client) -> None:
    response = client.get(tile_path("roads", 14, 13809, 6093), params={"datetime": "yesterday"})
    assert response.status_code == 400
    assert response.json()["parameter"] == "datetime"
