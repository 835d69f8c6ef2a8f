"""Streaming standbys of the embedded cluster, on this machine: PostgreSQL's own replication, nothing of ours.

Each replica is a pg_basebackup copy of the primary in `<cluster dir's parent>/replicas/NAME/pg` (so under
the project's .gisdata), streaming from the primary through a physical replication slot `gis_NAME` (the
primary keeps the WAL a stopped standby still needs), run with the same binaries and the same `Cluster`
class as the primary, on its own port. `promote` is PostgreSQL's own promotion (pg_ctl promote).

The Python API, for the CLI (`gis db replica ...`, `gis db promote`) and for whatever starts a local topology:

    replicas = Replicas(settings)
    replicas.create("standby1", 57150)       # -> ReplicaStatus; started, streaming
    replicas.list()                          # -> [ReplicaStatus]; .running, .pid, .standby, .lag_bytes
    replicas.stop("standby1"); replicas.start("standby1")
    replicas.url("standby1")                 # a libpq URL of that one server
    read_url(settings, ["standby1", "standby2"])   # GIS_DATABASE_READ_URL for those standbys
    primary_url(settings, ["standby1"])      # GIS_DATABASE_URL that follows a promotion
    replicas.promote("standby1")             # it becomes a primary (stop the old one first!)
    replicas.drop("standby1")                # stopped, slot dropped, files removed
"""

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

from gis.db.cluster import SUPERUSER, Cluster
from gis.errors import DatabaseError, GisError
from gis.settings import Settings

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
META_FILE = "replica.json"


@dataclass(frozen=True)
class ReplicaStatus:
    name: str
    port: int
    data_dir: Path
    running: bool
    pid: int | None
    standby: bool  # False once promoted
    lag_bytes: int | None  # WAL bytes the standby has not replayed yet, as the primary sees it; None: unknown

    @property
    def state(self) -> str:
        if not self.running:
            return "stopped"
        return "standby" if self.standby else "primary (promoted)"

    def describe(self) -> str:
        lag = f", {self.lag_bytes} bytes behind" if self.lag_bytes is not None else ""
        pid = f" pid {self.pid}" if self.pid else ""
        return f"{self.name:<12} {self.state}{pid} on 127.0.0.1:{self.port}{lag}, data in {self.data_dir}"


def slot_name(name: str) -> str:
    return f"gis_{name}"


