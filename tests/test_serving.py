"""Production serving: health and readiness, Prometheus metrics, request ids and JSON access logs, proxy
prefixes, a service that starts without its database, and pygeoapi's client errors without tracebacks."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, suppress
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest
from local_ports import free_port
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def logged_service(loaded_db_url: str) -> Iterator[tuple[str, Path]]:
    """`gis serve` itself, two workers, behind a (pretend) proxy at /gis, its standard error kept for reading."""
    port = free_port()
    log = ROOT / ".gisdata" / "test" / f"serve-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GIS_DATABASE_URL": loaded_db_url, "GIS_HTTP_RATE_PER_SECOND": "0",
           "GIS_SERVE_ROOT_PATH": "/gis"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "gis.cli", "serve", "--port", str(port), "--workers", "2"],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url, log
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.unlink(missing_ok=True)


def _wait_ready(url: str, process: subprocess.Popen[bytes], path: str = "/healthz") -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, "the service exited"
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError("the service did not answer")


def test_healthz_and_readyz_answer_when_the_database_is_current(api_url: str) -> None:
    assert httpx.get(f"{api_url}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{api_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_readyz_names_the_migrations_missing(server_url: str, serve_api: Callable[[str], AbstractContextManager[str]]
                                             ) -> None:
    name = "gis_test_unmigrated"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with serve_api(psycopg.conninfo.make_conninfo(server_url, dbname=name)) as url:
            ready = httpx.get(f"{url}/readyz")
            assert ready.status_code == 503
            assert "gis migrate" in ready.json()["reason"]
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_the_service_starts_without_a_database_and_says_why(serve_api: Callable[[str], AbstractContextManager[str]]
                                                            ) -> None:
    nobody = f"postgresql://postgres:x@127.0.0.1:{free_port()}/gis"
    with serve_api(nobody) as url:  # serve_api waits for /conformance, which needs no database
        assert httpx.get(f"{url}/healthz").status_code == 200
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert "cannot be reached" in ready.json()["reason"]
        items = httpx.get(f"{url}/collections/roads/items", timeout=4)  # answered, not left hanging
        assert items.status_code == 503
        assert items.headers["Retry-After"]


def test_request_ids_are_returned_and_logged_as_json(logged_service: tuple[str, Path]) -> None:
    url, log = logged_service
    mine = httpx.get(f"{url}/collections/roads/items?limit=1", headers={"X-Request-ID": "trace-abc.123"})
    made = httpx.get(f"{url}/collections/nope")
    assert mine.headers["X-Request-ID"] == "trace-abc.123"
    assert len(made.headers["X-Request-ID"]) == 32
    deadline = time.monotonic() + 10
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline and len(lines) < 2:
        lines = [orjson.loads(line) for line in log.read_bytes().splitlines() if line.startswith(b"{")]
        lines = [e for e in lines if e["request_id"] in ("trace-abc.123", made.headers["X-Request-ID"])]
        time.sleep(0.2)
    by_id = {e["request_id"]: e for e in lines}
    assert by_id["trace-abc.123"]["status"] == 200
    assert by_id["trace-abc.123"]["route"] == "/collections/{collectionId}/items"
    assert by_id[made.headers["X-Request-ID"]]["status"] == 404


def test_metrics_count_requests_by_route_and_status_across_workers(logged_service: tuple[str, Path]) -> None:
    url, _ = logged_service
    for _ in range(6):  # two workers: some of these land on each
        httpx.get(f"{url}/collections/roads/items?limit=1")
    text = httpx.get(f"{url}/metrics").text
    counted = [line for line in text.splitlines() if line.startswith("gis_http_requests_total{")
               and 'route="/collections/{collectionId}/items"' in line and 'status="200"' in line]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 6
    for name in ("gis_http_request_duration_seconds_bucket", "gis_db_pool_connections", "gis_db_available",
                 "gis_job_queue_depth"):
        assert name in text


def test_links_carry_the_root_path_behind_a_proxy(logged_service: tuple[str, Path]) -> None:
    url, _ = logged_service
    # A proxy that strips /gis (nginx proxy_pass .../;) and one that passes it on reach the same resources.
    stripped = httpx.get(f"{url}/collections/roads?f=json").json()
    kept = httpx.get(f"{url}/gis/collections/roads?f=json").json()
    for document in (stripped, kept):
        hrefs = [link["href"] for link in document["links"]]
        assert hrefs and all(h.startswith(f"{url}/gis/") for h in hrefs), hrefs
    forwarded = httpx.get(f"{url}/collections/roads?f=json", headers={
        "X-Forwarded-Host": "maps.city.example", "X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/geo"}).json()
    assert forwarded["links"][0]["href"].startswith("https://maps.city.example/geo/collections/roads")


def test_html_openapi_tilejson_and_the_map_carry_the_root_path(logged_service: tuple[str, Path]) -> None:
    import re

    url, _ = logged_service
    page = httpx.get(f"{url}/collections?f=html").text
    links = re.findall(r'(?:href|src)="(/[^"]*)"', page)
    assert links and all(link.startswith("/gis/") for link in links), links
    api = httpx.get(f"{url}/openapi?f=json").json()
    assert api["servers"] == [{"url": f"{url}/gis"}]
    tilejson = httpx.get(f"{url}/collections/roads/tiles/WebMercatorQuad/tilejson.json").json()
    assert tilejson["tiles"][0].startswith(f"{url}/gis/collections/roads/tiles/")
    map_page = httpx.get(f"{url}/map").text
    assert 'data-root="/gis"' in map_page
    assert all(src.startswith("/gis/static/") for src in re.findall(r'src="([^"]*)"', map_page))
    assert httpx.get(f"{url}/gis/static/map/web-map.js").status_code == 200  # a proxy that keeps the prefix


def test_an_unknown_job_id_is_a_404_without_a_traceback(logged_service: tuple[str, Path]) -> None:
    url, log = logged_service
    answer = httpx.get(f"{url}/jobs/00000000-0000-0000-0000-000000000000?f=json")
    assert answer.status_code == 404
    time.sleep(0.5)
    assert b"Traceback" not in log.read_bytes()


def test_a_killed_worker_is_replaced_and_its_death_logged(logged_service: tuple[str, Path]) -> None:
    url, log = logged_service
    pids = {httpx.get(f"{url}/healthz").json()["pid"] for _ in range(20)}
    victim = sorted(pids)[0]
    os.kill(victim, 9)
    deadline = time.monotonic() + 60
    replaced = False
    while time.monotonic() < deadline and not replaced:
        time.sleep(0.5)
        seen = set()
        for _ in range(10):
            with suppress(httpx.TransportError):
                seen.add(httpx.get(f"{url}/healthz", timeout=2).json()["pid"])
        replaced = bool(seen - pids)
    assert replaced
    assert f"Child process [{victim}] died".encode() in log.read_bytes()


def _live_files(directory: Path, pid: int) -> list[str]:
    return sorted(p.name for p in directory.glob(f"gauge_live*_{pid}.db"))


def test_dead_workers_live_metrics_are_forgotten_and_a_new_run_starts_clean(loaded_db_url: str,
                                                                             tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR set by the operator (as a systemd unit would): a previous run's files are
    cleared at start, and a killed worker's live gauges leave /metrics when it is replaced."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stale = metrics_dir / "gauge_livesum_999999.db"
    stale.write_bytes(b"left by an earlier run")
    port = free_port()
    env = {**os.environ, "GIS_DATABASE_URL": loaded_db_url, "GIS_HTTP_RATE_PER_SECOND": "0",
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    process = subprocess.Popen([sys.executable, "-m", "gis.cli", "serve", "--port", str(port), "--workers", "2"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        assert not stale.exists()
        pids: set[int] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (len(pids) == 2 and all(_live_files(metrics_dir, p) for p in pids)):
            pids |= {httpx.get(f"{url}/healthz", timeout=5).json()["pid"] for _ in range(10)}
            time.sleep(0.5)
        victim, survivor = sorted(pids)
        assert _live_files(metrics_dir, victim)  # the pool, breaker and lag gauges every worker writes
        os.kill(victim, 9)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _live_files(metrics_dir, victim):
            time.sleep(0.5)
        assert _live_files(metrics_dir, victim) == []
        assert _live_files(metrics_dir, survivor)  # the living keep theirs
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
