"""The catalog (OGC API Records) through the real service: records from the registry and the refresh log,
search by q, bbox and datetime, the access policy, and the landing page's link."""

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin

import httpx
import psycopg
import pytest
from conftest import TEST_KEYS

from gis.layers import LayerRegistry
from gis.security.policy import Policy, load_policy, policy_path
from gis.settings import Settings


@pytest.fixture(scope="module")
def policy(registry: LayerRegistry, settings: Settings) -> Policy:
    return load_policy(policy_path(settings.layers_dir), registry)


def _records(client: httpx.Client, **params: str) -> dict[str, Any]:
    response = client.get("/catalog/items", params=params)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].startswith("application/geo+json")
    return response.json()


def _ids(document: dict[str, Any]) -> list[str]:
    return [r["id"] for r in document["features"]]


def test_landing_page_links_the_catalog(client: httpx.Client) -> None:
    links = client.get("/").json()["links"]
    catalog = [link for link in links if link["href"].split("?")[0].endswith("/catalog")]
    assert catalog and catalog[0]["rel"] == "catalog"
    assert "/catalog" in client.get("/", params={"f": "html"}).text


def test_catalog_is_a_record_collection(client: httpx.Client) -> None:
    document = client.get("/catalog").json()
    assert (document["itemType"], document["type"]) == ("record", "Catalog")
    assert any(link["rel"] == "items" and link["type"] == "application/geo+json" for link in document["links"])
    conformance = client.get("/conformance").json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-records-1/1.0/conf/record-core" in conformance


def test_catalog_is_not_among_the_feature_collections(client: httpx.Client) -> None:
    """The OAPIF clients list /collections; a record collection there would look like a feature layer to them."""
    ids = [c["id"] for c in client.get("/collections").json()["collections"]]
    assert "catalog" not in ids


def test_every_layer_has_a_record_with_the_registry_metadata(client: httpx.Client, registry: LayerRegistry) -> None:
    records = {r["id"]: r for r in _records(client, limit="1000")["features"]}
    assert set(registry) <= set(records)
    for spec in registry.values():
        p = records[spec.id]["properties"]
        assert p["titles"] == {"zh": spec.title.zh, "en": spec.title.en}
        assert p["description"] == spec.description
        assert p["keywords"] == list(spec.keywords)
        assert p["department"] == spec.department and p["contacts"][0]["organization"] == spec.department
        assert p["accessClass"] == spec.access.value
        assert p["updateFrequency"] == spec.update_frequency
        assert p["themes"][0]["concepts"][0]["id"] == spec.domain.value


def test_record_carries_the_last_refresh_and_extent(client: httpx.Client, db: psycopg.Connection) -> None:
    row = db.execute(
        "SELECT s.row_count, s.extent, r.refresh_id, r.finished_at, r.inserted, r.rejected FROM ops.layer_stats s "
        "JOIN ops.refresh_log r ON r.refresh_id = s.last_refresh_id WHERE s.layer_id = 'pipelines'").fetchone()
    assert row is not None
    found = client.get("/catalog/items/pipelines").json()
    p = found["properties"]
    assert p["numberOfFeatures"] == row[0]
    refresh = p["lastRefresh"]
    assert refresh["refreshId"] == row[2]
    assert refresh["finishedAt"] == row[3].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (refresh["inserted"], refresh["rejected"]) == (row[4], row[5])
    ring = found["geometry"]["coordinates"][0]
    assert [ring[0][0], ring[0][1], ring[2][0], ring[2][1]] == pytest.approx(list(row[1]))
    assert datetime.fromisoformat(found["time"]["interval"][0]) <= datetime.now(UTC)


def test_q_finds_by_title_keyword_and_department(client: httpx.Client, registry: LayerRegistry) -> None:
    assert "pipelines" in _ids(_records(client, q="地下管线"))  # Chinese title
    spec = registry["pipelines"]
    by_department = set(_ids(_records(client, q=spec.department))) & set(registry)
    assert by_department == {s.id for s in registry.values() if s.department == spec.department}
    both = set(_ids(_records(client, q="Underground pipelines,police")))
    assert {"pipelines", "police_stations"} <= both
    assert _ids(_records(client, q="no-such-thing-anywhere")) == []


