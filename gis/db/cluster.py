"""The embedded default database: a private PostgreSQL + PostGIS cluster run from the system's binaries.

PostgreSQL refuses to run as root, so when the caller is root the server programs run as the
`postgres` system user that Debian's package creates, and that user owns the data directory.
When GIS_DATABASE_URL is set none of this runs: that database is used as it is.
"""

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from gis.errors import DatabaseError
from gis.settings import Settings

SUPERUSER = "postgres"
POSTGIS_CONTROL_GLOB = "/usr/share/postgresql/*/extension/postgis.control"
# The metapackages: they pull in the release's own major (Debian 12: 15, Debian 13: 17).
INSTALL_HINT = "apt-get install postgresql postgresql-postgis"

# Who did it, and when: direct reads by `gis db grant` users are told apart, with a UTC time, in the server log
# (gis.security.db_read_audit reads them from there into ops.audit_log).
LOG_SETTINGS = {"log_line_prefix": "%m [%p] %u@%d ", "log_timezone": "UTC"}


@dataclass(frozen=True)
class ClusterStatus:
    running: bool
    pid: int | None
    data_dir: Path
    port: int

    def describe(self) -> str:
        if self.running:
            return f"running (pid {self.pid}) on 127.0.0.1:{self.port}, data in {self.data_dir}"
        return f"stopped, data in {self.data_dir}"


def find_bindir() -> Path:
    """The directory of the PostgreSQL server programs (initdb, pg_ctl, postgres)."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise DatabaseError(f"PostgreSQL server programs (initdb, pg_ctl) not found: {INSTALL_HINT}")


def check_postgis_installed() -> None:
    if not glob.glob(POSTGIS_CONTROL_GLOB):
        raise DatabaseError(f"PostGIS is not installed for the system's PostgreSQL: {INSTALL_HINT}")


class Cluster:
    """The embedded cluster under settings.cluster_dir, listening on 127.0.0.1:settings.cluster_port.

    data_dir and port name another cluster run the same way: gis.db.replicas runs its standbys with this
    class (a standby has standby.signal in its data directory and is never written to here).
    """

    def __init__(self, settings: Settings, data_dir: Path | None = None, port: int | None = None) -> None:
        self.settings = settings
        self.data_dir = (data_dir or settings.cluster_dir).resolve()
        self.port = port or settings.cluster_port
        self.password_file = self.data_dir.parent / "pg.password"

    # -- running the server programs, as `postgres` when we are root -------------------------------
    def _server_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError as exc:
            raise DatabaseError(
                f"running as root needs the '{SUPERUSER}' system user to run PostgreSQL: {INSTALL_HINT}"
            ) from exc
        return SUPERUSER

    def _run(self, program: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        command = [str(find_bindir() / program), *args]
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, user=self._server_user(), cwd="/",
            env={**os.environ, **env} if env else None,
        )
        return result

    # -- state -------------------------------------------------------------------------------------
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def is_standby(self) -> bool:
        """A streaming standby (gis.db.replicas) until promoted: PostgreSQL removes standby.signal then."""
        return (self.data_dir / "standby.signal").is_file()

    def status(self) -> ClusterStatus:
        pid_file = self.data_dir / "postmaster.pid"
        if not self.initialised() or not pid_file.is_file():
            return ClusterStatus(False, None, self.data_dir, self.port)
        result = self._run("pg_ctl", "status", "-D", str(self.data_dir))
        if result.returncode != 0:
            return ClusterStatus(False, None, self.data_dir, self.port)
        pid = int(pid_file.read_text().splitlines()[0])
        return ClusterStatus(True, pid, self.data_dir, self.port)

    def password(self) -> str:
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError as exc:
            raise DatabaseError(
                f"the embedded cluster is not initialised ({self.data_dir}): run 'gis db start'"
            ) from exc

    @property
    def log_file(self) -> Path:
        """The server's log (pg_ctl -l): startup errors, and the statements of `gis db grant` login roles."""
        return self.data_dir.parent / "postgresql.log"

    def url(self, database: str | None = None) -> str:
        name = database or self.settings.database_name
        return f"postgresql://{SUPERUSER}:{quote(self.password(), safe='')}@127.0.0.1:{self.port}/{name}"

    # -- actions -----------------------------------------------------------------------------------
    def start(self) -> str:
        """Initialise if needed, start if stopped, make sure the database and PostGIS exist. Idempotent."""
        find_bindir()
        check_postgis_installed()
        if not self.initialised():
            self._initdb()
        if self.status().running:
            if not self.is_standby():
                self._ensure_database()
            return f"already {self.status().describe()}"
        self._check_port_free()
        self._remove_stale_pid_file()
        log = self.log_file
        self._make_owned(log, directory=False)
        result = self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(log),
            "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data_dir}",
        )
        if result.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise DatabaseError(f"PostgreSQL did not start: {' | '.join(tail) or result.stderr.strip()}")
        if not self.is_standby():  # a standby is read-only: it has what its primary has
            self._ensure_database()
        return self.status().describe()

    def stop(self) -> str:
        if not self.status().running:
            return f"already stopped, data in {self.data_dir}"
        result = self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir))
        if result.returncode != 0:
            raise DatabaseError(f"PostgreSQL did not stop: {result.stderr.strip()}")
        return f"stopped, data in {self.data_dir}"

    def _initdb(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._make_owned(self.data_dir, directory=True)
        self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        self.password_file.chmod(0o600)
        pwfile = self.data_dir.parent / "pg.initpw"
        pwfile.write_text(self.password() + "\n")
        self._make_owned(pwfile, directory=False)
        try:
            result = self._run(
                "initdb", "-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--locale=C.UTF-8",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise DatabaseError(f"initdb failed: {result.stderr.strip().splitlines()[-1:]}")
        tuning = self.data_dir / "postgresql.auto.conf"
        with tuning.open("a") as conf:
            # A private cluster on a 2-core, 24 GiB machine that bulk-loads layers.
            conf.write("shared_buffers = '1GB'\nwork_mem = '64MB'\nmaintenance_work_mem = '1GB'\n")
            conf.write("max_wal_size = '4GB'\ncheckpoint_timeout = '15min'\nmax_connections = 200\n")
            conf.write("jit = off\n")

    def _make_owned(self, path: Path, *, directory: bool) -> None:
        if directory:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        else:
            path.touch(exist_ok=True)
        user = self._server_user()
        if user:
            entry = pwd.getpwnam(user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _check_port_free(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError as exc:
                raise DatabaseError(
                    f"port {self.port} is in use by another program: set GIS_CLUSTER_PORT to a free port"
                ) from exc

    def _remove_stale_pid_file(self) -> None:
        """A pid file left by a killed server whose process is gone would make pg_ctl refuse to start."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.is_file():
            return
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            pid_file.unlink()
        except PermissionError:
            pass  # alive, owned by someone else: pg_ctl will say so

    def _ensure_database(self) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.settings.database_name,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(
                    sql.Identifier(self.settings.database_name)))
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            self._ensure_log_settings(conn)

    @staticmethod
    def _ensure_log_settings(conn: psycopg.Connection) -> None:
        """LOG_SETTINGS in force, on a new cluster and on one made before they were (a reload, no restart)."""
        changed = False
        for name, value in LOG_SETTINGS.items():
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            if row is None or row[0] != value:
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
                changed = True
        if changed:
            conn.execute("SELECT pg_reload_conf()")


def database_url(settings: Settings) -> str:
    """The connection string in use: GIS_DATABASE_URL when set, else the embedded cluster's."""
    if settings.database_url:
        return settings.database_url
    return Cluster(settings).url()
