"""Deliveries over HTTP through the real service: a department's key posts a GeoPackage, the refresh runs as an async
job with progress and a result, each delivery is kept with its checksum, sender and what it changed; a refused one
leaves the layer as it was and its rejects file can be downloaded."""

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import psycopg
import pytest
from conftest import TEST_KEYS, cloned_database

from gis.layers import LayerRegistry
from gis.security import keys
from gis.settings import Settings


@dataclass(frozen=True)
class Service:
    url: str
    db_url: str
    office: dict[str, str]  # headers of the pipeline office's key
    http: httpx.Client


@pytest.fixture(scope="module")
def service(server_url: str, template_db: str,
            serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[Service]:
    with cloned_database(server_url, template_db, "gis_test_deliveries") as url:
        with psycopg.connect(url) as conn:
            office = keys.create_key(conn, "pipeline office", "pipeline_office", "")[1]
            conn.commit()
        with serve_api(url) as base, httpx.Client(timeout=60) as http:
            yield Service(base, url, {"X-API-Key": office}, http)


def nodes_file(settings: Settings, registry: LayerRegistry, tmp_path: Path, **changes: Any) -> tuple[Path, str]:
    """The sample pipe_nodes delivery with the first node's fields changed; (file, that node's id)."""
    spec = registry["pipe_nodes"]
    frame = gpd.read_file(settings.samples_dir / spec.source.path, layer=spec.source.layer)
    for name, value in changes.items():
        frame.loc[frame.index[0], name] = value
    path = tmp_path / "pipe_nodes.gpkg"
    frame.to_file(path, layer=spec.source.layer, driver="GPKG")
    return path, str(frame.iloc[0][spec.source.fid])


def post(service: Service, path: Path, **extra: str) -> httpx.Response:
    with path.open("rb") as stream:
        return service.http.post(f"{service.url}/api/deliveries/pipe_nodes", headers=service.office,
                                 files={"file": (path.name, stream, "application/geopackage+sqlite3")}, data=extra)


def finished(service: Service, delivery_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        record: dict[str, Any] = service.http.get(f"{service.url}/api/deliveries/pipe_nodes/{delivery_id}",
                                                  headers=service.office).json()
        if record["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return record
        time.sleep(0.5)


def test_a_posted_delivery_is_refreshed_as_a_job_and_kept_with_its_provenance(
        service: Service, settings: Settings, registry: LayerRegistry, tmp_path: Path) -> None:
    path, fid = nodes_file(settings, registry, tmp_path, state="closed", ground_elev_m=99.5)
    answer = post(service, path, cut_at="2026-12-07T09:00+08:00")
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["checksum"] == hashlib.sha256(path.read_bytes()).hexdigest()
    record = finished(service, accepted["delivery_id"])
    assert record["status"] == "succeeded", record
    assert record["result"]["updated"] >= 1 and record["progress"] == 100
    assert record["subject"].endswith(":pipeline office") and record["role"] == "pipeline_office"
    with psycopg.connect(service.db_url) as conn:
        stored = conn.execute("SELECT ground_elev_m FROM pipeline.pipe_nodes WHERE fid = %s", (fid,)).fetchone()
        job = conn.execute("SELECT status, progress, owner FROM ops.jobs WHERE job_id = %s",
                           (accepted["job_id"],)).fetchone()
        logged = conn.execute("SELECT layer_id, updated FROM ops.refresh_log WHERE refresh_id = %s",
                              (record["refresh_id"],)).fetchone()
    assert stored == (99.5,)
    assert job == ("successful", 100, record["subject"])
    assert logged == ("pipe_nodes", record["result"]["updated"])
    listed = service.http.get(f"{service.url}/api/deliveries/pipe_nodes", headers=service.office).json()
    assert accepted["delivery_id"] in [d["delivery_id"] for d in listed["deliveries"]]


def test_a_refused_delivery_changes_nothing_and_its_rejects_can_be_downloaded(
        service: Service, settings: Settings, registry: LayerRegistry, tmp_path: Path) -> None:
    path, fid = nodes_file(settings, registry, tmp_path, node_type="tap")
    with psycopg.connect(service.db_url) as conn:
        before = conn.execute("SELECT node_type, refresh_id FROM pipeline.pipe_nodes WHERE fid = %s", (fid,)).fetchone()
    record = finished(service, post(service, path).json()["delivery_id"])
    assert record["status"] == "failed" and "tap" in record["result"]["message"]
    rejects = service.http.get(f"{service.url}/api/deliveries/pipe_nodes/{record['delivery_id']}/rejects",
                               headers=service.office)
    assert rejects.status_code == 200 and rejects.headers["content-type"].startswith("text/csv")
    assert fid in rejects.text and "node_type" in rejects.text
    with psycopg.connect(service.db_url) as conn:
        assert conn.execute("SELECT node_type, refresh_id FROM pipeline.pipe_nodes WHERE fid = %s",
                            (fid,)).fetchone() == before


def test_a_file_of_another_format_is_a_400(service: Service, tmp_path: Path) -> None:
    path = tmp_path / "nodes.csv"
    path.write_text("node_id,x,y\nN1,1,2\n")
    answer = post(service, path)
    assert answer.status_code == 400 and answer.json()["parameter"] == "file"


def test_only_the_department_posts(service: Service, tmp_path: Path) -> None:
    path = tmp_path / "x.gpkg"
    path.write_bytes(b"SQLite format 3\x00")
    with path.open("rb") as stream:
        files = {"file": ("x.gpkg", stream.read())}
    url = f"{service.url}/api/deliveries/pipe_nodes"
    assert service.http.post(url, files=files).status_code == 401
    assert service.http.post(url, files=files, headers={"X-API-Key": TEST_KEYS["analyst"]}).status_code == 403
    assert service.http.post(f"{service.url}/api/deliveries/incidents", files=files,
                             headers=service.office).status_code == 404


def test_the_html_page_uploads_and_follows_a_delivery(service: Service, settings: Settings,
                                                      registry: LayerRegistry, tmp_path: Path) -> None:
    key = service.office["X-API-Key"]
    page = service.http.get(f"{service.url}/api/deliveries/pipe_nodes", params={"f": "html", "api_key": key})
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in page.text and 'name="file"' in page.text
    path, _ = nodes_file(settings, registry, tmp_path, state="open")
    with path.open("rb") as stream:
        sent = service.http.post(f"{service.url}/api/deliveries/pipe_nodes", params={"api_key": key},
                                 headers={"Accept": "text/html"}, files={"file": (path.name, stream.read())})
    assert sent.status_code == 303
    followed = service.http.get(sent.headers["location"])
    assert followed.status_code == 200 and "sha256" in followed.text


def test_files_dropped_in_a_watched_folder_are_deliveries(service: Service, settings: Settings,
                                                          registry: LayerRegistry, tmp_path: Path) -> None:
    from gis.cli import main

    path, fid = nodes_file(settings, registry, tmp_path, ground_elev_m=77.25)
    inbox = tmp_path / "inbox"
    (inbox / "pipe_nodes").mkdir(parents=True)
    dropped = inbox / "pipe_nodes" / "nodes-20261207.gpkg"
    dropped.write_bytes(path.read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"GIS_DATABASE_URL": service.db_url, "GIS_LAYERS_DIR": str(settings.layers_dir),
                            "GIS_STYLES_DIR": str(settings.styles_dir),
                            "GIS_REJECTS_DIR": str(tmp_path / "rejects")}.items():
            patch.setenv(name, value)
        assert main(["refresh", "--watch", str(inbox), "--once"]) == 0
    assert not dropped.exists() and (inbox / "pipe_nodes" / "done" / dropped.name).is_file()
    with psycopg.connect(service.db_url) as conn:
        kept = conn.execute("SELECT subject, checksum, status FROM ops.deliveries WHERE filename = %s",
                            (dropped.name,)).fetchone()
        value = conn.execute("SELECT ground_elev_m FROM pipeline.pipe_nodes WHERE fid = %s", (fid,)).fetchone()
    assert kept is not None and kept[0].startswith("watch:") and kept[2] == "succeeded"
    assert kept[1] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert value == (77.25,)
