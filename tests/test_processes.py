"""OGC API - Processes through the pygeoapi bridge, on the real service with its own writable database."""

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import process_client
import pytest
from conftest import TEST_KEYS, cloned_database
from shapely.geometry import box, mapping

SQUARE = box(123.40, 41.75, 123.402, 41.752)
PLANNER = {"X-API-Key": TEST_KEYS["planner"]}  # the jobs below are the planner's


@pytest.fixture(scope="module")
def jobs_db(server_url: str, template_db: str) -> Iterator[str]:
    with cloned_database(server_url, template_db, "gis_test_processes") as url:
        yield url


@pytest.fixture(scope="module")
def api(jobs_db: str, serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    with serve_api(jobs_db) as url:
        yield url


def execute(api: str, process: str, inputs: dict, prefer: str | None = None,
            role: str | None = "planner") -> httpx.Response:
    return process_client.execute(api, process, inputs, prefer, role)


def wait_for(api: str, job_id: str, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        status = httpx.get(f"{api}/jobs/{job_id}", headers=PLANNER).json()
        if status["status"] in ("successful", "failed", "dismissed") or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def test_processes_are_listed(api: str) -> None:
    ids = {p["id"] for p in httpx.get(f"{api}/processes").json()["processes"]}
    assert {"overlap-check", "plan-conflicts"} <= ids


def test_description_has_inputs_and_job_control(api: str) -> None:
    d = httpx.get(f"{api}/processes/overlap-check").json()
    assert {"geometry", "file", "project", "crs", "datetime"} <= set(d["inputs"])
    assert set(d["jobControlOptions"]) == {"sync-execute", "async-execute"}


def test_synchronous_execution_returns_the_report(api: str) -> None:
    r = execute(api, "overlap-check", {"geometry": mapping(SQUARE), "proposed_use": "R"})
    assert r.status_code == 200 and len(r.json()["rules"]) == 6


def test_a_file_input_is_base64(api: str) -> None:
    import json

    data = base64.b64encode(json.dumps(mapping(SQUARE)).encode()).decode()
    r = execute(api, "overlap-check", {"file": {"value": data, "mediaType": "application/geo+json"},
                                       "filename": "plan.geojson", "proposed_use": "R"})
    assert r.status_code == 200 and r.json()["proposal"]["source"].startswith("GeoJSON 'plan.geojson'")


def test_asynchronous_execution_makes_a_job_with_results(api: str) -> None:
    r = execute(api, "overlap-check", {"project": "XM202300046"}, prefer="respond-async")
    assert r.status_code == 201 and r.headers["location"].endswith(r.json()["jobID"])
    status = wait_for(api, r.json()["jobID"])
    assert status["status"] == "successful" and status["progress"] == 100
    results = httpx.get(f"{api}/jobs/{r.json()['jobID']}/results", headers=PLANNER)
    assert results.status_code == 200 and results.json()["verdict"] == "conflict"


def test_plan_conflicts_job_reports_progress_and_summary(api: str) -> None:
    r = execute(api, "plan-conflicts", {"check": "land_use_vs_farmland"}, prefer="respond-async")
    assert r.status_code == 201
    status = wait_for(api, r.json()["jobID"])
    assert status["status"] == "successful", status
    body = httpx.get(f"{api}/jobs/{r.json()['jobID']}/results", headers=PLANNER).json()
    assert body["summary"]["check"] == "land_use_vs_farmland" and body["patches"]["type"] == "FeatureCollection"


def test_bad_input_is_a_400_naming_it(api: str) -> None:
    r = execute(api, "overlap-check", {"geometry": mapping(SQUARE), "crs": "EPSG:0"})
    assert r.status_code == 400 and r.json()["description"].startswith("crs: unknown CRS")


def test_an_unknown_input_is_a_400(api: str) -> None:
    r = execute(api, "overlap-check", {"geometry": mapping(SQUARE), "colour": "red"})
    assert r.status_code == 400 and "colour: unknown input" in r.json()["description"]


def test_a_failed_job_keeps_its_message(api: str) -> None:
    r = execute(api, "plan-conflicts", {"check": "nope"}, prefer="respond-async")
    status = wait_for(api, r.json()["jobID"])
    assert status["status"] == "failed" and "no plan-conflict check 'nope'" in status["message"]


def test_unknown_process_is_a_404(api: str) -> None:
    assert execute(api, "nope", {}).status_code == 404


def test_unknown_job_is_a_404(api: str) -> None:
    assert httpx.get(f"{api}/jobs/no-such-job", headers=PLANNER).status_code == 404


def test_a_finished_job_can_be_deleted(api: str) -> None:
    job = execute(api, "overlap-check", {"project": "XM202300046"}, prefer="respond-async").json()["jobID"]
    wait_for(api, job)
    assert httpx.delete(f"{api}/jobs/{job}", headers=PLANNER).status_code == 200
    assert httpx.get(f"{api}/jobs/{job}", headers=PLANNER).status_code == 404


def test_jobs_are_listed(api: str) -> None:
    execute(api, "overlap-check", {"project": "XM202300046"})
    jobs = httpx.get(f"{api}/jobs", headers=PLANNER).json()["jobs"]
    assert jobs and all(j["processID"] in ("overlap-check", "plan-conflicts") for j in jobs)


def test_landing_page_and_openapi_show_processes(api: str) -> None:
    links = {link["href"] for link in httpx.get(f"{api}/", params={"f": "json"}).json()["links"]}
    assert any(h.endswith("/processes") for h in links) and any(h.endswith("/jobs") for h in links)
    conformance = httpx.get(f"{api}/conformance", params={"f": "json"}).json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/core" in conformance
    paths = httpx.get(f"{api}/openapi", params={"f": "json"}).json()["paths"]
    assert {"/processes", "/processes/{process_id}/execution", "/jobs/{job_id}", "/api/planning/overlap-checks"} \
        <= set(paths)


def test_plan_conflicts_needs_both_layers(api: str) -> None:
    r = execute(api, "plan-conflicts", {"check": "land_use_vs_farmland"}, role=None)
    assert r.status_code == 400 and "may not read" in r.json()["description"]
    assert "patches" not in r.json()


def test_a_job_is_its_owners_alone(api: str) -> None:
    """Another caller, or an anonymous one, neither lists a planner's job nor reads its status or results."""
    r = execute(api, "overlap-check", {"project": "XM202300046"}, prefer="respond-async", role="planner")
    job = r.json()["jobID"]
    wait_for(api, job)
    for headers in ({}, {"X-API-Key": TEST_KEYS["analyst"]}):
        assert httpx.get(f"{api}/jobs/{job}", headers=headers).status_code == 404
        assert httpx.get(f"{api}/jobs/{job}/results", headers=headers).status_code == 404
        assert job not in {j["jobID"] for j in httpx.get(f"{api}/jobs", headers=headers).json()["jobs"]}
        assert httpx.delete(f"{api}/jobs/{job}", headers=headers).status_code == 404
    planner = {"X-API-Key": TEST_KEYS["planner"]}
    assert httpx.get(f"{api}/jobs/{job}/results", headers=planner).status_code == 200
    admin = {"X-API-Key": TEST_KEYS["admin"]}
    assert job in {j["jobID"] for j in httpx.get(f"{api}/jobs", headers=admin, params={"limit": 1000}).json()["jobs"]}
