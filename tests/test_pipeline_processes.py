"""The pipeline processes through OGC API - Processes, on the real service with its own database."""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import process_client
import pytest
from conftest import TEST_KEYS, cloned_database

PIPE_PROCESSES = {"pipe-burst", "pipe-trace", "pipe-cross-section", "pipe-clearance", "pipe-cover"}
LINE = {"type": "LineString", "coordinates": [[123.3698, 41.7275], [123.3706, 41.7275]]}


@pytest.fixture(scope="module")
def api(server_url: str, template_db: str, serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    with cloned_database(server_url, template_db, "gis_test_pipeline_processes") as url, serve_api(url) as base:
        yield base

OWNER = {"X-API-Key": TEST_KEYS["pipeline_app"]}  # the role the jobs here run as


def execute(api: str, process: str, inputs: dict, prefer: str | None = None,
            role: str | None = "pipeline_app") -> httpx.Response:
    return process_client.execute(api, process, inputs, prefer, role)


def test_pipeline_processes_are_listed_and_described(api: str) -> None:
    ids = {p["id"] for p in httpx.get(f"{api}/processes").json()["processes"]}
    assert ids >= PIPE_PROCESSES
    d = httpx.get(f"{api}/processes/pipe-burst").json()
    assert {"pipe", "point", "format"} <= set(d["inputs"])


def test_burst_as_json_geojson_and_html(api: str) -> None:
    r = execute(api, "pipe-burst", {"pipe": "JS-S0000001"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"]["valves_to_close"] == len(body["valves_to_close"]) > 0
    r = execute(api, "pipe-burst", {"pipe": "JS-S0000001", "format": "geojson"})
    assert r.status_code == 200 and r.json()["type"] == "FeatureCollection"
    r = execute(api, "pipe-burst", {"pipe": "JS-S0000001", "format": "html"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and "<svg" in r.text


@pytest.mark.parametrize(("process", "inputs", "key"), [
    ("pipe-trace", {"pipe": "JS-S0000001", "direction": "both"}, "traced_pipes"),
    ("pipe-cross-section", {"line": LINE}, "crossings"),
    ("pipe-clearance", {"pairs": ["water_large_sewer", "gas_low_sewer"]}, "violations"),
    ("pipe-cover", {"utilities": ["gas"]}, "violations"),
])
def test_each_process_returns_places(api: str, process: str, inputs: dict, key: str) -> None:
    r = execute(api, process, {**inputs, "format": "geojson"})
    assert r.status_code == 200, r.text
    assert r.json()["features"]
    r = execute(api, process, inputs)
    assert r.status_code == 200 and r.json()[key]


def test_bad_input_is_a_400_naming_it(api: str) -> None:
    r = execute(api, "pipe-burst", {"pipe": "NO-SUCH-PIPE"})
    assert r.status_code in (400, 404) and "NO-SUCH-PIPE" in r.text
    r = execute(api, "pipe-trace", {"pipe": "JS-S0000001", "direction": "sideways"})
    assert r.status_code == 400 and "direction" in r.text


def test_asynchronous_burst_job(api: str) -> None:
    import time

    r = execute(api, "pipe-burst", {"pipe": "JS-S0000001", "format": "geojson"}, prefer="respond-async")
    assert r.status_code == 201
    location = r.headers["Location"]
    job = location.rsplit("/", 1)[-1]
    deadline = time.monotonic() + 30
    while httpx.get(f"{api}/jobs/{job}", headers=OWNER).json()["status"] not in ("successful", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    result = httpx.get(f"{api}/jobs/{job}/results", headers=OWNER)
    assert result.status_code == 200 and result.json()["type"] == "FeatureCollection"


@pytest.mark.parametrize("role", [None, "planner", "environmental_app"])
def test_callers_who_may_not_read_the_network_whole_cannot_run_it(api: str, role: str | None) -> None:
    """Anonymous callers, planners (pressure class and owner masked) and other applications are refused."""
    r = execute(api, "pipe-cover", {}, role=role)
    assert r.status_code == 400 and "may not read" in r.json()["description"]
    assert "features" not in r.json()
