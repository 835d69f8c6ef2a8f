"""Malformed input never gets a 500: each class of hostile input, sent to the real service, gets a 4xx with
the JSON exception body naming the parameter at fault.

The classes (issue 15, item 3): a NUL (`%00`) in any path segment or query value, and escaped in a JSON
body; an execute request that is valid JSON but not an object; numbers past any sensible range (±1e308,
NaN, infinity, huge integers) in query parameters and process inputs; corrupt and truncated uploads; and
input nested past Python's recursion limit. The NUL vectors are driven by the served OpenAPI document, so
routes added later are covered as they land.

The module serves its own clone (execution requests write jobs).
"""

import base64
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
from conftest import ADMIN_HEADERS, cloned_database

# Values for the parameters a path needs to reach its route (the rest stay as in the document).
PATH_VALUES = {"collectionId": "roads", "tileMatrixSetId": "WebMercatorQuad", "tileMatrix": "0", "tileRow": "0",
               "tileCol": "0", "process_id": "police-nearest", "processId": "police-nearest"}


@pytest.fixture(scope="module")
def http(server_url: str, template_db: str,
         serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[httpx.Client]:
    with cloned_database(server_url, template_db, "gis_test_malformed") as db_url, serve_api(db_url) as url, \
            httpx.Client(base_url=url, timeout=60, headers=ADMIN_HEADERS) as client:
        yield client


def refused(response: httpx.Response, parameter: str | None = None, status: int = 400) -> dict[str, Any]:
    """The answer is a 4xx (`status`) JSON exception naming `parameter` (or, if None, some parameter)."""
    assert response.status_code == status, (response.request.url, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["code"] and body["description"], body
    if parameter is None:
        assert body.get("parameter"), body
    else:
        assert body.get("parameter") == parameter, body
    return body


def _get_operations(http: httpx.Client) -> list[tuple[str, list[str], list[str]]]:
    """(path, path parameters, query parameters) of every GET operation of the served document."""
    document = http.get("/openapi", params={"f": "json"}).json()
    shared = document["components"]["parameters"]
    found = []
    for path, operations in document["paths"].items():
        if "get" not in operations:
            continue
        params = [shared[p["$ref"].rsplit("/", 1)[-1]] if "$ref" in p else p
                  for p in operations["get"].get("parameters", [])]
        found.append((path, [p["name"] for p in params if p["in"] == "path"],
                      [p["name"] for p in params if p["in"] == "query" and p["name"] != "api_key"]))
    return found


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"{([^}]+)}", lambda m: values.get(m.group(1), PATH_VALUES.get(m.group(1), "x")), path)


# -- NUL -------------------------------------------------------------------------------------------------

def test_nul_in_any_path_segment_is_a_400_naming_it(http: httpx.Client) -> None:
    operations = _get_operations(http)
    tried = 0
    for path, path_params, _query in operations:
        for name in path_params:
            refused(http.get(_fill(path, {name: "a%00b"})), name)
            tried += 1
    assert tried >= 15  # collections, items, tiles, coverages, processes, jobs, catalog records, ...


def test_nul_in_any_query_value_is_a_400_naming_it(http: httpx.Client) -> None:
    tried = 0
    for path, _path_params, query in _get_operations(http):
        for name in query:
            refused(http.get(f"{_fill(path, {})}?{name}=%00"), name)
            tried += 1
    assert tried >= 40
    # the two found by the probe, and a parameter no route declares
    refused(http.get("/jobs/%00"), "job_id")
    refused(http.get("/audit", params={"layer": "\x00"}), "layer")
    refused(http.get("/collections/roads/items", params={"lanes": "1\x00"}), "lanes")


def test_nul_escaped_in_a_json_body_is_a_400_naming_where(http: httpx.Client) -> None:
    """Where a route names it (process inputs, the overlap check's body) the place; else the body, as PostgreSQL
    refuses it (a sensor batch names each bad reading: tests/test_sensing.py)."""
    r = http.post("/processes/pipe-burst/execution", json={"inputs": {"pipe": "JS\x00"}})
    refused(r, "inputs.pipe")
    refused(http.post("/api/planning/overlap-checks", json={"project": "\x00"}), "body.project")
    refused(http.post("/processes/overlap-check/execution", json={"inputs": {"rules": ["a", "\x00"]}}),
            "inputs.rules[1]")


# -- execute requests that are not objects -----------------------------------------------------------------

@pytest.mark.parametrize("body", [b"[1]", b'"x"', b"null", b"true", b"1", b"", b"{", b"NaN", b'{"inputs": 1e400}'])
def test_execute_request_that_is_not_an_object_is_a_400(http: httpx.Client, body: bytes) -> None:
    for process in ("police-nearest", "overlap-check", "pipe-burst"):
        refused(http.post(f"/processes/{process}/execution", content=body), "body")  # no Content-Type, as found
        refused(http.post(f"/processes/{process}/execution", content=body,
                          headers={"Content-Type": "application/json"}), "body")


@pytest.mark.parametrize(("body", "parameter"), [({"inputs": [1]}, "inputs"), ({"inputs": "x"}, "inputs"),
                                                 ({"inputs": {}, "outputs": [1]}, "outputs"),
                                                 ({"inputs": {}, "response": {"a": 1}}, "response")])
def test_execute_request_members_of_the_wrong_type_are_a_400(http: httpx.Client, body: Any, parameter: str) -> None:
    refused(http.post("/processes/police-nearest/execution", json=body), parameter)


def test_nesting_past_the_recursion_limit_is_a_400(http: httpx.Client) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for path in ("/processes/police-nearest/execution", "/api/planning/overlap-checks"):
        assert http.post(path, content=deep, headers={"Content-Type": "application/json"}).status_code in (400, 413)
    refused(http.post("/processes/police-nearest/execution", content=b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                      headers={"Content-Type": "application/json"}), "body")


# -- extreme numbers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["-1e308,-1e308,1e308,1e308", "1e308,1e308,-1e308,-1e308", "nan,0,1,1",
                                   "-inf,-inf,inf,inf", "0,0,1e400,1", "-1e300,41,1e300,42", "123,-1e10,124,1e10"])
