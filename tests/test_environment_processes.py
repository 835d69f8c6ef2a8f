"""The environmental processes through OGC API - Processes, on the real service with its own database."""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime

import httpx
import process_client
import psycopg
import pytest
from conftest import TEST_KEYS, cloned_database

ENV_PROCESSES = {"env-latest", "env-exceedances", "env-source-buffers"}


@pytest.fixture(scope="module")
def database(server_url: str, template_db: str) -> Iterator[str]:
    with cloned_database(server_url, template_db, "gis_test_environment_processes") as url:
        yield url


@pytest.fixture(scope="module")
def api(database: str, serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    with serve_api(database) as base:
        yield base


def execute(api: str, process: str, inputs: dict, role: str | None = "environmental_app",
            prefer: str | None = None) -> httpx.Response:
    return process_client.execute(api, process, inputs, prefer, role)


def test_environment_processes_are_listed_and_described(api: str) -> None:
    ids = {p["id"] for p in httpx.get(f"{api}/processes?limit=100").json()["processes"]}
    assert ids >= ENV_PROCESSES
    d = httpx.get(f"{api}/processes/env-exceedances").json()
    assert {"datetime", "stations", "pollutants", "format"} <= set(d["inputs"])


def test_exceedances_answer_the_database(api: str, database: str) -> None:
    r = execute(api, "env-exceedances", {"datetime": "2026-01-01/2026-01-31", "pollutants": ["PM2.5"]})
    assert r.status_code == 200, r.text
    with psycopg.connect(database) as conn:
        expected = conn.execute(
            "SELECT count(*) FROM environment.observations WHERE pollutant = 'PM2.5' AND value > 75 "
            "AND observed_at >= '2026-01-01T00:00+08' AND observed_at < '2026-02-01T00:00+08'").fetchone()[0]
    body = r.json()
    assert body["summary"]["exceedances"] == len(body["exceedances"]) == expected > 0


@pytest.mark.parametrize(("process", "inputs", "key"), [
    ("env-latest", {"datetime": "2026-02-01T12:00:00+08:00"}, "stations"),
    ("env-exceedances", {"stations": ["SY-AIR-01"]}, "exceedances"),
    ("env-source-buffers", {"emission_classes": ["key"]}, "buffers"),
])
def test_each_process_as_json_geojson_and_html(api: str, process: str, inputs: dict, key: str) -> None:
    r = execute(api, process, inputs)
    assert r.status_code == 200, r.text
    assert r.json()[key]
    r = execute(api, process, {**inputs, "format": "geojson"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    assert r.json()["type"] == "FeatureCollection" and r.json()["features"]
    r = execute(api, process, {**inputs, "format": "html"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and "<svg" in r.text


@pytest.mark.parametrize(("inputs", "parameter"), [
    ({"datetime": "last week"}, "datetime"),
    ({"pollutants": ["PM1"]}, "pollutants"),
    ({"format": "pdf"}, "format"),
    ({"colour": "red"}, "colour"),
])
def test_bad_input_is_a_400_naming_it(api: str, inputs: dict, parameter: str) -> None:
    r = execute(api, "env-exceedances", inputs)
    assert r.status_code == 400 and parameter in r.json()["description"]


def test_public_series_for_everyone_sources_for_environmental_roles(api: str, database: str) -> None:
    """Observations are public; pollution sources and the red line are internal: the anonymous caller is refused."""
    assert execute(api, "env-latest", {}, role=None).status_code == 200
    r = execute(api, "env-source-buffers", {}, role=None)
    assert r.status_code == 400 and "may not read" in r.json()["description"] and "buffers" not in r.text
    assert execute(api, "env-source-buffers", {"sources": ["WRY00001"]}).status_code == 200
    with psycopg.connect(database) as conn:
        audited = conn.execute("SELECT layer_id FROM ops.audit_log WHERE role = 'environmental_app' "
                               "AND path = '/processes/env-source-buffers/execution'").fetchall()
    assert {"pollution_sources", "ecological_redline"} <= {row[0] for row in audited}


def test_asynchronous_exceedances_job(api: str) -> None:
    import time

    r = execute(api, "env-exceedances", {"format": "geojson"}, prefer="respond-async")
    assert r.status_code == 201
    job = r.headers["Location"].rsplit("/", 1)[-1]
    owner = {"X-API-Key": TEST_KEYS["environmental_app"]}
    deadline = time.monotonic() + 30
    while httpx.get(f"{api}/jobs/{job}", headers=owner).json()["status"] not in ("successful", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    result = httpx.get(f"{api}/jobs/{job}/results", headers=owner)
    assert result.status_code == 200 and result.json()["type"] == "FeatureCollection"


def test_features_with_datetime_answer_as_the_processes(api: str) -> None:
    """The same answers through OGC API Features: latest = sortby -observed_at, limit 1, datetime up to the
    instant; exceedances = a CQL2 filter on pollutant and value."""
    instant = "2026-02-01T12:00:00+08:00"
    latest = execute(api, "env-latest", {"datetime": instant, "stations": ["SY-AIR-02"], "pollutants": ["PM10"]})
    want = latest.json()["stations"][0]["latest"]["PM10"]
    page = httpx.get(f"{api}/collections/observations/items", params={
        "station": "SY-AIR-02", "pollutant": "PM10", "datetime": f"../{instant}", "sortby": "-observed_at",
        "limit": 1})
    assert page.status_code == 200, page.text
    got = page.json()["features"][0]["properties"]
    assert got["value"] == want["value"]
    assert datetime.fromisoformat(got["observed_at"]) == datetime.fromisoformat(want["observed_at"])
    found = execute(api, "env-exceedances", {"datetime": "2026-01-01/2026-01-31", "pollutants": ["PM2.5"]}).json()
    page = httpx.get(f"{api}/collections/observations/items", params={
        "filter": "pollutant = 'PM2.5' AND value > 75", "datetime": "2026-01-01/2026-01-31", "limit": 10000})
    assert page.status_code == 200, page.text
    assert {f["id"] for f in page.json()["features"]} == {e["fid"] for e in found["exceedances"]}
