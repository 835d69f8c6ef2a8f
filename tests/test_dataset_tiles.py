"""Vector tiles of the whole dataset (/tiles/WebMercatorQuad/{z}/{y}/{x}): one MVT layer per collection, each the
caller's own tile of that collection, over the real service."""

from collections.abc import Iterator
from typing import Any

import httpx
import mapbox_vector_tile
import psycopg
import pytest
from conftest import TEST_KEYS
from test_tiles import tile_of

from gis.layers import LayerRegistry
from gis.settings import Settings

TMS = "WebMercatorQuad"


@pytest.fixture(scope="module")
def busy_tile(loaded_db_url: str) -> tuple[int, int, int]:
    """A z15 tile (every field carried) in the city centre where pipes, roads and buildings all are."""
    with psycopg.connect(loaded_db_url) as conn:
        row = conn.execute("SELECT ST_X(p), ST_Y(p) FROM pipeline.pipelines, ST_PointOnSurface(geom) p "
                           "ORDER BY fid LIMIT 1").fetchone()
    assert row is not None
    return tile_of(row[0], row[1], 15)


@pytest.fixture(scope="module")
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=60) as client:
        yield client


def _headers(role: str | None) -> dict[str, str]:
    return {"X-API-Key": TEST_KEYS[role]} if role else {}


