"""`gis stack`: the primary, its standbys, service nodes, job workers and HAProxy on one machine.

Every process is started from deploy/'s files rendered for this checkout (gis.stack.deploy_files): the
environment file, the gis-node@ and gis-worker@ units (their ExecStart, environment and working directory,
as systemd would run them) and the HAProxy configuration. The databases are the embedded cluster
(gis.db.cluster) and its streaming standbys (gis.db.replicas). What runs is recorded in
<state dir>/stack.json, so `status`, `stop NAME`, `start NAME` and `down` act on it from any later command.

Members are named primary, standby1.., node1.., worker1.. and lb. Nothing restarts a member by itself
(systemd does that on a real host): `gis stack start NAME` brings one back.
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from gis.db.cluster import Cluster
from gis.db.replicas import Replicas, primary_url, read_url
from gis.errors import GisError
from gis.settings import Settings
from gis.stack import deploy_files as files

# liveness (not readiness): the balancer keeps a node whose database is away, so public reads go on
HEALTH_PATH = "/healthz"
STATE_FILE = "stack.json"
# the caller's environment a member keeps (systemd gives a unit a clean one plus its EnvironmentFile)
_KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYTHONPATH")
# settings the stack decides itself; every other GIS_* of the caller's environment is passed on
_DECIDED = frozenset({"GIS_DATABASE_URL", "GIS_DATABASE_READ_URL", "GIS_HOST", "GIS_PORT", "GIS_LAYERS_DIR",
                      "GIS_STYLES_DIR", "GIS_SAMPLES_DIR", "GIS_RASTERS_DIR", "GIS_REJECTS_DIR", "GIS_SERVE_WORKERS",
                      "GIS_JOBS_IN_SERVICE", "GIS_SERVE_FORWARDED_ALLOW_IPS", "GIS_POOL_MIN_SIZE", "GIS_POOL_MAX_SIZE",
                      "GIS_DB_POOL_TIMEOUT_S", "GIS_DB_PROBE_TIMEOUT_S",
                      "GIS_CLUSTER_DIR", "GIS_CLUSTER_PORT", "GIS_TEST_CLUSTER_PORT"})


@dataclass
class Member:
    name: str
    kind: str  # primary, standby, node, worker, lb
    port: int | None = None
    pid: int | None = None
    argv: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MemberStatus:
    name: str
    kind: str
    pid: int | None
    state: str
    port: int | None

    def line(self) -> str:
        where = f"127.0.0.1:{self.port}" if self.port else "-"
        return f"{self.name:<10} {self.kind:<8} {self.pid or '-':>8}  {self.state:<22} {where}"


@dataclass(frozen=True)
class Plan:
    """What `up` starts: how many of each, and on which ports."""

    lb_port: int
    node_ports: tuple[int, ...]
    standby_ports: tuple[int, ...]
    workers: int
    node_workers: int = 1


class Stack:
    def __init__(self, settings: Settings, root: Path, deploy_dir: Path | None = None,
                 state_dir: Path | None = None) -> None:
        self.settings = settings
        self.root = root.resolve()
        self.deploy_dir = (deploy_dir or self.root / "deploy").resolve()
        self.state_dir = (state_dir or settings.cluster_dir.resolve().parent / "stack").resolve()
        self.primary = Cluster(settings)
        self.replicas = Replicas(settings)

    # -- state ---------------------------------------------------------------------------------------
    @property
    def _state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    def _load(self) -> tuple[int | None, dict[str, Member]]:
        if not self._state_file.is_file():
            return None, {}
        raw = json.loads(self._state_file.read_text())
        return raw.get("lb_port"), {m["name"]: Member(**m) for m in raw["members"]}

    def _save(self, lb_port: int | None, members: dict[str, Member]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._state_file.write_text(json.dumps({"lb_port": lb_port, "members": [asdict(m) for m in members.values()]},
                                               indent=1))

    def url(self) -> str | None:
        lb_port, _ = self._load()
        return f"http://127.0.0.1:{lb_port}" if lb_port else None

    # -- up / down -----------------------------------------------------------------------------------
    def up(self, plan: Plan) -> list[MemberStatus]:
        """Starts whatever of the plan is not running (idempotent); returns the status of every member."""
        if not (self.root / ".venv" / "bin" / "gis").is_file():
            raise GisError(f"stack up: no {self.root}/.venv/bin/gis: run it from the project's directory "
                           "after 'make .venv/bin/gis'")
        _, known = self._load()
        members: dict[str, Member] = {"primary": Member("primary", "primary", self.settings.cluster_port)}
        for i, port in enumerate(plan.standby_ports, 1):
            members[f"standby{i}"] = Member(f"standby{i}", "standby", port)
        for i, port in enumerate(plan.node_ports, 1):
            members[f"node{i}"] = Member(f"node{i}", "node", port)
        for i in range(1, plan.workers + 1):
            members[f"worker{i}"] = Member(f"worker{i}", "worker")
        members["lb"] = Member("lb", "lb", plan.lb_port)
        for name, member in members.items():  # a member already running keeps its process
            if name in known and known[name].pid and self._alive(known[name]):
                member.pid, member.argv = known[name].pid, known[name].argv
        self._save(plan.lb_port, members)
        self.primary.start()
        for member in members.values():
            if member.kind == "standby":
                self._start_standby(member)
        self._write_config(plan, members)  # after the standbys: the URLs name their ports
        for member in members.values():
            if member.kind in ("node", "worker", "lb") and not self._alive(member):
                self._spawn(member)
        self._save(plan.lb_port, members)
        for member in members.values():
            if member.kind == "node":
                self._wait_answering(member, 90)
        self._wait_answering(members["lb"], 30)
        return self.status()

    def down(self) -> list[str]:
        """Stops every member, the balancer first and the primary last; the data stays."""
        lb_port, members = self._load()
        order = ["lb", "node", "worker", "standby", "primary"]
        done = []
        for kind in order:
            for member in members.values():
                if member.kind == kind:
                    done.append(self._stop(member))
        self._save(lb_port, members)
        return done

    # -- one member ----------------------------------------------------------------------------------
    def stop(self, name: str) -> str:
        lb_port, members = self._load()
        member = self._member(members, name)
        said = self._stop(member)
        self._save(lb_port, members)
        return said

    def start(self, name: str) -> str:
        lb_port, members = self._load()
        member = self._member(members, name)
        if member.kind == "primary":
            said = self.primary.start()
        elif member.kind == "standby":
            said = self._start_standby(member)
        elif self._alive(member):
            said = f"{name} already running (pid {member.pid})"
        else:
            self._spawn(member)
            self._save(lb_port, members)
            if member.kind in ("node", "lb"):
                self._wait_answering(member, 90)
            said = f"{name} started (pid {member.pid})"
        self._save(lb_port, members)
        return said

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Sends a signal to a process member (chaos tests); its pid."""
        _, members = self._load()
        member = self._member(members, name)
        if member.kind not in ("node", "worker", "lb") or not self._alive(member) or member.pid is None:
            raise GisError(f"stack: {name} is not a running process")
        os.kill(member.pid, sig)
        return member.pid

    @staticmethod
    def _member(members: dict[str, Member], name: str) -> Member:
        if name not in members:
            known = ", ".join(members) or "none (gis stack up)"
            raise GisError(f"stack: no member '{name[:40]}'; the members are {known}")
        return members[name]

    # -- status --------------------------------------------------------------------------------------
    def status(self) -> list[MemberStatus]:
        _, members = self._load()
        return [self._status(m) for m in members.values()]

    def _status(self, member: Member) -> MemberStatus:
        if member.kind == "primary":
            found = self.primary.status()
            return MemberStatus(member.name, member.kind, found.pid, "running" if found.running else "stopped",
                                member.port)
        if member.kind == "standby":
            if member.name not in self.replicas.names():
                return MemberStatus(member.name, member.kind, None, "not created", member.port)
            replica = self.replicas.status(member.name)
            lag = f", lag {replica.lag_bytes} B" if replica.running and replica.lag_bytes is not None else ""
            return MemberStatus(member.name, member.kind, replica.pid, replica.state + lag, member.port)
        if not self._alive(member):
            return MemberStatus(member.name, member.kind, None, "stopped", member.port)
        state = "running"
        if member.kind in ("node", "lb"):
            state = "serving" if self._answers(member) else "not answering"
        return MemberStatus(member.name, member.kind, member.pid, state, member.port)

    # -- configuration -------------------------------------------------------------------------------
    @property
    def etc(self) -> Path:
        return self.state_dir / "etc"

    def _values(self, plan: Plan, members: dict[str, Member]) -> dict[str, Any]:
        standbys = [m.name for m in members.values() if m.kind == "standby"]
        extra = {k: v for k, v in os.environ.items() if k.startswith("GIS_") and k not in _DECIDED}
        extra.setdefault("GIS_DB_LOG_FILE", str(self.primary.log_file))
        s = self.settings
        return {
            "root": str(self.root), "etc": str(self.etc), "user": os.environ.get("USER", "root"),
            "host": "127.0.0.1", "node_workers": plan.node_workers, "proxies": "127.0.0.1",
            # one machine runs every member and the load: a busy moment must not read as an outage
            "pool_min_size": 5, "pool_max_size": 20, "pool_timeout_s": 5, "probe_timeout_s": 3,
            "database_url": primary_url(s, standbys) if standbys else self.primary.url(),
            "read_url": read_url(s, standbys) if standbys else "",
            "samples_dir": str(s.samples_dir.resolve()), "rasters_dir": str(s.rasters_dir.resolve()),
            "rejects_dir": str(s.rejects_dir.resolve()), "extra": extra, "refresh_calendar": "hourly",
            "bind": f"127.0.0.1:{plan.lb_port}", "pidfile": "", "health_path": HEALTH_PATH,
            "nodes": [{"name": m.name, "address": f"127.0.0.1:{m.port}"} for m in members.values() if m.kind == "node"],
        }

    def _write_config(self, plan: Plan, members: dict[str, Member]) -> None:
        files.render_all(self.deploy_dir, self._values(plan, members), self.etc)

    def _command(self, member: Member) -> tuple[list[str], dict[str, str], Path]:
        if member.kind == "lb":
            return ["haproxy", "-db", "-f", str(self.etc / files.rendered_name(files.HAPROXY))], {}, self.state_dir
        unit, instance = ((files.NODE_UNIT, str(member.port)) if member.kind == "node"
                          else (files.WORKER_UNIT, member.name.removeprefix("worker")))
        env_file = self.etc / files.rendered_name(files.ENV_FILE)
        command = files.unit_command((self.etc / files.rendered_name(unit)).read_text(), instance,
                                     {str(env_file): env_file.read_text()})
        return command.argv, command.env, command.cwd

    # -- processes -----------------------------------------------------------------------------------
    def _spawn(self, member: Member) -> None:
        argv, unit_env, cwd = self._command(member)
        env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ} | unit_env
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{member.name}.log").open("ab") as log:
            process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        member.pid, member.argv = process.pid, argv

    @staticmethod
    def _alive(member: Member) -> bool:
        """The member's recorded pid runs the member's command (a reused pid is someone else's)."""
        if member.kind in ("primary", "standby") or not member.pid:
            return False
        try:
            cmdline = Path(f"/proc/{member.pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{member.pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return False
        args = [a.encode() for a in member.argv[1:]]
        # a console script runs as `python /path/to/gis ...`: the recorded arguments end the command line
        return state != "Z" and bool(member.argv) and cmdline[-len(args) - 1:-1] == args

    def _stop(self, member: Member) -> str:
        if member.kind == "primary":
            return f"primary: {self.primary.stop()}"
        if member.kind == "standby":
            if member.name not in self.replicas.names():
                return f"{member.name}: not created"
            return f"{member.name}: {self.replicas.stop(member.name)}"
        if not self._alive(member) or member.pid is None:
            member.pid = None
            return f"{member.name}: already stopped"
        pid = member.pid
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self._alive(member) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._alive(member):
            os.kill(pid, signal.SIGKILL)
        member.pid = None
        return f"{member.name}: stopped (pid {pid})"

    def _start_standby(self, member: Member) -> str:
        assert member.port is not None
        if member.name in self.replicas.names():
            return f"{member.name}: {self.replicas.start(member.name)}"
        return f"{member.name}: {self.replicas.create(member.name, member.port).describe()}"

    def _answers(self, member: Member) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{member.port}{HEALTH_PATH}", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _wait_answering(self, member: Member, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._answers(member):
            if not self._alive(member):
                raise GisError(f"stack: {member.name} exited; see {self.state_dir / 'logs' / member.name}.log")
            if time.monotonic() > deadline:
                raise GisError(f"stack: {member.name} did not answer within {seconds:g} s; "
                               f"see {self.state_dir / 'logs' / member.name}.log")
            time.sleep(0.3)


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def migrate_primary(settings: Settings) -> str:
    """The primary's schema current before nodes start (`gis migrate` without the grant step)."""
    from gis.db.migrate import migrate
    from gis.layers import load_registry

    with psycopg.connect(Cluster(settings).url()) as conn:
        applied = migrate(conn, load_registry(settings.layers_dir, settings.styles_dir))
    return ", ".join(applied) or "up to date"