def test_coverage_bbox_of_extreme_numbers_is_a_400(http: httpx.Client, value: str) -> None:
    refused(http.get("/collections/dem/coverage", params={"bbox": value}), "bbox")


def test_coverage_box_past_the_raster_is_cut_to_it(http: httpx.Client) -> None:
    """A box holding the whole raster and far more (the globe, or ±1e8 m) is the whole raster."""
    whole = http.get("/collections/dem/coverage")
    wide = http.get("/collections/dem/coverage", params={"bbox": "-180,-90,180,90"})
    metres = http.get("/collections/dem/coverage", params={
        "bbox": "-1e8,-1e8,1e8,1e8", "bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/3857"})
    assert metres.status_code == 200 and len(metres.content) == len(whole.content)
    assert whole.status_code == wide.status_code == 200
    assert len(wide.content) == len(whole.content)


@pytest.mark.parametrize("value", ["Lon(-1e308:1e308),Lat(-1e308:1e308)", "Lon(nan:1),Lat(0:1)",
                                   "Lon(0:inf),Lat(0:1)"])
def test_coverage_subset_of_extreme_numbers_is_a_400(http: httpx.Client, value: str) -> None:
    refused(http.get("/collections/dem/coverage", params={"subset": value}), "subset")


@pytest.mark.parametrize("value", ["1e308", "-1e308", "NaN", "inf", "99999999999999999999999", "1.5", "-1"])
def test_integer_query_parameters_of_extreme_numbers_are_a_400(http: httpx.Client, value: str) -> None:
    refused(http.get("/jobs", params={"limit": value}), "limit")
    refused(http.get("/collections/roads/items", params={"offset": value}), "offset")


@pytest.mark.parametrize(("process", "inputs", "parameter"), [
    ("police-hotspots", {"bbox": [-1e308, -1e308, 1e308, 1e308]}, "bbox"),
    ("police-hotspots", {"bbox": [1e308, 1e308, -1e308, -1e308]}, "bbox"),
    ("police-hotspots", {"cell_m": 1e308}, "cell_m"),
    ("police-nearest", {"point": [123.4, 41.8], "count": 10**30}, "count"),
    ("police-nearest", {"point": [1e308, 1e308]}, "point"),
    ("dem-profile", {"pipes": ["x"], "step_m": -1e308}, "step_m"),
    ("plan-conflicts", {"check": "x", "min_area_m2": -1e308}, "min_area_m2"),
    ("pipe-cover", {"bbox": [123.4, 41.7, 1e308, 41.8]}, "bbox"),
])
def test_process_number_inputs_of_extreme_values_are_a_400(http: httpx.Client, process: str, inputs: dict[str, Any],
                                                          parameter: str) -> None:
    refused(http.post(f"/processes/{process}/execution", json={"inputs": inputs}), parameter)


