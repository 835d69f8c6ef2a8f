"""The database's own limit for a request: pgbench running the statement our service runs for it, no HTTP.

The statement comes from the service's own library (gis.features.queries, gis.tiles) for the request's URL,
with its values written in (psycopg's client-side rendering), so PostgreSQL plans and runs exactly what it
runs for the service. pgbench uses prepared statements, as the service's driver does, and the same number
of connections as wrk had. A spread of tiles is one script per tile, picked at random.

A page or an item of an audited (internal or restricted) layer is sent as the service sends it when it reads
on the primary: inside the statement that also reads the layer's versions (gis.db.routing.row_statement), which
writes the read's audit row and commits it before the answer (services/auth/read_audit.py). That commit waits
for its WAL to reach the disk, which bounds such reads more than the page's own work does.
"""

import re
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import psycopg

from gis import tiles as mvt
from gis.db.cluster import find_bindir
from gis.db.routing import row_statement
from gis.features import crs as crs_
from gis.features.params import parse_items_query
from gis.features.queries import Statement, item_statement, items_statement
from gis.features.temporal import parse_datetime
from gis.layers import AccessClass, LayerSpec
from gis.security import audit
from services.auth.read_audit import Counted
from services.routers.features import ONE, PAGE

_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)


@dataclass(frozen=True)
class DbLimit:
    statements: int  # scripts pgbench chose from (one per tile of a spread, else 1)
    connections: int
    seconds: int
    tps: float


def _render(conn: psycopg.Connection, statement: Statement) -> str:
    query = statement.query if isinstance(statement.query, bytes) else statement.query.as_bytes(conn)
    return psycopg.ClientCursor(conn).mogrify(query.decode(), statement.params)


def statements_for(conn: psycopg.Connection, spec: LayerSpec, url: str, tiles: list[tuple[int, int, int]] | None,
                   drawn: frozenset[str] | None) -> list[str]:
    """The SQL our service runs for this request (or for each tile (z, x, y) of a spread), values written in."""
    parts = urllib.parse.urlsplit(url)
    params = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
    segments = parts.path.rstrip("/").split("/")
    if "tiles" in segments:
        zoom, row, col = (int(s) for s in segments[-3:])
        found = []
        for z, x, y in tiles or [(zoom, col, row)]:
            query = mvt.tile_sql(spec, z, None, None, drawn).as_bytes(conn)
            found.append(_render(conn, Statement(query, mvt.tile_params(spec, mvt.Tile(z, x, y)))))
        return found
    if segments[-1] == "items":
        page = items_statement(spec, parse_items_query(spec, params))
        return [_render(conn, served(spec, page, PAGE, parts.path, params))]
    fid = urllib.parse.unquote(segments[-1])
    time = parse_datetime(params["datetime"]) if "datetime" in params else None
    item = item_statement(spec, fid, crs_.CRS84, time)
    return [_render(conn, served(spec, item, ONE, parts.path, params))]


def served(spec: LayerSpec, statement: Statement, counted: Counted, path: str, query: dict[str, str]) -> Statement:
    """`statement` as the service sends it to the primary (gis.db.routing.run_row): an audited layer's read
    writes its audit row (what `counted` says of the answer) in the same statement; a public layer's, none."""
    if spec.access is AccessClass.public:
        return statement
    entry = audit.AuditEntry("bench", "bench", "api-key", None, "read", spec.id, path, query, None, 200)
    wrapped = row_statement(statement.query, False, audit.insert_from_row(counted.features_sql, counted.status_sql))
    return Statement(wrapped, {**statement.params, "gis_read_layers": [spec.id], **audit.row_values(entry)})


def run(database_url: str, statements: list[str], connections: int, seconds: int) -> DbLimit:
    pgbench = find_bindir() / "pgbench"
    with tempfile.TemporaryDirectory(prefix="gis-dblimit-") as work:
        scripts = []
        for n, text in enumerate(statements):
            script = Path(work) / f"s{n}.sql"
            script.write_text(" ".join(text.split()) + ";\n", encoding="utf-8")  # pgbench: one line per command
            scripts += ["-f", str(script)]
        args = [str(pgbench), "-n", "-M", "prepared", "-c", str(connections), "-j", str(min(connections, 2)),
                "-T", str(seconds), *scripts, database_url]
        out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 120, check=False)
    match = _TPS.search(out.stdout)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"pgbench failed ({out.returncode}): {(out.stderr or out.stdout).strip()[-400:]}")
    return DbLimit(len(statements), connections, seconds, round(float(match.group(1)), 1))
