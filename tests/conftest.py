"""A real PostGIS for the suite, started by the project's own code.

The template database is built once per run: migrations, then every sample layer loaded through the
real refresh job, then styles published. Tests that only read use one clone of it (`loaded_db_url`);
tests that write get a clone of their own (`clone_db`).
"""

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from local_ports import free_port
from psycopg import sql

from gis.db.cluster import Cluster
from gis.db.migrate import migrate
from gis.layers import LayerRegistry, load_registry
from gis.rasters.refresh import RasterRefreshRequest, run_raster_refresh
from gis.refresh.runner import RefreshRequest, run_refresh
from gis.settings import Settings
from gis.tiles_keeper import CopyKeeper

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "gis_test_template"
# API keys every test database has (made in the template; the service's pepper is the default, empty).
# ADMIN reads every layer: the API tests of internal and restricted layers send it.
TEST_KEYS = {
    "admin": "gk_t0admin_admin-key-of-the-test-suite-0123456789",
    "analyst": "gk_t0analy_analyst-key-of-the-test-suite-01234567",
    "planner": "gk_t0plann_planner-key-of-the-test-suite-01234567",
    "pipeline_app": "gk_t0pipe_pipeline-key-of-the-test-suite-0123456",
    "environmental_app": "gk_t0envir_environment-key-of-the-test-suite-012",
    "auditor": "gk_t0audit_auditor-key-of-the-test-suite-01234567",
}
ADMIN_KEY = TEST_KEYS["admin"]
ADMIN_HEADERS = {"X-API-Key": ADMIN_KEY}


def _with_database(url: str, name: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=name)


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Paths of this checkout; a cluster of the tests' own unless GIS_DATABASE_URL names a server."""
    # One cluster directory per port, so runs on different ports (GIS_TEST_CLUSTER_PORT) never share one.
    port = int(os.environ.get("GIS_TEST_CLUSTER_PORT", "54339"))
    return Settings(
        database_url=os.environ.get("GIS_DATABASE_URL"),
        cluster_dir=ROOT / ".gisdata" / "test" / str(port) / "pg",
        cluster_port=port,
        layers_dir=ROOT / "layers",
        styles_dir=ROOT / "styles",
        samples_dir=ROOT / "data-samples" / "generated" / "small",
        rejects_dir=tmp_path_factory.mktemp("rejects"),
        rasters_dir=tmp_path_factory.mktemp("rasters"),
    )


@pytest.fixture(scope="session")
def registry(settings: Settings) -> LayerRegistry:
    return load_registry(settings.layers_dir, settings.styles_dir, settings.samples_dir)


@pytest.fixture(scope="session")
def server_url(settings: Settings) -> Iterator[str]:
    """A maintenance connection to the server (its `postgres` database); a cluster we started is stopped."""
    if settings.database_url:
        yield _with_database(settings.database_url, "postgres")
        return
    cluster = Cluster(settings)
    was_running = cluster.status().running
    cluster.start()
    yield cluster.url("postgres")
    if not was_running:
        cluster.stop()


def _recreate(server: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if template:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)))
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_database(server, name)


@pytest.fixture(scope="session")
def template_db(server_url: str, settings: Settings, registry: LayerRegistry) -> str:
    """Name of the template: migrated, every layer refreshed from its sample, styles published."""
    from gis.styles import publish_styles

    url = _recreate(server_url, TEMPLATE)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.commit()
        migrate(conn, registry)
        _seed_keys(conn)
    for spec in registry.values():
        request = RefreshRequest(spec, settings.samples_dir / spec.source.path, settings.city_extent,
                                 settings.rejects_dir, progress=False)
        run_refresh(url, request)
    CopyKeeper(url, registry, 0, settings.styles_dir).run_once()  # what a worker does in the background after refreshes
    for raster in registry.rasters.values():  # COGs in the session's rasters_dir; clones point at the same files
        run_raster_refresh(url, RasterRefreshRequest(raster, settings.samples_dir / raster.source.path,
                                                     settings.city_extent, settings.rasters_dir))
    with psycopg.connect(url) as conn:
        publish_styles(conn, registry, settings.styles_dir)
        conn.commit()
    return TEMPLATE


def _seed_keys(conn: psycopg.Connection) -> None:
    from gis.security.keys import create_key

    for role, token in TEST_KEYS.items():
        create_key(conn, f"test {role}", role, pepper="", token=token)
    conn.commit()


@pytest.fixture(scope="session")
def admin_headers() -> dict[str, str]:
    """Credentials of the test admin key (every layer), for API tests that read internal or restricted layers."""
    return dict(ADMIN_HEADERS)


@pytest.fixture(scope="session")
def loaded_db_url(server_url: str, template_db: str, registry: LayerRegistry, settings: Settings) -> str:
    """A database with every sample layer loaded, for tests that only read."""
    from gis.styles import publish_styles

    url = _recreate(server_url, "gis_test_read", template_db)
    with psycopg.connect(url) as conn:
        publish_styles(conn, registry, settings.styles_dir)  # QGIS matches styles by database name
        conn.commit()
    return url


@contextlib.contextmanager
def cloned_database(server_url: str, template_db: str, name: str) -> Iterator[str]:
    """A named clone of the template for a whole test module; dropped afterwards."""
    url = _recreate(server_url, name, template_db)
    try:
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def clone_db(server_url: str, template_db: str) -> Iterator[Callable[[], str]]:
    """Makes fresh clones of the template for a test that writes; dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"gis_test_{uuid.uuid4().hex[:10]}"
        made.append(name)
        return _recreate(server_url, name, template_db)

    yield make
    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is not a passed one: the run fails if anything was skipped."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == 0:
        reporter.write_line(f"FAILED: {skipped} test(s) skipped; every test here is required", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- the real service, for API tests (tests/test_api_*.py) ------------------------------------------------


@contextlib.contextmanager
def serve(database_url: str, settings: Settings) -> Iterator[str]:
    """The service (create_app through services.asgi, run by uvicorn) on a free port; yields its base URL."""
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    # No rate limit unless a test asks for one (GIS_HTTP_RATE_PER_SECOND): the suite is one very busy caller.
    env = {"GIS_HTTP_RATE_PER_SECOND": "0", **os.environ, "GIS_DATABASE_URL": database_url,
           "GIS_LAYERS_DIR": str(settings.layers_dir), "GIS_STYLES_DIR": str(settings.styles_dir)}
    if not settings.database_url:  # our own cluster: the service audits direct reads from its log, as on make run
        env["GIS_DB_LOG_FILE"] = str(Cluster(settings).log_file)
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "services.asgi:app_from_environment", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited with {process.returncode} before answering")
            try:
                if httpx.get(f"{url}/conformance", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not answer within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def api_url(loaded_db_url: str, settings: Settings) -> Iterator[str]:
    """The service reading loaded_db_url, for the whole session."""
    with serve(loaded_db_url, settings) as url:
        yield url


@pytest.fixture(scope="session")
def serve_api(settings: Settings) -> Callable[[str], contextlib.AbstractContextManager[str]]:
    """serve_api(database_url) starts another instance of the service, e.g. on a clone_db() database."""
    return lambda database_url: serve(database_url, settings)


@pytest.fixture(scope="module")
def client(api_url: str, admin_headers: dict[str, str]) -> Iterator[httpx.Client]:
    """An HTTP client of the service with the admin key (API tests of every layer)."""
    with httpx.Client(base_url=api_url, headers=admin_headers, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def db(loaded_db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the loaded database, to compare answers with."""
    with psycopg.connect(loaded_db_url, autocommit=True) as conn:
        yield conn
