"""Read replicas and failover with real processes: a primary, a streaming standby (gis.db.replicas) and the
service reading through GIS_DATABASE_READ_URL, while the standby lags, stops, and the primary goes away and
the standby is promoted."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from local_ports import free_port, until
from psycopg import sql

from gis.db.cluster import Cluster
from gis.db.migrate import migrate
from gis.db.replicas import Replicas, primary_url, read_url
from gis.layers import LayerRegistry
from gis.rasters.refresh import RasterRefreshRequest, run_raster_refresh
from gis.refresh.runner import RefreshRequest, run_refresh
from gis.security.keys import create_key
from gis.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".gisdata" / "test" / "failover-under-test"
KEY = "gk_t0fail_failover-admin-key-of-the-test-suite-0"
PUBLIC, INTERNAL, RASTER = "water_bodies", "pollution_sources", "land_cover"
# The client's own bound: a request that hangs while a database is away fails the test.
CLIENT_TIMEOUT = 4.0


@pytest.fixture(scope="module")
def topology(registry: LayerRegistry, settings: Settings) -> Iterator[Settings]:
    """Its own primary (the suite's cluster must not be stopped) with two layers and a key, and one standby."""
    shutil.rmtree(HOME, ignore_errors=True)
    own = Settings(cluster_dir=HOME / "pg", cluster_port=free_port(), samples_dir=settings.samples_dir,
                   rejects_dir=settings.rejects_dir, rasters_dir=HOME / "rasters")
    primary = Cluster(own)
    primary.start()
    with psycopg.connect(primary.url()) as conn:
        migrate(conn, registry)
        create_key(conn, "failover admin", "admin", pepper="", token=KEY)
        conn.commit()
    for layer in (PUBLIC, INTERNAL):
        spec = registry.get_layer(layer)
        run_refresh(primary.url(), RefreshRequest(spec, own.samples_dir / spec.source.path, own.city_extent,
                                                  own.rejects_dir, progress=False))
    raster = registry.get_raster(RASTER)
    run_raster_refresh(primary.url(), RasterRefreshRequest(raster, own.samples_dir / raster.source.path,
                                                           own.city_extent, own.rasters_dir))
    Replicas(own).create("one", free_port())
    yield own
    replicas = Replicas(own)
    for name in replicas.names():
        replicas.drop(name)
    primary.stop()
    shutil.rmtree(HOME, ignore_errors=True)


@pytest.fixture(scope="module")
def service(topology: Settings, settings: Settings) -> Iterator[str]:
    # No lag bound (GIS_READ_MAX_LAG_S): these tests show the version rule alone keeps reads from going back.
    yield from _serve(topology, settings, "86400")


@pytest.fixture(scope="module")
def bounded_service(topology: Settings, settings: Settings) -> Iterator[str]:
    """Another node of the same topology, with a lag bound of 2 s."""
    yield from _serve(topology, settings, "2")


def _serve(topology: Settings, settings: Settings, max_lag_s: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "GIS_HTTP_RATE_PER_SECOND": "0", "GIS_LAYERS_DIR": str(settings.layers_dir),
           "GIS_READ_MAX_LAG_S": max_lag_s,
           "GIS_STYLES_DIR": str(settings.styles_dir), "GIS_RASTERS_DIR": str(topology.rasters_dir),
           "GIS_DATABASE_URL": primary_url(topology, ["one"]), "GIS_DATABASE_READ_URL": read_url(topology, ["one"])}
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "services.asgi:app_from_environment", "--factory",
                                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], cwd=ROOT,
                               env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        assert until(lambda: _ready(url), 90), "the service did not become ready"
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _get(url: str, layer: str, key: bool = False) -> httpx.Response:
    return httpx.get(f"{url}/collections/{layer}/items?limit=2", headers={"X-API-Key": KEY} if key else {},
                     timeout=CLIENT_TIMEOUT)


def _version(response: httpx.Response, layer: str) -> int:
    found = dict(part.strip().split("=") for part in response.headers["X-Layer-Version"].split(","))
    return int(found[layer])


def _set_apply_delay(topology: Settings, delay: str) -> None:
    with psycopg.connect(Replicas(topology).url("one"), autocommit=True) as conn:
        # ALTER SYSTEM takes no parameters: the value goes in as a quoted literal.
        conn.execute(sql.SQL("ALTER SYSTEM SET recovery_min_apply_delay = {}").format(sql.Literal(delay)))
        conn.execute("SELECT pg_reload_conf()")


def _changed_delivery(topology: Settings, registry: LayerRegistry, tmp: Path, suffix: str = " (renamed)") -> None:
    spec = registry.get_layer(PUBLIC)
    data = json.loads((topology.samples_dir / spec.source.path).read_text())
    data["features"][0]["properties"]["name"] += suffix
    changed = tmp / "water_bodies.geojson"
    changed.write_text(json.dumps(data, ensure_ascii=False))
    run_refresh(Cluster(topology).url(), RefreshRequest(spec, changed, topology.city_extent, topology.rejects_dir,
                                                        progress=False))


def test_reads_come_from_the_standby_with_the_version_they_read(service: str) -> None:
    answer = _get(service, PUBLIC)
    assert answer.status_code == 200
    assert answer.headers["X-Served-By"] == "standby"
    assert _version(answer, PUBLIC) > 0