def _conf_value(value: str) -> str:
    """A string literal for postgresql.auto.conf (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


class Replicas:
    """The standbys of the embedded cluster named by settings (cluster_dir, cluster_port)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.primary = Cluster(settings)
        self.root = self.primary.data_dir.parent / "replicas"

    # -- where each one lives ----------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        if not _NAME.match(name):
            raise GisError(f"replica name '{name}': use lower-case letters, digits and '_', starting with a letter")
        return self.root / name

    def _meta(self, name: str) -> dict[str, object]:
        path = self._dir(name) / META_FILE
        try:
            meta: dict[str, object] = json.loads(path.read_text())
        except FileNotFoundError as exc:
            known = ", ".join(self.names()) or "none"
            raise GisError(f"no replica '{name}' (replicas: {known})") from exc
        return meta

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / META_FILE).is_file())

    def cluster(self, name: str) -> Cluster:
        """The replica as a Cluster: start(), stop(), status(), url(), log_file, data_dir, port."""
        port = int(str(self._meta(name)["port"]))
        return Cluster(self.settings, data_dir=self._dir(name) / "pg", port=port)

    def url(self, name: str, database: str | None = None) -> str:
        return self.cluster(name).url(database)

    # -- actions -----------------------------------------------------------------------------------
    def create(self, name: str, port: int) -> ReplicaStatus:
        """pg_basebackup of the running primary into a new replica, configured to stream, and started."""
        home = self._dir(name)
        if (home / META_FILE).is_file():
            raise GisError(f"replica '{name}' exists already ('gis db replica drop {name}' first)")
        if port == self.primary.port or port in self._ports():
            raise GisError(f"port {port} is taken by the primary or another replica")
        if not self.primary.status().running:
            raise DatabaseError("the primary is not running: 'gis db start' first")
        shutil.rmtree(home, ignore_errors=True)  # the remains of a create that failed half-way
        home.mkdir(parents=True)
        replica = Cluster(self.settings, data_dir=home / "pg", port=port)
        replica._make_owned(replica.data_dir, directory=True)
        password = self.primary.password()
        self._drop_slot(name)
        result = replica._run(
            "pg_basebackup", "-D", str(replica.data_dir), "-h", "127.0.0.1", "-p", str(self.primary.port),
            "-U", SUPERUSER, "-X", "stream", "-c", "fast", "-C", "-S", slot_name(name), "--no-password",
            env={"PGPASSWORD": password},
        )
        if result.returncode != 0:
            shutil.rmtree(home, ignore_errors=True)
            self._drop_slot(name)
            last = result.stderr.strip().splitlines()[-1:] or ["no output"]
            raise DatabaseError(f"pg_basebackup failed: {last[0]}")
        conninfo = psycopg.conninfo.make_conninfo(
            host="127.0.0.1", port=str(self.primary.port), user=SUPERUSER, password=password, application_name=name)
        with (replica.data_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = {_conf_value(conninfo)}\n")
            conf.write(f"primary_slot_name = {_conf_value(slot_name(name))}\n")
            # Reads on a standby are not cancelled by the primary's vacuum of rows they still see.
            conf.write("hot_standby_feedback = on\n")
            conf.write("shared_buffers = '256MB'\n")  # one machine runs the primary and its standbys
        replica._make_owned(replica.data_dir / "standby.signal", directory=False)
        replica.password_file.write_text(password + "\n")
        replica.password_file.chmod(0o600)
        (home / META_FILE).write_text(json.dumps({"name": name, "port": port, "primary_port": self.primary.port}))
        replica.start()
        return self.status(name)

    def start(self, name: str) -> str:
        return self.cluster(name).start()

    def stop(self, name: str) -> str:
        return self.cluster(name).stop()

    def drop(self, name: str) -> str:
        """Stopped, its slot dropped on the primary (so the primary stops keeping WAL for it), files removed."""
        self.cluster(name).stop()
        self._drop_slot(name)
        shutil.rmtree(self._dir(name))
        return f"replica {name} dropped"

    def promote(self, name: str) -> str:
        """PostgreSQL's promotion: the standby ends recovery and takes writes. Stop the old primary first."""
        replica = self.cluster(name)
        if not replica.status().running:
            raise DatabaseError(f"replica {name} is not running: 'gis db replica start {name}' first")
        if not replica.is_standby():
            return f"replica {name} is a primary already (promoted before)"
        result = replica._run("pg_ctl", "promote", "-w", "-t", "60", "-D", str(replica.data_dir))
        if result.returncode != 0:
            raise DatabaseError(f"promotion of {name} failed: {result.stderr.strip()}")
        return f"replica {name} promoted: it takes writes on 127.0.0.1:{replica.port}"

    # -- state -------------------------------------------------------------------------------------
    def status(self, name: str) -> ReplicaStatus:
        replica = self.cluster(name)
        state = replica.status()
        lag = self._lags().get(name) if state.running else None
        return ReplicaStatus(name, replica.port, replica.data_dir, state.running, state.pid, replica.is_standby(), lag)

    def list(self) -> list[ReplicaStatus]:
        return [self.status(name) for name in self.names()]

    def _ports(self) -> set[int]:
        return {int(str(self._meta(n)["port"])) for n in self.names()}

    def _primary_conn(self) -> psycopg.Connection | None:
        if not self.primary.initialised() or not self.primary.status().running:
            return None
        try:
            return psycopg.connect(self.primary.url("postgres"), autocommit=True, connect_timeout=3)
        except psycopg.OperationalError:
            return None

    def _lags(self) -> dict[str, int]:
        conn = self._primary_conn()
        if conn is None:
            return {}
        with conn:
            rows = conn.execute(
                "SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint "
                "FROM pg_stat_replication WHERE replay_lsn IS NOT NULL").fetchall()
        return {str(name): int(lag) for name, lag in rows}

    def _drop_slot(self, name: str) -> None:
        conn = self._primary_conn()
        if conn is None:
            return
        with conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s AND NOT active", (slot_name(name),))


def _multi_host_url(settings: Settings, ports: list[int], target: str) -> str:
    primary = Cluster(settings)
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    return (f"postgresql://{SUPERUSER}:{quote(primary.password(), safe='')}@{hosts}/{settings.database_name}"
            f"?target_session_attrs={target}")


def read_url(settings: Settings, names: list[str] | None = None) -> str:
    """GIS_DATABASE_READ_URL for these standbys (default: every replica): libpq takes the first that answers
    as a standby (`target_session_attrs=standby`); with none, the service reads from the primary itself."""
    replicas = Replicas(settings)
    ports = [replicas.cluster(n).port for n in (names if names is not None else replicas.names())]
    return _multi_host_url(settings, ports, "standby")


def primary_url(settings: Settings, names: list[str] | None = None) -> str:
    """GIS_DATABASE_URL listing the primary and these replicas with target_session_attrs=read-write: whichever
    of them takes writes is used, so the service follows `gis db promote` without a restart."""
    replicas = Replicas(settings)
    ports = [replicas.cluster(n).port for n in (names if names is not None else replicas.names())]
    return _multi_host_url(settings, [replicas.primary.port, *ports], "read-write")
