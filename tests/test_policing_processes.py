"""The policing processes through OGC API - Processes, on the real service with its own database: policing
keys of two jurisdictions, the hotspot counts each may see, the refusal for other roles and the audit."""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import httpx
import process_client
import psycopg
import pytest
from conftest import TEST_KEYS, cloned_database

from gis.security import keys

POLICE_PROCESSES = {"police-jurisdiction", "police-nearest", "police-hotspots"}
WINDOW = "2026-01-01/2026-06-30"
WINDOW_SQL = "occurred_at >= '2026-01-01T00:00+08' AND occurred_at < '2026-07-01T00:00+08'"


@dataclass(frozen=True)
class Service:
    url: str
    db_url: str
    police: dict[str, str]  # jurisdiction station -> key


@pytest.fixture(scope="module")
def service(server_url: str, template_db: str,
            serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[Service]:
    with cloned_database(server_url, template_db, "gis_test_policing_processes") as url:
        police = {}
        with psycopg.connect(url) as conn:
            stations = [r[0] for r in conn.execute(
                "SELECT station FROM policing.police_jurisdictions ORDER BY fid LIMIT 2").fetchall()]
            for station in stations:
                _record, police[station] = keys.create_key(conn, f"police of {station}", "policing_app", "",
                                                           {"jurisdiction": station})
            _record, police[""] = keys.create_key(conn, "police without a station", "policing_app", "")
            conn.commit()
        with serve_api(url) as base:
            yield Service(base, url, police)


def run(service: Service, process: str, inputs: dict, key: str | None) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    return httpx.post(f"{service.url}/processes/{process}/execution", json={"inputs": inputs}, headers=headers,
                      timeout=60)


def test_policing_processes_are_listed(service: Service) -> None:
    # limit: pygeoapi lists 10 processes by default (services/processes/pygeoapi_bridge.py limits.default_items)
    ids = {p["id"] for p in httpx.get(f"{service.url}/processes?limit=100").json()["processes"]}
    assert ids >= POLICE_PROCESSES


def test_each_policing_user_counts_only_their_jurisdiction(service: Service) -> None:
    counts = {}
    with psycopg.connect(service.db_url) as conn:
        for station in (s for s in service.police if s):
            counts[station] = conn.execute(
                "SELECT count(*) FROM policing.incidents i WHERE " + WINDOW_SQL + " AND EXISTS (SELECT 1 FROM "
                "policing.police_jurisdictions j WHERE j.station = %s AND ST_Intersects(j.geom, i.geom))",
                (station,)).fetchone()[0]
        everything = conn.execute("SELECT count(*) FROM policing.incidents WHERE " + WINDOW_SQL).fetchone()[0]
    for station, key in service.police.items():
        r = run(service, "police-hotspots", {"datetime": WINDOW}, key)
        assert r.status_code == 200, r.text
        assert r.json()["summary"]["incidents"] == counts.get(station, 0)
    assert len(set(counts.values())) == 2 and all(0 < n < everything for n in counts.values())
    r = run(service, "police-hotspots", {"datetime": WINDOW}, TEST_KEYS["admin"])
    assert r.status_code == 200 and r.json()["summary"]["incidents"] == everything


@pytest.mark.parametrize("role", [None, "environmental_app", "analyst", "planner"])
def test_other_roles_get_the_documented_refusal(service: Service, role: str | None) -> None:
    r = run(service, "police-hotspots", {}, TEST_KEYS[role] if role else None)
    assert r.status_code == 400 and "may not read" in r.json()["description"]
    assert "cells" not in r.text


def test_hotspot_runs_are_audited(service: Service) -> None:
    station, key = next((s, k) for s, k in service.police.items() if s)
    assert run(service, "police-hotspots", {"cell_m": 300}, key).status_code == 200
    with psycopg.connect(service.db_url) as conn:
        rows = conn.execute("SELECT role, features FROM ops.audit_log WHERE layer_id = 'incidents' AND "
                            "path = '/processes/police-hotspots/execution' AND subject LIKE %s",
                            (f"%police of {station}",)).fetchall()
    assert rows and all(role == "policing_app" for role, _n in rows)


@pytest.mark.parametrize(("process", "inputs", "key"), [
    ("police-jurisdiction", {"point": [123.42, 41.76]}, "jurisdictions"),
    ("police-nearest", {"point": [123.42, 41.76], "count": 2}, "stations"),
    ("police-hotspots", {"datetime": WINDOW, "format": "json"}, "cells"),
])
def test_each_process_as_json_geojson_and_html(service: Service, process: str, inputs: dict, key: str) -> None:
    police = next(k for s, k in service.police.items() if s)
    r = run(service, process, inputs, police)
    assert r.status_code == 200, r.text
    assert r.json()[key]
    r = run(service, process, {**inputs, "format": "geojson"}, police)
    assert r.status_code == 200 and r.json()["type"] == "FeatureCollection" and r.json()["features"]
    r = run(service, process, {**inputs, "format": "html"}, police)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and "<svg" in r.text


def test_nearest_says_it_used_the_roads(service: Service) -> None:
    r = process_client.execute(service.url, "police-nearest", {"point": [123.42, 41.76]}, role="pipeline_app")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"]["method"] == "network" and body["summary"]["road_graph"] is True
    assert all(s["method"] == "network" and s["distance_m"] >= s["straight_m"] for s in body["stations"])


@pytest.mark.parametrize(("process", "inputs", "parameter"), [
    ("police-nearest", {"point": [123.42, 41.76], "count": 500}, "count"),
    ("police-jurisdiction", {"point": "here"}, "point"),
    ("police-hotspots", {"cell_m": 1}, "cell_m"),
    ("police-hotspots", {"bbox": [1, 2, 3]}, "bbox"),
])
def test_bad_input_is_a_400_naming_it(service: Service, process: str, inputs: dict, parameter: str) -> None:
    r = run(service, process, inputs, TEST_KEYS["admin"])
    assert r.status_code == 400 and r.json()["description"].startswith(parameter)