def test_bbox_keeps_layers_whose_extent_meets_the_box(client: httpx.Client, db: psycopg.Connection) -> None:
    box = (123.40, 41.78, 123.42, 41.80)
    found = set(_ids(_records(client, bbox=",".join(map(str, box)), limit="1000")))
    rows = db.execute("SELECT layer_id, extent FROM ops.layer_stats WHERE extent IS NOT NULL").fetchall()
    expected = {layer for layer, e in rows if e[0] <= box[2] and box[0] <= e[2] and e[1] <= box[3] and box[1] <= e[3]}
    assert expected and found & {layer for layer, _ in rows} == expected
    assert _ids(_records(client, bbox="10,10,11,11")) == []


def test_datetime_keeps_layers_with_data_then(client: httpx.Client, db: psycopg.Connection) -> None:
    rows = db.execute("SELECT layer_id, time_extent[1], time_extent[2] FROM ops.layer_stats").fetchall()
    # Just after the earliest start: the oldest layers match, those that begin later do not.
    instant = min(start for _, start, _ in rows if start is not None).replace(microsecond=0) + timedelta(seconds=1)
    expected = {layer for layer, start, end in rows
                if start is not None and start <= instant and (end is None or end >= instant)}
    found = set(_ids(_records(client, datetime=instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                              limit="1000")))
    assert expected and len(expected) < len(rows)
    assert found & {layer for layer, *_ in rows} == expected
    now = set(_ids(_records(client, datetime=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), limit="1000")))
    assert "pipelines" in now


def test_paging_with_limit_and_next(client: httpx.Client) -> None:
    first = _records(client, limit="5")
    assert first["numberReturned"] == 5 and first["numberMatched"] > 5
    nxt = next(link["href"] for link in first["links"] if link["rel"] == "next")
    second = client.get(nxt).json()
    assert not set(_ids(first)) & set(_ids(second))


def test_hidden_layers_are_not_in_the_catalog(api_url: str, registry: LayerRegistry, policy: Policy) -> None:
    for role_name, key in ((None, None), ("planner", TEST_KEYS["planner"])):
        headers = {"X-API-Key": key} if key else {}
        role = policy.anonymous if role_name is None else policy.role(role_name)
        assert role is not None
        with httpx.Client(base_url=api_url, headers=headers, timeout=60) as http:
            vector_ids = set(_ids(_records(http, limit="1000"))) & set(registry)
            assert vector_ids == set(role.views)
            hidden = next(layer for layer in registry if layer not in role.views)
            assert http.get(f"/catalog/items/{hidden}").status_code == 404
            assert hidden not in http.get("/catalog", params={"f": "html"}).text


@pytest.mark.parametrize(("params", "parameter"), [
    ({"bbox": "1,2"}, "bbox"), ({"datetime": "soon"}, "datetime"), ({"limit": "0"}, "limit"),
    ({"q": " , "}, "q"), ({"sortby": "title"}, "sortby"),
])
def test_bad_search_parameters_are_400s(client: httpx.Client, params: dict[str, str], parameter: str) -> None:
    response = client.get("/catalog/items", params=params)
    assert response.status_code == 400
    assert response.json()["parameter"] == parameter


def test_catalog_html_has_a_map_and_a_search_form(client: httpx.Client) -> None:
    page = client.get("/catalog/items", params={"f": "html", "q": "pipeline"}).text
    assert "<svg" in page and 'name="q"' in page and "pipelines" in page


def test_record_page_map_links_back_to_the_record_itself(client: httpx.Client) -> None:
    path = "/catalog/items/roads"
    page = client.get(path, params={"f": "html"}).text
    hrefs = re.findall(r'<svg.*?<a href="([^"]+)"', page, flags=re.S)
    assert hrefs, "the record's page draws its extent as a link"
    assert client.get(urljoin(f"http://host{path}", hrefs[0]).removeprefix("http://host")).status_code == 200


def test_record_links_its_collection_items_and_downloads(client: httpx.Client) -> None:
    links = client.get("/catalog/items/roads").json()["links"]
    rels = {link["rel"] for link in links}
    assert {"self", "collection", "describedby", "items", "enclosure"} <= rels
    download = next(link["href"] for link in links if link["rel"] == "enclosure")
    assert client.get(download).status_code == 200


def test_raster_layers_have_records(client: httpx.Client, registry: LayerRegistry) -> None:
    assert registry.rasters, "the registry declares raster layers (layers/rasters/)"
    for raster_id, spec in registry.rasters.items():
        found = client.get(f"/catalog/items/{raster_id}").json()
        p = found["properties"]
        assert (p["layerKind"], p["titles"]["en"], p["department"]) == ("raster", spec.title.en, spec.department)