def _layers(response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 204:
        return {}
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    return mapbox_vector_tile.decode(response.content)


def _features(layer: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sorted((repr(sorted(f["properties"].items())), repr(f["geometry"])) for f in layer["features"])


def _own_tiles(http: httpx.Client, role: str | None, ids: list[str], where: tuple[int, int, int],
               **params: str) -> dict[str, Any]:
    """Each collection's own tile for this caller, decoded: its one MVT layer (none where it has no feature)."""
    z, x, y = where
    found: dict[str, Any] = {}
    for layer_id in ids:
        layers = _layers(http.get(f"/collections/{layer_id}/tiles/{TMS}/{z}/{y}/{x}", params=params,
                                  headers=_headers(role)))
        found.update(layers)
    return found


def _readable(http: httpx.Client, role: str | None) -> list[str]:
    collections = http.get("/collections", headers=_headers(role)).json()["collections"]
    return [c["id"] for c in collections if c["itemType"] == "feature"]


@pytest.mark.parametrize("role", [None, "planner", "pipeline_app", "admin"])
def test_each_layer_of_a_dataset_tile_is_the_callers_own_tile_of_that_collection(
        http: httpx.Client, busy_tile: tuple[int, int, int], role: str | None) -> None:
    z, x, y = busy_tile
    readable = _readable(http, role)
    together = _layers(http.get(f"/tiles/{TMS}/{z}/{y}/{x}", headers=_headers(role)))
    own = _own_tiles(http, role, readable, busy_tile)
    assert len(own) >= (3 if role == "admin" else 1)  # busy enough to test something (pipes, roads, buildings)
    assert set(together) == set(own)
    for layer_id, layer in own.items():
        assert _features(together[layer_id]) == _features(layer), layer_id
        assert together[layer_id]["extent"] == layer["extent"]


def test_a_masked_field_stays_out_of_the_dataset_tile(http: httpx.Client, busy_tile: tuple[int, int, int]) -> None:
    z, x, y = busy_tile
    admin = _layers(http.get(f"/tiles/{TMS}/{z}/{y}/{x}", params={"collections": "pipelines"},
                             headers=_headers("admin")))["pipelines"]
    planner = _layers(http.get(f"/tiles/{TMS}/{z}/{y}/{x}", params={"collections": "pipelines"},
                               headers=_headers("planner")))["pipelines"]
    assert any("pressure_class" in f["properties"] for f in admin["features"])
    assert not any({"pressure_class", "owner"} & set(f["properties"]) for f in planner["features"])


def test_collections_chooses_the_layers_and_their_order(http: httpx.Client, busy_tile: tuple[int, int, int]) -> None:
    z, x, y = busy_tile
    for asked in (["roads", "pipelines"], ["pipelines", "roads"]):
        response = http.get(f"/tiles/{TMS}/{z}/{y}/{x}", params={"collections": ",".join(asked)},
                            headers=_headers("admin"))
        assert list(_layers(response)) == asked


def test_as_of_a_date_each_layer_is_its_own_tile_as_of_that_date(
        http: httpx.Client, loaded_db_url: str) -> None:
    with psycopg.connect(loaded_db_url) as conn:
        row = conn.execute("SELECT ST_X(p), ST_Y(p), valid_from FROM planning.land_use_plan, "
                           "ST_PointOnSurface(geom) p WHERE valid_from > now() ORDER BY fid LIMIT 1").fetchone()
    assert row is not None  # a parcel the plan brings in later
    where = tile_of(row[0], row[1], 14)
    z, x, y = where
    day = row[2].isoformat()  # the instant it takes effect
    now = _layers(http.get(f"/tiles/{TMS}/{z}/{y}/{x}", params={"collections": "land_use_plan"},
                           headers=_headers("admin")))
    later = _layers(http.get(f"/tiles/{TMS}/{z}/{y}/{x}", params={"collections": "land_use_plan", "datetime": day},
                             headers=_headers("admin")))
    own = _own_tiles(http, "admin", ["land_use_plan"], where, datetime=day)
    assert _features(later["land_use_plan"]) == _features(own["land_use_plan"])
    assert _features(later["land_use_plan"]) != _features(now.get("land_use_plan", {"features": []}))


def test_a_hidden_collection_is_refused_exactly_as_one_that_does_not_exist(
        http: httpx.Client, registry: LayerRegistry) -> None:
    readable = set(_readable(http, None))
    hidden = next(layer_id for layer_id in registry if layer_id not in readable)
    answers = []
    for asked in (hidden, "no_such_layer"):
        response = http.get(f"/tiles/{TMS}/12/1000/1000", params={"collections": asked})
        assert response.status_code == 400, response.text
        body = response.json()
        assert "collections" in body["description"]
        answers.append(body["description"].replace(asked, "<id>"))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("params", [{"collections": "roads,,pipelines"}, {"collections": " , "},
                                    {"datetime": "yesterday"}, {"colections": "roads"}])
def test_bad_parameters_are_400_naming_them(http: httpx.Client, params: dict[str, str]) -> None:
    response = http.get(f"/tiles/{TMS}/12/1000/1000", params=params, headers=_headers("admin"))
    assert response.status_code == 400, response.text
    assert next(iter(params)) in response.json()["description"]


def test_revalidating_with_the_etag_is_304(http: httpx.Client, busy_tile: tuple[int, int, int]) -> None:
    z, x, y = busy_tile
    first = http.get(f"/tiles/{TMS}/{z}/{y}/{x}", headers=_headers("admin"))
    assert first.status_code == 200 and first.headers["etag"]
    assert first.headers["cache-control"].startswith("private")  # internal layers in it
    again = http.get(f"/tiles/{TMS}/{z}/{y}/{x}", headers={**_headers("admin"), "If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and not again.content
    other = http.get(f"/tiles/{TMS}/{z}/{y}/{x}", params={"collections": "roads"},
                     headers={**_headers("admin"), "If-None-Match": first.headers["etag"]})
    assert other.status_code == 200  # another set of layers is another tile


def test_each_audited_layer_read_through_a_dataset_tile_writes_its_audit_row(
        http: httpx.Client, busy_tile: tuple[int, int, int], loaded_db_url: str) -> None:
    z, x, y = busy_tile
    with psycopg.connect(loaded_db_url) as conn:
        before = conn.execute("SELECT coalesce(max(audit_id), 0) FROM ops.audit_log").fetchone()
    assert before is not None
    response = http.get(f"/tiles/{TMS}/{z}/{y}/{x}", params={"collections": "roads,pipelines"},
                        headers=_headers("pipeline_app"))
    assert response.status_code == 200
    with psycopg.connect(loaded_db_url) as conn:
        rows = conn.execute("SELECT layer_id, status, query->>'tile' FROM ops.audit_log WHERE audit_id > %s AND "
                            "action = 'read' AND path = %s", (before[0], f"/tiles/{TMS}/{z}/{y}/{x}")).fetchall()
    # pipelines are internal (audited), roads public (not)
    assert rows == [("pipelines", 200, f"{z}/{y}/{x}")]


def test_the_dataset_tilesets_list_and_metadata_describe_the_callers_layers(
        http: httpx.Client, settings: Settings) -> None:
    listing = http.get("/tiles").json()
    template = next(link for link in listing["tilesets"][0]["links"] if link["rel"] == "item")["href"]
    assert template.endswith(f"/tiles/{TMS}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}")
    for role in (None, "admin"):
        metadata = http.get(f"/tiles/{TMS}", headers=_headers(role)).json()
        assert sorted(layer["id"] for layer in metadata["layers"]) == sorted(_readable(http, role))
        box = metadata["boundingBox"]
        assert box["lowerLeft"] + box["upperRight"] == list(settings.city_extent)
    assert http.get("/tiles/NoSuchMatrixSet").status_code == 404
    landing = http.get("/").json()
    assert any(link["href"].endswith("/tiles") for link in landing["links"])


@pytest.mark.parametrize(("path", "parameter"), [("14/abc/1", "tileRow"), ("99/0/0", "tileMatrix"),
                                                 ("3/0/9", "tileCol")])
def test_a_bad_tile_address_is_400_naming_it(http: httpx.Client, path: str, parameter: str) -> None:
    response = http.get(f"/tiles/{TMS}/{path}", headers=_headers("admin"))
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == parameter
