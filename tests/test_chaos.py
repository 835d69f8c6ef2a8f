"""The local stack (`gis stack`) from the deploy/ files, and chaos on it, measured.

One stack for the module: a primary of its own (the suite's template restored into it), two streaming
standbys, three service nodes, a job worker and HAProxy, all real processes. The chaos run is
bench/chaos.py's workload: 100 clients on 10 keys for 60 s while node1 is SIGKILLed, standby1 stopped and the
primary restarted; it must end with 0 failed requests (but the documented 503s of the restart), 0 lost audit
rows and 0 lost readings.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import ROOT
from local_ports import free_port
from psycopg import sql

from bench import chaos
from gis.db.cluster import Cluster, find_bindir
from gis.settings import Settings
from gis.stack import deploy_files
from gis.stack.topology import Plan, Stack

pytestmark = pytest.mark.chaos


def _restore(template_url: str, cluster: Cluster) -> None:
    """The suite's template (every layer loaded by the real refresh) as the stack primary's database."""
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        name = sql.Identifier(cluster.settings.database_name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    bindir = find_bindir()
    dump = subprocess.run([str(bindir / "pg_dump"), "-Fc", "-d", template_url], capture_output=True, check=True)
    subprocess.run([str(bindir / "pg_restore"), "--no-owner", "-d", cluster.url()], input=dump.stdout,
                   capture_output=True, check=True)


@pytest.fixture(scope="module")
def stack(server_url: str, template_db: str, settings: Settings) -> Iterator[Stack]:
    # beside the suite's cluster (the server runs as `postgres`, which cannot enter pytest's private tmp)
    home = settings.cluster_dir.parent / "stack"
    if home.exists():  # a run that was killed: its members first, then its files
        Stack(settings.model_copy(update={"cluster_dir": home / "pg"}), ROOT).down()
        shutil.rmtree(home)
    own = settings.model_copy(update={"cluster_dir": home / "pg", "cluster_port": free_port(),
                                      "database_url": None})
    up = Stack(own, ROOT)
    up.primary.start()
    try:
        _restore(psycopg.conninfo.make_conninfo(server_url, dbname=template_db), up.primary)
        lb = free_port()
        plan = Plan(lb, tuple(free_port() for _ in range(3)), (free_port(), free_port()), workers=1)
        up.up(plan)
        yield up
    finally:
        up.down()


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIS_CLUSTER_DIR": str(stack.settings.cluster_dir),
           "GIS_CLUSTER_PORT": str(stack.settings.cluster_port)}
    env.pop("GIS_DATABASE_URL", None)
    return subprocess.run([str(Path(sys.executable).parent / "gis"), "stack", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_stack_status_prints_the_balancer_and_one_line_per_member(stack: Stack) -> None:
    done = _cli(stack, "status")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"load balancer: {stack.url()}/"
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"primary", "standby1", "standby2", "node1", "node2", "node3", "worker1", "lb"}
    for name, row in rows.items():
        assert row[2].isdigit(), f"{name} has no pid: {row}"
    assert rows["node1"][3] == "serving" and rows["lb"][3] == "serving" and rows["worker1"][3] == "running"
    assert rows["standby1"][3].startswith("standby") and rows["primary"][3] == "running"
    # the city, through the balancer
    collections = httpx.get(f"{stack.url()}/collections", params={"f": "json"}, timeout=30).json()["collections"]
    assert {"roads", "admin_districts"} <= {c["id"] for c in collections}


def test_each_node_runs_the_command_its_systemd_unit_names(stack: Stack) -> None:
    unit = (stack.etc / deploy_files.rendered_name(deploy_files.NODE_UNIT)).read_text()
    env_file = stack.etc / deploy_files.rendered_name(deploy_files.ENV_FILE)
    for member in stack.status():
        if member.kind != "node":
            continue
        command = deploy_files.unit_command(unit, str(member.port), {str(env_file): env_file.read_text()})
        assert command.argv == [str(ROOT / ".venv" / "bin" / "gis"), "serve", "--host", "127.0.0.1",
                                "--port", str(member.port)]
        running = Path(f"/proc/{member.pid}/cmdline").read_bytes().split(b"\0")[:-1]
        assert [a.decode() for a in running[-len(command.argv) + 1:]] == command.argv[1:]
        environ = dict(e.split(b"=", 1) for e in Path(f"/proc/{member.pid}/environ").read_bytes().split(b"\0") if e)
        assert environ[b"GIS_JOBS_IN_SERVICE"] == b"false" and environ[b"GIS_SERVE_WORKERS"] == b"1"
        assert b"GIS_DATABASE_READ_URL" in environ


def test_a_member_stopped_is_stopped_and_the_balancer_serves_on(stack: Stack) -> None:
    assert "stopped" in _cli(stack, "stop", "node3").stdout
    state = {s.name: s for s in stack.status()}
    assert state["node3"].state == "stopped" and state["node3"].pid is None
    assert all(httpx.get(f"{stack.url()}/collections/roads/items", params={"limit": 1}, timeout=30).status_code
               == 200 for _ in range(10))
    assert "started" in _cli(stack, "start", "node3").stdout
    assert {s.name: s for s in stack.status()}["node3"].state == "serving"
    wrong = _cli(stack, "stop", "node9")
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1 and "no member 'node9'" in wrong.stderr


def test_chaos_loses_no_request_audit_row_or_reading(stack: Stack) -> None:
    base = stack.url()
    assert base is not None
    primary = stack.primary.url()
    figures = chaos.run_chaos(stack, base, primary, chaos.prepare(primary), seconds=60, clients=100)
    print(chaos.markdown(figures, "pytest tests/test_chaos.py", "the suite's stack"))
    assert figures.requests > 1000
    assert [e.member for e in figures.events if e.done] == ["node1", "standby1", "primary", "node1", "standby1"]
    assert figures.failed == []
    assert figures.audit_lost == 0 and figures.audit_rows >= figures.audited_reads > 0
    assert figures.readings_lost == 0 and figures.readings_acknowledged > 0
