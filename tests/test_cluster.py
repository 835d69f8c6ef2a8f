"""The embedded cluster: idempotent start and stop, a stale pid file, a busy port, an external URL."""

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from local_ports import free_port

from gis.db.cluster import Cluster
from gis.errors import DatabaseError
from gis.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# Under the checkout, not /tmp: when tests run as root the server runs as `postgres`, which must reach it.
CLUSTER_DIR = ROOT / ".gisdata" / "test" / "cluster-under-test"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    shutil.rmtree(CLUSTER_DIR, ignore_errors=True)
    made = Cluster(Settings(cluster_dir=CLUSTER_DIR / "pg", cluster_port=free_port()))
    yield made
    made.stop()
    shutil.rmtree(CLUSTER_DIR, ignore_errors=True)


def test_start_is_idempotent_and_the_database_has_postgis(cluster: Cluster) -> None:
    assert cluster.start().startswith("running")
    assert cluster.start().startswith("already running")
    with psycopg.connect(cluster.url()) as conn:
        version = conn.execute("SELECT postgis_lib_version()").fetchone()
    assert version and version[0].startswith("3.")


def test_the_log_names_user_and_database_in_utc_even_after_someone_changed_it(cluster: Cluster) -> None:
    cluster.start()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET log_timezone = 'Asia/Shanghai'")
        conn.execute("ALTER SYSTEM SET log_line_prefix = '%m '")
        conn.execute("SELECT pg_reload_conf()")
    assert cluster.start().startswith("already running")
    with psycopg.connect(cluster.url()) as conn:
        found = [conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
                 for name in ("log_line_prefix", "log_timezone")]
    assert found == [("%m [%p] %u@%d ",), ("UTC",)]


def test_stop_is_idempotent(cluster: Cluster) -> None:
    cluster.start()
    assert cluster.stop().startswith("stopped")
    assert cluster.stop().startswith("already stopped")
    assert not cluster.status().running


def test_stale_pid_file_of_a_dead_server_does_not_block_start(cluster: Cluster) -> None:
    cluster.stop()
    pid_file = cluster.data_dir / "postmaster.pid"
    pid_file.write_text(f"{2**22 - 7}\n{cluster.data_dir}\n")  # above Linux's default pid_max: never alive
    if os.geteuid() == 0:
        shutil.chown(pid_file, "postgres", "postgres")
    assert cluster.start().startswith("running")


def test_busy_port_is_named(cluster: Cluster) -> None:
    cluster.stop()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the stopped server's TIME_WAIT
        squatter.bind(("127.0.0.1", cluster.port))
        squatter.listen()
        with pytest.raises(DatabaseError, match=f"port {cluster.port} is in use"):
            cluster.start()


def test_external_database_url_is_used_as_it_is() -> None:
    env = {**os.environ, "GIS_DATABASE_URL": "postgresql://someone@db.example:5432/city"}
    url = subprocess.run([sys.executable, "-m", "gis.cli", "db", "url"], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert url.stdout.strip() == "postgresql://someone@db.example:5432/city"
    start = subprocess.run([sys.executable, "-m", "gis.cli", "db", "start"], env=env, capture_output=True,
                           text=True, check=True, cwd=ROOT)
    assert "no embedded cluster" in start.stdout
