"""(a) The refresh benchmark: ogr2ogr's COPY load of the pipelines delivery against our refresh of it.

One run, in this order, into the `gis_bench` database of the embedded cluster:
  1. ogr2ogr -f PostgreSQL (COPY, GiST index, reprojected from the file's Gauss-Krüger CRS to EPSG:4490)
     into bench_ogr.pipelines;
  2. `gis refresh pipelines` into the empty layer (first refresh, with history bookkeeping);
  3. `gis refresh pipelines` again on the unchanged file (the source checksum matches: nothing is read);
  4. `gis refresh pipelines --force` (every row staged and compared by hash; nothing changes).
Each is timed by wall clock with its peak RSS (wait4 on the child). A CHECKPOINT separates the steps
so that no step pays for the WAL of the one before.
"""

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg
import pyogrio
from psycopg import sql

from bench.procs import Measured, measure

BENCH_DATABASE = "gis_bench"
OGR_SCHEMA = "bench_ogr"
LAYER = "pipelines"


@dataclass(frozen=True)
class RefreshBench:
    source: str
    source_mib: float
    source_crs: str
    rows: int
    ogr2ogr: Measured
    first: Measured
    unchanged_checksum: Measured
    unchanged_force: Measured
    first_timings: dict[str, float]
    force_timings: dict[str, float]

    def ratios(self) -> dict[str, float]:
        base = self.ogr2ogr.seconds
        return {
            "first": round(self.first.seconds / base, 3),
            "unchanged_checksum": round(self.unchanged_checksum.seconds / base, 3),
            "unchanged_force": round(self.unchanged_force.seconds / base, 3),
        }

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"ratios": self.ratios()}


def recreate_database(maintenance_url: str, name: str = BENCH_DATABASE) -> str:
    """A fresh, empty database with PostGIS; returns its URL."""
    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(maintenance_url, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(OGR_SCHEMA)))
    return url


def checkpoint(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def ogr_connection(url: str) -> tuple[str, dict[str, str]]:
    """GDAL's PG: string without the password, which goes through PGPASSWORD instead of argv."""
    parts = psycopg.conninfo.conninfo_to_dict(url)
    password = str(parts.pop("password", "") or "")
    words = " ".join(f"{key}={value}" for key, value in parts.items() if key in {"host", "port", "dbname", "user"})
    return f"PG:{words}", {"PGPASSWORD": password} if password else {}


def ogr2ogr_args(pg: str, source: Path, layer: str = LAYER) -> list[str]:
    return ["ogr2ogr", "-f", "PostgreSQL", pg, str(source), layer, "-nln", f"{OGR_SCHEMA}.{layer}",
            "-lco", "GEOMETRY_NAME=geom", "-lco", "SPATIAL_INDEX=GIST", "-t_srs", "EPSG:4490",
            "--config", "PG_USE_COPY", "YES", "-overwrite"]


def _timings(url: str, which: str) -> dict[str, float]:
    order = sql.SQL("ASC" if which == "first" else "DESC")
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.SQL(
            "SELECT timings FROM ops.refresh_log WHERE layer_id = %s AND status = 'succeeded' "
            "ORDER BY refresh_id {} LIMIT 1").format(order), (LAYER,)).fetchone()
    return dict(row[0]) if row else {}


def run(root: Path, url: str, samples_dir: Path, log: Path) -> RefreshBench:
    gis = str(root / ".venv" / "bin" / "gis")
    source = samples_dir / "pipeline" / "pipelines.gpkg"
    env = os.environ | {"GIS_DATABASE_URL": url, "GIS_SAMPLES_DIR": str(samples_dir),
                        "GIS_REJECTS_DIR": str(root / "bench" / "results" / "rejects")}
    steps: list[Measured] = []

    def step(args: list[str], shown: str, extra_env: dict[str, str] | None = None) -> Measured:
        checkpoint(url)
        result = measure(args, env=env | (extra_env or {}), cwd=root, shown=shown)
        with log.open("a", encoding="utf-8") as stream:
            stream.write(f"$ {shown}\n{result.output_tail}\n({result.seconds}s, {result.peak_rss_mib} MiB)\n\n")
        if result.returncode != 0:
            raise RuntimeError(f"'{shown}' failed ({result.returncode}): {result.output_tail[-500:]}")
        steps.append(result)
        return result

    migrated = measure([gis, "migrate"], env=env, cwd=root)
    if migrated.returncode != 0:
        raise RuntimeError(f"gis migrate failed: {migrated.output_tail}")
    with source.open("rb") as stream:  # both loaders then read the file from the page cache
        while stream.read(1 << 24):
            pass
    pg, pg_env = ogr_connection(url)
    shown_ogr = " ".join(ogr2ogr_args('PG:"dbname=gis_bench …"', source.relative_to(root)))
    ogr = step(ogr2ogr_args(pg, source), shown_ogr, pg_env)
    first = step([gis, "refresh", LAYER, "--quiet"], f"gis refresh {LAYER}")
    first_timings = _timings(url, "first")
    unchanged = step([gis, "refresh", LAYER, "--quiet"], f"gis refresh {LAYER}   # unchanged file")
    forced = step([gis, "refresh", LAYER, "--quiet", "--force"], f"gis refresh {LAYER} --force   # unchanged file")
    force_timings = _timings(url, "last")
    with psycopg.connect(url) as conn:
        counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("pipeline", LAYER))).fetchone()
        ogr_rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(OGR_SCHEMA, LAYER))).fetchone()
    rows = int(counted[0]) if counted else 0
    if not ogr_rows or int(ogr_rows[0]) != rows:
        raise RuntimeError(f"ogr2ogr loaded {ogr_rows[0] if ogr_rows else 0} rows, our refresh {rows}")
    return RefreshBench(
        source=str(source.relative_to(root)),
        source_mib=round(source.stat().st_size / 2**20, 1),
        source_crs=str(pyogrio.read_info(source, layer=LAYER)["crs"]),
        rows=rows,
        ogr2ogr=ogr,
        first=first,
        unchanged_checksum=unchanged,
        unchanged_force=forced,
        first_timings=first_timings,
        force_timings=force_timings,
    )
