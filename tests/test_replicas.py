"""Embedded streaming standbys (gis db replica ..., gis db promote): real pg_basebackup, real replication."""

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from local_ports import free_port

from gis.db.cluster import Cluster
from gis.db.replicas import Replicas, primary_url, read_url
from gis.errors import GisError
from gis.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_DIR = ROOT / ".gisdata" / "test" / "replicas-under-test"


def _until(check: Callable[[], bool], seconds: float = 30) -> None:
    """Replication is asynchronous: wait (bounded) for what the test then asserts."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except psycopg.Error:
            pass
        time.sleep(0.2)


@pytest.fixture(scope="module")
def settings() -> Iterator[Settings]:
    shutil.rmtree(CLUSTER_DIR, ignore_errors=True)
    made = Settings(cluster_dir=CLUSTER_DIR / "pg", cluster_port=free_port())
    Cluster(made).start()
    yield made
    replicas = Replicas(made)
    for name in replicas.names():
        replicas.drop(name)
    Cluster(made).stop()
    shutil.rmtree(CLUSTER_DIR, ignore_errors=True)


def _count(url: str) -> int:
    with psycopg.connect(url, connect_timeout=3) as conn:
        row = conn.execute("SELECT count(*) FROM replicated").fetchone()
    return int(row[0]) if row else -1


def test_a_replica_streams_the_primarys_writes_and_refuses_its_own(settings: Settings) -> None:
    primary = Cluster(settings)
    with psycopg.connect(primary.url(), autocommit=True) as conn:
        conn.execute("CREATE TABLE replicated (n int)")
        conn.execute("INSERT INTO replicated VALUES (1)")
    replicas = Replicas(settings)
    status = replicas.create("alpha", free_port())
    assert status.running and status.standby
    with psycopg.connect(primary.url(), autocommit=True) as conn:
        conn.execute("INSERT INTO replicated VALUES (2)")  # after the base backup: only streaming brings it
    _until(lambda: _count(replicas.url("alpha")) == 2)
    assert _count(replicas.url("alpha")) == 2
    with psycopg.connect(replicas.url("alpha"), autocommit=True) as conn, \
            pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("INSERT INTO replicated VALUES (3)")


def test_list_shows_each_replica_and_its_state(settings: Settings) -> None:
    replicas = Replicas(settings)
    replicas.create("beta", free_port())
    replicas.stop("beta")
    found = {s.name: s.state for s in replicas.list()}
    assert found == {"alpha": "standby", "beta": "stopped"}
    replicas.start("beta")
    assert replicas.status("beta").state == "standby"


def test_a_stopped_replica_catches_up_from_its_slot(settings: Settings) -> None:
    replicas = Replicas(settings)
    replicas.stop("beta")
    with psycopg.connect(Cluster(settings).url(), autocommit=True) as conn:
        conn.execute("INSERT INTO replicated SELECT generate_series(10, 1000)")
        conn.execute("SELECT pg_switch_wal()")  # the WAL it missed is in a finished segment the slot keeps
        conn.execute("CHECKPOINT")
    replicas.start("beta")
    _until(lambda: _count(replicas.url("beta")) == 993)
    assert _count(replicas.url("beta")) == 993


def test_read_url_names_standbys_only(settings: Settings) -> None:
    with psycopg.connect(read_url(settings, ["alpha"]), connect_timeout=3) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    assert row == (True,)


def test_promote_makes_a_standby_take_writes_and_the_primary_url_follows(settings: Settings) -> None:
    replicas = Replicas(settings)
    url = primary_url(settings, ["alpha"])
    Cluster(settings).stop()  # the old primary goes away first, as an operator does
    replicas.promote("alpha")
    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:  # the same URL as before
        conn.execute("INSERT INTO replicated VALUES (4)")
        row = conn.execute("SELECT inet_server_port()").fetchone()
    assert row == (replicas.cluster("alpha").port,)
    assert replicas.status("alpha").state == "primary (promoted)"


def test_drop_removes_the_replica_and_its_files(settings: Settings) -> None:
    replicas = Replicas(settings)
    data_dir = replicas.cluster("beta").data_dir
    replicas.drop("beta")
    assert "beta" not in replicas.names()
    assert not data_dir.exists()
    with pytest.raises(GisError, match="no replica 'beta'"):
        replicas.status("beta")


def test_cli_names_a_bad_replica_command_in_one_line(settings: Settings) -> None:
    env = {**os.environ, "GIS_CLUSTER_DIR": str(settings.cluster_dir), "GIS_CLUSTER_PORT": str(settings.cluster_port)}
    env.pop("GIS_DATABASE_URL", None)
    for argv, message in ((["create", "gamma"], "give --port P"), (["drop", "nope"], "no replica 'nope'"),
                          (["create", "Bad Name", "--port", "1"], "use lower-case letters")):
        run = subprocess.run([sys.executable, "-m", "gis.cli", "db", "replica", *argv], env=env, cwd=ROOT,
                             capture_output=True, text=True)
        assert run.returncode == 1
        assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1