# -- corrupt uploads ----------------------------------------------------------------------------------------

KML = (b'<?xml version="1.0" encoding="UTF-8"?><kml xmlns="http://www.opengis.net/kml/2.2"><Document><Placemark>'
       b"<Polygon><outerBoundaryIs><LinearRing><coordinates>123.40,41.75 123.402,41.75 123.402,41.752 123.40,41.752 "
       b"123.40,41.75</coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark></Document></kml>")
CORRUPT = [("plan.kml", KML[:n]) for n in (1, 30, 60, 120, 200, len(KML) - 10)] + [
    ("plan.kml", b"<!DOCTYPE k [<!ENTITY a SYSTEM 'file:///etc/passwd'>]><kml>&a;</kml>"),
    ("plan.gpkg", b"SQLite format 3\x00" + b"\x00" * 200), ("plan.gpkg", b"garbage"),
    ("plan.zip", b"PK\x03\x04"), ("plan.zip", b"PK\x05\x06" + b"\x00" * 18),
    ("plan.geojson", b'{"type": "Polygon", "coordinates": 5}'), ("plan.geojson", b"[" * 3000),
    ("plan.geojson", b'{"type": "Polygon", "coordinates": [[[1e308, 0], [0, 1e308], [0, 0], [1e308, 0]]]}'),
]


@pytest.mark.parametrize(("name", "content"), CORRUPT)
def test_corrupt_upload_is_a_400_naming_the_file(http: httpx.Client, name: str, content: bytes) -> None:
    refused(http.post("/api/planning/overlap-checks", files={"file": (name, content, "application/octet-stream")}))
    refused(http.post("/api/planning/overlap-checks", params={"filename": name}, content=content,
                      headers={"Content-Type": "application/octet-stream"}))
    refused(http.post("/processes/overlap-check/execution", json={"inputs": {
        "file": base64.b64encode(content).decode(), "filename": name}}), "file")


# -- empty values ------------------------------------------------------------------------------------------

def test_empty_values_are_parameters_left_out(http: httpx.Client) -> None:
    """`?datetime=&f=` (as an HTML form sends them) is valid under the OpenAPI document, and answered as if left
    out; `properties=` alone keeps its meaning (no properties)."""
    plain = http.get("/collections/roads/items", params={"limit": 3})
    empty = http.get("/collections/roads/items?limit=3&datetime=&f=&filter=&sortby=&bbox=")
    assert empty.status_code == 200 and empty.headers["content-type"].startswith("application/geo+json")
    assert [f["id"] for f in empty.json()["features"]] == [f["id"] for f in plain.json()["features"]]
    for path in ("/collections?f=", "/conformance?f=", "/catalog/items?q=&f=", "/api/pipeline/sensor-warnings?f=",
                 "/collections/roads/tiles/WebMercatorQuad/0/0/0?datetime="):
        assert http.get(path).status_code in (200, 204), path
    none = http.get("/collections/roads/items?limit=1&properties=").json()["features"][0]
    assert none["properties"] == {}


# -- what the document says ------------------------------------------------------------------------------------

def test_method_not_allowed_names_every_method_of_the_path(http: httpx.Client) -> None:
    """GET and DELETE /jobs/{id} are two routes: a 405 there lists both (Starlette alone named GET only)."""
    r = http.put("/jobs/x")
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD", "DELETE"}
    assert http.patch("/collections/roads").headers["allow"] == "GET, HEAD"


def test_dismissing_a_job_answers_with_a_content_type(http: httpx.Client) -> None:
    started = http.post("/processes/police-nearest/execution", headers={"Prefer": "respond-async"},
                        json={"inputs": {"point": [123.43, 41.80]}})
    assert started.status_code == 201, started.text[:300]
    r = http.delete(started.headers["location"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json()
