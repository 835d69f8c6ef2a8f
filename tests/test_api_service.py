"""The service's own documents: landing page, conformance, collections, OpenAPI, HTML, errors."""

from collections.abc import Iterator

import httpx
import psycopg
import pytest
from api_models import Collection, Collections, Conformance, Landing, error

from gis.layers import LayerRegistry


@pytest.fixture(scope="module")
def client(api_url: str, admin_headers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, headers=admin_headers, timeout=30) as c:
        yield c


def test_landing_links_service_desc_as_openapi_30(client: httpx.Client) -> None:
    landing = Landing.model_validate_json(client.get("/").content)
    rels = {link.rel: link for link in landing.links}
    assert rels["service-desc"].type == "application/vnd.oai.openapi+json;version=3.0"
    assert {"conformance", "data", "service-doc", "self"} <= rels.keys()


def test_openapi_declares_limit_with_default_and_maximum(client: httpx.Client) -> None:
    response = client.get("/openapi")
    assert response.headers["content-type"].startswith("application/vnd.oai.openapi+json")
    schema = response.json()["components"]["parameters"]["limit"]["schema"]
    assert (schema["default"], schema["maximum"]) == (100, 10000)


def test_openapi_declares_the_credential_parameter_on_items(client: httpx.Client) -> None:
    document = client.get("/openapi").json()
    refs = [p["$ref"] for p in document["paths"]["/collections/{collectionId}/items"]["get"]["parameters"]]
    assert "#/components/parameters/api_key" in refs
    assert document["components"]["parameters"]["api_key"]["in"] == "query"


def test_openapi_is_a_valid_openapi_30_document(client: httpx.Client) -> None:
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation import OpenAPIV30SpecValidator

    document = client.get("/openapi").json()
    assert document["openapi"].startswith("3.0")
    validate(document, cls=OpenAPIV30SpecValidator)


def test_conformance_lists_features_parts_1_to_3(client: httpx.Client) -> None:
    conforms = set(Conformance.model_validate_json(client.get("/conformance").content).conformsTo)
    assert {
        "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
        "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
        "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
        "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
        "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
        "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
        "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    } <= conforms


def test_collections_are_the_registry_layers(client: httpx.Client, registry: LayerRegistry) -> None:
    collections = Collections.model_validate_json(client.get("/collections").content)
    assert [c.id for c in collections.collections] == [*registry, *registry.rasters]


def test_collection_extent_comes_from_layer_stats(client: httpx.Client, loaded_db_url: str) -> None:
    collection = Collection.model_validate_json(client.get("/collections/pipelines").content)
    with psycopg.connect(loaded_db_url) as conn:
        row = conn.execute("SELECT extent FROM ops.layer_stats WHERE layer_id = 'pipelines'").fetchone()
    assert row is not None
    assert collection.extent.spatial["bbox"] == [row[0]]


def test_collection_declares_storage_crs_and_crs_list(client: httpx.Client) -> None:
    collection = Collection.model_validate_json(client.get("/collections/land_use_plan").content)
    assert collection.storageCrs == "http://www.opengis.net/def/crs/EPSG/0/4490"
    assert "http://www.opengis.net/def/crs/EPSG/0/4549" in collection.crs
    assert collection.crs[0] == "http://www.opengis.net/def/crs/OGC/1.3/CRS84"


def test_collection_titles_in_chinese_and_english(client: httpx.Client) -> None:
    collection = Collection.model_validate_json(client.get("/collections/land_use_plan").content)
    assert collection.titles == {"zh": "控制性详细规划", "en": "Land-use plan (regulatory detailed plan)"}


def test_collection_temporal_extent_of_a_plan_reaches_the_future(client: httpx.Client) -> None:
    collection = Collection.model_validate_json(client.get("/collections/land_use_plan").content)
    assert collection.extent.temporal is not None
    start, end = collection.extent.temporal["interval"][0]
    assert start < "2020" and end > "2027"


def test_collection_links_items_and_queryables(client: httpx.Client) -> None:
    collection = Collection.model_validate_json(client.get("/collections/roads").content)
    rels = {(link.rel, link.type) for link in collection.links}
    assert ("items", "application/geo+json") in rels
    assert ("http://www.opengis.net/def/rel/ogc/1.0/queryables", "application/schema+json") in rels


def test_unknown_collection_is_404(client: httpx.Client) -> None:
    assert error(client.get("/collections/nope"), 404).code == "NotFound"


def test_unknown_collection_items_is_404(client: httpx.Client) -> None:
    assert error(client.get("/collections/nope/items"), 404).code == "NotFound"


def test_queryables_is_json_schema_of_the_fields(client: httpx.Client) -> None:
    response = client.get("/collections/pipelines/queryables")
    assert response.headers["content-type"].startswith("application/schema+json")
    schema = response.json()
    assert schema["properties"]["diameter_mm"]["type"] == "integer"
    assert schema["properties"]["utility"]["enum"][0] == "water"
    assert schema["properties"]["geometry"]["format"] == "geometry-linestring"


def test_queryables_of_an_event_layer_marks_its_time(client: httpx.Client) -> None:
    schema = client.get("/collections/incidents/queryables").json()
    assert schema["properties"]["occurred_at"] == {"type": "string", "format": "date-time", "title": "发生时间",
                                                   "x-ogc-role": "primary-instant"}


@pytest.mark.parametrize("path", ["/", "/collections", "/collections/roads", "/collections/roads/items",
                                  "/collections/roads/queryables", "/conformance", "/openapi"])
def test_every_page_is_browsable_as_html(client: httpx.Client, path: str) -> None:
    response = client.get(path, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text and "http://" not in response.text.split("<body>")[0]


def test_html_items_page_draws_the_features_on_an_svg_map(client: httpx.Client) -> None:
    page = client.get("/collections/buildings/items", params={"f": "html", "limit": 20}).text
    assert page.count("<path d=") == 20
    assert "<script" not in page


def test_html_feature_page_shows_its_properties(client: httpx.Client) -> None:
    fid = client.get("/collections/roads/items", params={"limit": 1}).json()["features"][0]["id"]
    page = client.get(f"/collections/roads/items/{fid}", params={"f": "html"}).text
    assert "<svg" in page and "road_class" in page


def test_unsupported_format_is_400(client: httpx.Client) -> None:
    assert error(client.get("/collections", params={"f": "xml"}), 400).parameter == "f"


def test_unknown_parameter_on_a_document_is_400(client: httpx.Client) -> None:
    assert error(client.get("/collections", params={"color": "red"}), 400).parameter == "color"


def test_credential_parameter_is_accepted_everywhere(client: httpx.Client) -> None:
    for path in ("/", "/openapi", "/conformance", "/collections", "/collections/roads", "/collections/roads/items"):
        assert client.get(path, params={"api_key": "k"}).status_code == 200, path


def test_large_responses_are_gzipped_on_request(client: httpx.Client) -> None:
    response = client.get("/collections/roads/items", params={"limit": 100},
                          headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["numberReturned"] == 100
