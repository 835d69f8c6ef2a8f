"""Field inspections (外业巡查): an inspector records a finding through OGC API Features Part 4, the pipeline
application sees it, and its severity joins the same graded warnings as the sensor readings (the real service)."""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from conftest import TEST_KEYS, cloned_database

from gis.security import keys


@dataclass(frozen=True)
class Service:
    url: str
    db_url: str
    inspector: dict[str, str]
    app: dict[str, str]  # the pipeline application's key
    http: httpx.Client


@pytest.fixture(scope="module")
def service(server_url: str, template_db: str,
            serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[Service]:
    with cloned_database(server_url, template_db, "gis_test_inspections") as url:
        with psycopg.connect(url) as conn:
            inspector = keys.create_key(conn, "inspector 7", "inspector", "")[1]
            conn.commit()
        with serve_api(url) as base, httpx.Client(timeout=60) as http:
            yield Service(base, url, {"X-API-Key": inspector}, {"X-API-Key": TEST_KEYS["pipeline_app"]}, http)


def node(service: Service) -> tuple[str, list[float]]:
    with psycopg.connect(service.db_url) as conn:
        row = conn.execute("SELECT fid, ST_X(geom), ST_Y(geom) FROM pipeline.pipe_nodes ORDER BY fid LIMIT 1"
                           ).fetchone()
    assert row is not None
    return row[0], [row[1], row[2]]


def finding(node_fid: str, where: list[float], severity: str, **extra: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": where},
            "properties": {"inspected_at": "2026-12-07T10:15:00+08:00", "inspector": "王伟", "finding": "leak",
                           "node_fid": node_fid, "severity": severity, **extra}}


def warnings(service: Service, **params: str) -> dict[str, Any]:
    answer = service.http.get(f"{service.url}/api/pipeline/sensor-warnings", params=params, headers=service.app)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_an_inspectors_finding_reaches_the_pipeline_application_and_its_warnings(service: Service) -> None:
    before = warnings(service, limit="1")["cursor"]
    fid, where = node(service)
    created = service.http.post(f"{service.url}/collections/inspections/items", headers=service.inspector,
                                json=finding(fid, where, "red", note="渗水明显"))
    assert created.status_code == 201, created.text
    new_id = created.headers["Location"].rsplit("/", 1)[1]
    seen = service.http.get(f"{service.url}/collections/inspections/items/{new_id}", headers=service.app)
    assert seen.status_code == 200 and seen.json()["properties"]["finding"] == "leak"
    fresh = warnings(service, since=before, limit="1000")
    mine = [w for w in fresh["features"] if w["id"] == new_id]
    assert len(mine) == 1
    assert mine[0]["properties"]["level"] == "red" and mine[0]["properties"]["threshold"] == "inspection:leak"
    assert mine[0]["properties"]["sensor"] == fid
    red_only = warnings(service, since=before, level="red", limit="1000")
    assert new_id in [w["id"] for w in red_only["features"]]


def test_a_finding_without_a_warning_level_is_no_warning(service: Service) -> None:
    before = warnings(service, limit="1")["cursor"]
    fid, where = node(service)
    created = service.http.post(f"{service.url}/collections/inspections/items", headers=service.inspector,
                                json=finding(fid, where, "none", finding="normal"))
    assert created.status_code == 201, created.text
    new_id = created.headers["Location"].rsplit("/", 1)[1]
    assert new_id not in [w["id"] for w in warnings(service, since=before, limit="1000")["features"]]


def test_the_inspector_role_creates_and_updates_only(service: Service) -> None:
    fid, where = node(service)
    bad = service.http.post(f"{service.url}/collections/inspections/items", headers=service.inspector,
                            json=finding(fid, where, "purple"))
    assert bad.status_code == 400 and bad.json()["parameter"] == "properties.severity"
    created = service.http.post(f"{service.url}/collections/inspections/items", headers=service.inspector,
                                json=finding(fid, where, "yellow"))
    location = created.headers["Location"]
    assert service.http.patch(location, headers=service.inspector,
                              json={"properties": {"severity": "orange"}}).status_code == 204
    assert service.http.delete(location, headers=service.inspector).status_code == 403
    assert service.http.post(f"{service.url}/collections/pipe_nodes/items", headers=service.inspector,
                             json=finding(fid, where, "red")).status_code == 403