def test_downloads_and_coverages_come_from_the_standby_with_the_version_they_read(service: str) -> None:
    for fmt in ("csv", "gpkg"):
        answer = httpx.get(f"{service}/collections/{PUBLIC}/download", params={"f": fmt}, timeout=60)
        assert answer.status_code == 200 and len(answer.content) > 0
        assert answer.headers["X-Served-By"] == "standby"
        assert _version(answer, PUBLIC) == _version(_get(service, PUBLIC), PUBLIC)
    coverage = httpx.get(f"{service}/collections/{RASTER}/coverage", params={"bbox": "123.40,41.74,123.41,41.75"},
                         timeout=60)
    assert coverage.status_code == 200 and coverage.content.startswith((b"II*\x00", b"MM\x00*"))  # a GeoTIFF
    assert coverage.headers["X-Served-By"] == "standby"
    assert _version(coverage, RASTER) > 0


def test_a_lagging_standby_never_serves_a_version_older_than_one_seen(
        service: str, topology: Settings, registry: LayerRegistry, tmp_path: Path) -> None:
    before = _version(_get(service, PUBLIC), PUBLIC)
    _set_apply_delay(topology, "1h")
    _changed_delivery(topology, registry, tmp_path)
    after = _get(service, PUBLIC)
    assert _version(after, PUBLIC) > before
    assert after.headers["X-Served-By"] == "primary"  # the standby has not replayed the new version
    assert any(f["properties"]["name"].endswith("(renamed)") for f in after.json()["features"])
    download = httpx.get(f"{service}/collections/{PUBLIC}/download", params={"f": "csv"}, timeout=60)
    assert download.headers["X-Served-By"] == "primary" and "(renamed)" in download.text  # downloads alike
    other = _get(service, INTERNAL, key=True)
    assert other.headers["X-Served-By"] == "standby"  # a layer the refresh did not touch stays on the standby
    # The probe sees the standby fall behind (what GIS_READ_MAX_LAG_S is compared with; /metrics shows it too).
    assert until(lambda: (httpx.get(f"{service}/readyz").json()["standbys"]["lag_seconds"] or 0) > 1)
    _set_apply_delay(topology, "0")
    assert until(lambda: _get(service, PUBLIC).headers["X-Served-By"] == "standby")
    assert _version(_get(service, PUBLIC), PUBLIC) == _version(after, PUBLIC)


def test_a_standby_lagging_past_the_bound_leaves_every_read_to_the_primary(
        bounded_service: str, topology: Settings, registry: LayerRegistry, tmp_path: Path) -> None:
    """GIS_READ_MAX_LAG_S: even a layer whose version the standby has goes to the primary while replay lags."""
    assert until(lambda: _get(bounded_service, INTERNAL, key=True).headers["X-Served-By"] == "standby")
    version = _version(_get(bounded_service, INTERNAL, key=True), INTERNAL)
    _set_apply_delay(topology, "1h")
    try:
        _changed_delivery(topology, registry, tmp_path, " (lagging)")  # received by the standby, not replayed
        assert until(lambda: (httpx.get(f"{bounded_service}/readyz").json()["standbys"]["lag_seconds"] or 0) > 2)
        answers = [_get(bounded_service, INTERNAL, key=True) for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 5
        assert {a.headers["X-Served-By"] for a in answers} == {"primary"}
        assert {_version(a, INTERNAL) for a in answers} == {version}  # the same layer version, from the primary
    finally:
        _set_apply_delay(topology, "0")
    assert until(lambda: _get(bounded_service, INTERNAL, key=True).headers["X-Served-By"] == "standby")


def test_a_stopped_standby_costs_no_request(service: str, topology: Settings) -> None:
    replicas = Replicas(topology)
    replicas.stop("one")
    try:
        statuses = [_get(service, PUBLIC).status_code for _ in range(30)]
        assert statuses == [200] * 30
    finally:
        replicas.start("one")
    assert until(lambda: _get(service, PUBLIC).headers["X-Served-By"] == "standby", 60)


def test_without_the_primary_public_reads_go_on_and_audited_reads_fail_closed(service: str, topology: Settings
                                                                               ) -> None:
    Cluster(topology).stop()
    public = [_get(service, PUBLIC) for _ in range(10)]
    assert [r.status_code for r in public] == [200] * 10
    assert public[-1].headers["X-Served-By"] == "standby"
    audited = _get(service, INTERNAL, key=True)  # its audit row cannot be written: no answer without it
    assert audited.status_code == 503
    assert httpx.get(f"{service}/readyz", timeout=CLIENT_TIMEOUT).status_code == 503


def test_after_promotion_the_service_writes_to_the_new_primary_without_a_restart(service: str, topology: Settings
                                                                                 ) -> None:
    replicas = Replicas(topology)
    replicas.promote("one")
    assert until(lambda: _get(service, INTERNAL, key=True).status_code == 200, 10)
    with psycopg.connect(replicas.url("one")) as conn:
        row = conn.execute("SELECT count(*) FROM ops.audit_log WHERE layer_id = %s", (INTERNAL,)).fetchone()
    assert row is not None and row[0] >= 1  # the audit rows went to the promoted server
