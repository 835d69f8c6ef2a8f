"""/items and /items/{id}: paging, counts, properties, sorting, types, and malformed parameters."""

from datetime import date

import httpx
import psycopg
import pytest
from api_models import Feature, error, features


def count(db: psycopg.Connection, query: str, *params: object) -> int:
    row = db.execute(query, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


def walk(client: httpx.Client, url: str, params: dict[str, object] | None = None) -> list[str]:
    """Follow `next` links to the end; the ids of every feature."""
    ids: list[str] = []
    response = client.get(url, params=params)
    while True:
        page = features(response)
        ids += [f.id for f in page.features]
        nxt = page.link("next")
        if nxt is None:
            return ids
        response = client.get(nxt.href)


@pytest.mark.parametrize("layer", ["pipelines", "incidents", "buildings"])
def test_cursor_paging_returns_every_feature_once(client: httpx.Client, db: psycopg.Connection,
                                                  layer: str) -> None:
    ids = walk(client, f"/collections/{layer}/items", {"limit": 1000})
    assert len(ids) == len(set(ids)) == count(db, "SELECT row_count FROM ops.layer_stats WHERE layer_id = %s", layer)


def test_next_link_carries_an_opaque_cursor(client: httpx.Client) -> None:
    page = features(client.get("/collections/pipelines/items", params={"limit": 10}))
    nxt = page.link("next")
    assert nxt is not None and "cursor=" in nxt.href and "offset=" not in nxt.href


def test_unfiltered_number_matched_is_the_recorded_count(client: httpx.Client, db: psycopg.Connection) -> None:
    page = features(client.get("/collections/roads/items", params={"limit": 5}))
    assert page.numberMatched == count(db, "SELECT count(*) FROM base.roads")
    assert page.numberReturned == 5


def test_filtered_first_page_counts_up_to_the_bound(client: httpx.Client, db: psycopg.Connection) -> None:
    page = features(client.get("/collections/roads/items", params={"limit": 5, "bbox": "123.3,41.7,123.42,41.8"}))
    want = count(db, "SELECT count(*) FROM base.roads WHERE ST_Intersects(geom, "
                 "ST_MakeEnvelope(123.3, 41.7, 123.42, 41.8, 4490))")
    assert page.numberMatched == want and page.link("next") is not None


def test_filtered_later_pages_do_not_count(client: httpx.Client) -> None:
    first = features(client.get("/collections/roads/items", params={"limit": 5, "bbox": "123.3,41.7,123.5,41.8"}))
    later = features(client.get(first.link("next").href))  # type: ignore[union-attr]
    assert first.numberMatched is not None and later.numberMatched is None


def test_filtered_request_matching_more_than_the_bound_omits_number_matched(client: httpx.Client,
                                                                           db: psycopg.Connection) -> None:
    assert count(db, "SELECT count(*) FROM environment.observations WHERE pollutant = 'AQI'") > 1000
    page = features(client.get("/collections/observations/items", params={"limit": 5, "pollutant": "AQI"}))
    assert page.numberMatched is None and page.numberReturned == 5


def test_filtered_last_page_knows_number_matched(client: httpx.Client, db: psycopg.Connection) -> None:
    page = features(client.get("/collections/pipelines/items", params={"limit": 10000, "utility": "gas"}))
    assert page.numberMatched == page.numberReturned == count(
        db, "SELECT count(*) FROM pipeline.pipelines WHERE utility = 'gas'")


def test_default_limit_is_100(client: httpx.Client) -> None:
    assert features(client.get("/collections/pipelines/items")).numberReturned == 100


def test_limit_above_the_maximum_is_served_as_the_maximum(client: httpx.Client) -> None:
    assert features(client.get("/collections/observations/items", params={"limit": 50000})).numberReturned == 10000


def test_offset_skips_features(client: httpx.Client) -> None:
    first = features(client.get("/collections/roads/items", params={"limit": 10}))
    later = features(client.get("/collections/roads/items", params={"limit": 5, "offset": 5}))
    assert [f.id for f in later.features] == [f.id for f in first.features[5:]]


def test_cursor_page_continues_where_offset_would(client: httpx.Client) -> None:
    first = features(client.get("/collections/roads/items", params={"limit": 3}))
    assert first.link("next") is not None
    second = features(client.get(first.link("next").href))  # type: ignore[union-attr]
    by_offset = features(client.get("/collections/roads/items", params={"limit": 3, "offset": 3}))
    assert [f.id for f in second.features] == [f.id for f in by_offset.features]


def test_last_page_has_no_next_link(client: httpx.Client, db: psycopg.Connection) -> None:
    total = count(db, "SELECT count(*) FROM planning.development_boundary")
    page = features(client.get("/collections/development_boundary/items", params={"limit": total}))
    assert page.link("next") is None and page.numberReturned == total


def test_properties_selects_fields(client: httpx.Client) -> None:
    page = features(client.get("/collections/pipelines/items", params={"limit": 3, "properties": "utility,status"}))
    assert all(set(f.properties) == {"utility", "status"} for f in page.features)


def test_features_carry_fields_and_validity_not_internal_columns(client: httpx.Client) -> None:
    feature = features(client.get("/collections/roads/items", params={"limit": 1})).features[0]
    assert set(feature.properties) == {"name", "road_class", "lanes", "width_m", "valid_from", "valid_to"}


def test_skip_geometry_leaves_geometry_null(client: httpx.Client) -> None:
    page = features(client.get("/collections/roads/items", params={"limit": 3, "skipGeometry": "true"}))
    assert all(f.geometry is None for f in page.features)


def test_sortby_descending_orders_features(client: httpx.Client, db: psycopg.Connection) -> None:
    page = features(client.get("/collections/pipelines/items", params={"limit": 5, "sortby": "-diameter_mm"}))
    row = db.execute("SELECT max(diameter_mm) FROM pipeline.pipelines").fetchone()
    diameters = [f.properties["diameter_mm"] for f in page.features]
    assert diameters == sorted(diameters, reverse=True) and row is not None and diameters[0] == row[0]


def test_sorted_pages_continue_by_offset(client: httpx.Client) -> None:
    ids = walk(client, "/collections/police_stations/items", {"limit": 4, "sortby": "name"})
    page = features(client.get("/collections/police_stations/items", params={"limit": 100, "sortby": "name"}))
    assert ids == [f.id for f in page.features]


def test_integers_stay_json_integers(client: httpx.Client) -> None:
    feature = features(client.get("/collections/pipelines/items", params={"limit": 1})).features[0]
    assert type(feature.properties["diameter_mm"]) is int


def test_reals_keep_a_decimal_point(client: httpx.Client) -> None:
    response = client.get("/collections/roads/items", params={"limit": 200, "properties": "width_m"})
    assert '"width_m":' in response.text
    assert all(type(f["properties"]["width_m"]) is float
               for f in response.json()["features"] if f["properties"]["width_m"] is not None)


def test_dates_stay_iso_dates(client: httpx.Client) -> None:
    feature = features(client.get("/collections/land_use_plan/items", params={"limit": 1})).features[0]
    assert date.fromisoformat(feature.properties["approved_on"])


def test_property_equality_parameter_filters(client: httpx.Client) -> None:
    page = features(client.get("/collections/pipelines/items", params={"limit": 50, "utility": "water"}))
    assert page.numberReturned > 0 and {f.properties["utility"] for f in page.features} == {"water"}


def test_one_feature_by_id(client: httpx.Client) -> None:
    fid = features(client.get("/collections/pipelines/items", params={"limit": 1})).features[0].id
    response = client.get(f"/collections/pipelines/items/{fid}")
    assert response.headers["content-type"].startswith("application/geo+json")
    feature = Feature.model_validate_json(response.content)
    assert feature.id == fid and feature.links is not None
    assert {link.rel for link in feature.links} >= {"self", "collection"}


def test_unknown_feature_is_404(client: httpx.Client) -> None:
    assert error(client.get("/collections/pipelines/items/no-such-fid"), 404).code == "NotFound"


def test_credential_parameter_is_carried_into_next_links(client: httpx.Client) -> None:
    page = features(client.get("/collections/roads/items", params={"limit": 2, "api_key": "secret"}))
    assert "api_key=secret" in page.link("next").href  # type: ignore[union-attr]


def test_credential_parameter_repeated_is_accepted(client: httpx.Client) -> None:
    response = client.get("/collections/roads/items?limit=2&api_key=k&api_key=k")
    assert features(response).numberReturned == 2


@pytest.mark.parametrize(("query", "parameter"), [
    ("limit=0", "limit"), ("limit=ten", "limit"), ("limit=-1", "limit"), ("offset=-3", "offset"),
    ("bbox=1,2,3", "bbox"), ("bbox=a,b,c,d", "bbox"), ("bbox=123,42,122,41", "bbox"), ("bbox=1,2,3,nan", "bbox"),
    ("bbox=120,95,121,96", "bbox"), ("bbox-crs=EPSG:4326", "bbox-crs"), ("bbox=1,2,3,4&bbox-crs=EPSG:1", "bbox-crs"),
    ("datetime=yesterday", "datetime"), ("datetime=2024-02-30", "datetime"), ("datetime=2025-01-01/2024-01-01",
                                                                             "datetime"),
    ("datetime=2024-01-01/2024-02-01/2024-03-01", "datetime"), ("datetime=../..x", "datetime"),
    ("crs=EPSG:9999", "crs"), ("crs=nonsense", "crs"),
    ("filter=diameter_mm%20%3E", "filter"), ("filter=nosuch%3D1", "filter"), ("filter=diameter_mm%3D'big'", "filter"),
    ("filter-lang=cql9", "filter-lang"), ("filter-lang=cql2-json&filter=%7Bnot", "filter"),
    ("filter-crs=EPSG:1&filter=TRUE", "filter-crs"),
    ("sortby=nosuch", "sortby"), ("sortby=geometry", "sortby"), ("sortby=,", "sortby"),
    ("properties=nosuch", "properties"), ("skipGeometry=maybe", "skipGeometry"),
    ("cursor=garbage", "cursor"), ("cursor=k1%25%25", "cursor"), ("diameter_mm=wide", "diameter_mm"),
    ("color=red", "color"), ("limit=1&limit=2", "limit"), ("f=xml", "f"),
])
def test_malformed_parameter_is_400_naming_it(client: httpx.Client, query: str, parameter: str) -> None:
    body = error(client.get(f"/collections/pipelines/items?{query}"), 400)
    assert body.parameter == parameter and body.code == "InvalidParameterValue"


@pytest.mark.parametrize("query", [
    "filter=name%3D'%00'", "datetime=%00", "bbox=1,2,3,4%00", "filter=S_INTERSECTS(geometry,POINT(1e308%201e308))",
    "filter=S_DWITHIN(geometry,POINT(123.4%2041.8),1e308)", "filter=install_year%3D99999999999999999999999",
    "filter=" + "NOT%20" * 400 + "TRUE", "filter=" + "(" * 500 + "TRUE" + ")" * 500,
    "filter-lang=cql2-json&filter=" + "%5B" * 2000 + "%5D" * 2000,
    "filter=S_INTERSECTS(geometry,POLYGON((0%200,1%201,1%200,0%201,0%200)))",
    "filter=name%20LIKE%20'%5C'", "datetime=9999-12-31/..", "datetime=0001-01-01",
])
def test_hostile_input_never_is_a_server_error(client: httpx.Client, query: str) -> None:
    response = client.get(f"/collections/roads/items?{query}")
    assert response.status_code in (200, 400), response.text


def test_fid_with_nul_is_400_naming_it(client: httpx.Client) -> None:
    # a NUL is refused in any path segment before the route runs (services/common/input_guard.py)
    found = error(client.get("/collections/roads/items/a%00b"), 400)
    assert found.code == "InvalidParameterValue" and found.parameter == "featureId"
