"""POST /api/planning/overlap-checks on the real service: inputs, formats, and bad input as 4xx naming it."""

import io
import json
from pathlib import Path

import geopandas as gpd
import httpx
import pytest
from conftest import TEST_KEYS
from shapely.geometry import box, mapping

from gis.analysis.proposal import MAX_UPLOAD_BYTES

URL = "/api/planning/overlap-checks"
SQUARE = box(123.40, 41.75, 123.402, 41.752)


def post(api_url: str, role: str | None = "planner", headers: dict[str, str] | None = None,
         **kwargs: object) -> httpx.Response:
    """As a planner unless told otherwise (role None: anonymous)."""
    sent = {**({"X-API-Key": TEST_KEYS[role]} if role else {}), **(headers or {})}
    return httpx.post(api_url + URL, timeout=30, headers=sent, **kwargs)  # type: ignore[arg-type]


# A project that overlaps the red line, an internal layer (so does its project layer).
def _red_line_project(api_url: str) -> str:
    listed = httpx.get(f"{api_url}/collections/construction_projects/items", params={"limit": 1000},
                       headers={"X-API-Key": TEST_KEYS["admin"]}, timeout=30).json()
    for fid in (f["id"] for f in listed["features"]):
        r = post(api_url, json={"project": fid, "rules": ["ecological_redline"]})
        if r.status_code == 200 and r.json()["rules"][0]["status"] == "conflict":
            return fid
    raise AssertionError("no sample project overlaps the red line")


def test_anonymous_caller_learns_nothing_from_internal_layers(api_url: str) -> None:
    fid = _red_line_project(api_url)
    as_planner = post(api_url, json={"project": fid}).json()
    geometry = as_planner["proposal"].get("geometry") or mapping(SQUARE)
    anonymous = post(api_url, role=None, json={"geometry": geometry, "proposed_use": "R"})
    assert anonymous.status_code == 200
    by_rule = {r["id"]: r for r in anonymous.json()["rules"]}
    for internal in ("ecological_redline", "basic_farmland", "pipeline_corridors"):
        hidden = by_rule[internal]
        assert hidden["status"] == "not_evaluated"
        assert hidden["features"] == [] and hidden["geometry"] is None and hidden["area_m2"] == 0
    assert by_rule["development_boundary"]["status"] in ("conflict", "clear")  # public: evaluated


def test_anonymous_caller_cannot_check_an_internal_project(api_url: str) -> None:
    assert post(api_url, role=None, json={"project": "XM202300046"}).status_code == 404


def test_masked_fields_stay_masked_in_features_hit(api_url: str) -> None:
    wide = box(123.30, 41.70, 123.50, 41.90)
    for role, shows in (("planner", False), ("admin", True)):
        r = post(api_url, role=role, json={"geometry": mapping(wide), "rules": ["pipeline_corridors"]})
        hits = r.json()["rules"][0]["features"]
        assert hits, "the wide box crosses pipelines"
        assert any("pressure_class" in h["attributes"] for h in hits) is shows, role


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


def test_rules_endpoint_lists_the_rules_on_layers_the_caller_reads(api_url: str) -> None:
    body = httpx.get(api_url + "/api/planning/overlap-rules", headers={"X-API-Key": TEST_KEYS["planner"]}).json()
    assert body["rules"][0]["id"] == "ecological_redline" and "R" in body["use_codes"]
    anonymous = httpx.get(api_url + "/api/planning/overlap-rules").json()
    assert {r["layer"] for r in anonymous["rules"]} == {"development_boundary", "land_use_plan", "water_bodies"}


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
