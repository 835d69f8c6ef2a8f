"""What the standalone benchmarks (bench/overlap.py, bench/burst.py) share: their database on the embedded
cluster or a given server, the bench-scale layers loaded by the real refresh, one instance of our service,
and their section of docs/benchmarks.md."""

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import psycopg
from psycopg import sql

from bench.procs import UNLIMITED, Server, free_port
from gis.db.cluster import Cluster
from gis.db.migrate import migrate
from gis.layers import LayerRegistry, LayerSpec
from gis.refresh.runner import RefreshRequest, run_refresh
from gis.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data-samples" / "generated" / "bench"
DOC = ROOT / "docs" / "benchmarks.md"


def server_url(url: str | None, settings: Settings, say: Callable[[str], None]) -> str:
    """The maintenance database of the server given, or of the embedded cluster (started if need be)."""
    if url:
        return psycopg.conninfo.make_conninfo(url, dbname="postgres")
    cluster = Cluster(settings)
    say(cluster.start())
    return cluster.url("postgres")


def bench_database(server: str, name: str, fresh: bool) -> str:
    """The benchmark's own database on the server: made anew when `fresh` (or missing)."""
    with psycopg.connect(server, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if fresh or not exists:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(server, dbname=name)


def load_layers(url: str, registry: LayerRegistry, specs: Iterable[LayerSpec], settings: Settings,
                say: Callable[[str], None]) -> None:
    """Migrate, then refresh each layer from its bench-scale delivery, then VACUUM ANALYZE."""
    with psycopg.connect(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.commit()
        migrate(conn, registry)
    for spec in specs:
        started = time.perf_counter()
        run_refresh(url, RefreshRequest(spec, SAMPLES / spec.source.path, settings.city_extent,
                                        ROOT / ".gisdata" / "rejects", progress=False))
        say(f"loaded {spec.id} in {time.perf_counter() - started:.1f} s")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def row_counts(url: str) -> str:
    """The loaded layers and their row counts, largest first, as one line."""
    with psycopg.connect(url) as conn:
        return ", ".join(f"{layer} {count:,}" for layer, count in conn.execute(
            "SELECT layer_id, row_count FROM ops.layer_stats ORDER BY row_count DESC").fetchall())


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    return f"{cpu}, {os.cpu_count()} cores"


def our_service(url: str, name: str, env: Mapping[str, str] | None = None) -> Server:
    """One process of our service on the database (not started): the rate limit off, as in every benchmark."""
    port = free_port()
    server_env = {**(os.environ if env is None else env), **UNLIMITED, "GIS_DATABASE_URL": url,
                  "GIS_LAYERS_DIR": str(ROOT / "layers"), "GIS_STYLES_DIR": str(ROOT / "styles")}
    args = [sys.executable, "-m", "uvicorn", "services.asgi:app_from_environment", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return Server(name, args, port, server_env, ROOT / "bench" / "results" / f"{name}.log", cwd=ROOT)


def write_section(begin: str, end: str, text: str) -> None:
    """Replace the section between the markers in docs/benchmarks.md (appended the first time)."""
    current = DOC.read_text(encoding="utf-8") if DOC.is_file() else "# Benchmarks\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        current = head + text + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + text + "\n"
    DOC.write_text(current, encoding="utf-8")
