"""POST /api/planning/overlap-checks on the real service: inputs, formats, and bad input as 4xx naming it."""

import io
import json
from pathlib import Path

import geopandas as gpd
import httpx
import pytest
from shapely.geometry import box, mapping

from gis.analysis.proposal import MAX_UPLOAD_BYTES

URL = "/api/planning/overlap-checks"
SQUARE = box(123.40, 41.75, 123.402, 41.752)


def post(api_url: str, **kwargs: object) -> httpx.Response:
    return httpx.post(api_url + URL, timeout=30, **kwargs)  # type: ignore[arg-type]


def test_geometry_gets_a_report(api_url: str) -> None:
    r = post(api_url, json={"geometry": mapping(SQUARE), "proposed_use": "R"})
    assert r.status_code == 200
    body = r.json()
    assert body["verdict"] in ("conflict", "clear") and len(body["rules"]) == 6
    assert body["proposal"]["area_m2"] > 30000 and body["area_crs"] == "EPSG:4550"


def test_project_gets_a_report(api_url: str) -> None:
    r = post(api_url, json={"project": "XM202300046"})
    assert r.status_code == 200 and r.json()["proposal"]["project"] == "XM202300046"


def test_multipart_upload(api_url: str, tmp_path: Path) -> None:
    path = tmp_path / "plan.gpkg"
    gpd.GeoDataFrame({"proposed_use": ["B"]}, geometry=[SQUARE], crs="EPSG:4490").to_crs(4549).to_file(path)
    r = post(api_url, files={"file": ("plan.gpkg", path.read_bytes(), "application/geopackage+sqlite3")})
    assert r.status_code == 200 and r.json()["proposal"]["proposed_use"] == "B"


def test_file_as_the_body(api_url: str, tmp_path: Path) -> None:
    path = tmp_path / "plan.kml"
    gpd.GeoDataFrame({"name": ["a"]}, geometry=[SQUARE], crs="EPSG:4326").to_file(path, driver="KML")
    r = httpx.post(api_url + URL, params={"proposed_use": "R"}, content=path.read_bytes(), timeout=30,
                   headers={"content-type": "application/vnd.google-earth.kml+xml"})
    assert r.status_code == 200 and r.json()["proposal"]["source"].startswith("KML")


def test_geojson_report(api_url: str) -> None:
    r = post(api_url, params={"f": "geojson"}, json={"project": "XM202300046"})
    assert r.headers["content-type"] == "application/geo+json"
    roles = {f["properties"]["role"] for f in r.json()["features"]}
    assert roles == {"proposal", "conflict", "overlap"}


def test_html_report_is_self_contained(api_url: str) -> None:
    r = post(api_url, params={"f": "html"}, json={"project": "XM202300046"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text.replace("http://www.w3.org/2000/svg", "")
    assert "<svg" in page and "http://" not in page and "https://" not in page and "<script" not in page


def test_datetime_is_accepted(api_url: str) -> None:
    r = post(api_url, json={"project": "XM202300046", "datetime": "2030-06-01"})
    assert r.status_code == 200 and r.json()["as_of"] == "2030-06-01"


def test_rules_endpoint_lists_the_rules(api_url: str) -> None:
    body = httpx.get(api_url + "/api/planning/overlap-rules").json()
    assert body["rules"][0]["id"] == "ecological_redline" and "R" in body["use_codes"]


@pytest.mark.parametrize(("body", "parameter", "message"), [
    ({"geometry": {"type": "Polygon", "coordinates": [[[123.40, 41.75], [123.41, 41.76], [123.41, 41.75],
                                                        [123.40, 41.76], [123.40, 41.75]]]}},
     "geometry", "Self-intersection"),
    ({"geometry": {"type": "Polygon", "coordinates": []}}, "geometry", "empty"),
    ({"geometry": mapping(SQUARE), "crs": "EPSG:123456"}, "crs", "unknown CRS"),
    ({"geometry": mapping(box(116.3, 39.9, 116.31, 39.91))}, "geometry", "outside the city"),
    ({"geometry": mapping(SQUARE), "proposed_use": "Q"}, "proposed_use", "not in the compatibility table"),
    ({"geometry": mapping(SQUARE), "datetime": "yesterday"}, "datetime", "not an RFC 3339"),
    ({"geometry": mapping(SQUARE), "rules": ["nope"]}, "rules", "no rule 'nope'"),
    ({}, "body", "exactly one of geometry, file and project"),
    ({"geometry": mapping(SQUARE), "colour": "red"}, "colour", "unknown member"),
])
def test_bad_input_is_a_400_naming_it(api_url: str, body: dict, parameter: str, message: str) -> None:
    r = post(api_url, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["parameter"] == parameter and message in r.json()["description"]


def test_file_that_is_not_what_it_claims_is_a_400(api_url: str) -> None:
    r = post(api_url, files={"file": ("plan.gpkg", json.dumps(mapping(SQUARE)).encode(), "application/octet-stream")})
    assert r.status_code == 400 and "claims to be GeoPackage" in r.json()["description"]


def test_invalid_json_is_a_400(api_url: str) -> None:
    r = httpx.post(api_url + URL, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["parameter"] == "body"


def test_oversized_upload_is_refused_with_413(api_url: str) -> None:
    big = io.BytesIO(b"{" + b" " * (MAX_UPLOAD_BYTES + 2**20 + 10))
    r = post(api_url, content=big.getvalue(), headers={"content-type": "application/zip"})
    assert r.status_code == 413 and "at most" in r.json()["description"]


def test_unknown_project_is_a_404(api_url: str) -> None:
    r = post(api_url, json={"project": "XM-none"})
    assert r.status_code == 404
