"""The per-refresh scratch table and the COPY that fills it.

Each staged row carries a hash of its canonical text (the very CSV line sent to COPY), so the merge
can tell unchanged rows from changed ones without comparing geometries.
"""

import csv
import hashlib
import io

import psycopg
import shapely
from psycopg import sql

from gis import identifiers as ids
from gis.layers import LayerSpec
from gis.refresh.normalise import NormalisedBatch

# Separates records in the canonical text; control characters never survive normalisation.
_RECORD = "\x1e"


def create_staging(conn: psycopg.Connection, spec: LayerSpec) -> None:
    fields = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(f.name), ids.pg_type(f.type)) for f in spec.fields
    )
    table = ids.staging_table(spec)
    drop_staging(conn, spec)
    conn.execute(sql.SQL(
        "CREATE UNLOGGED TABLE {} (source_row integer NOT NULL, fid text, {}, geom geometry, "
        "valid_from timestamptz, valid_to timestamptz, row_hash bytea NOT NULL)"
    ).format(table, fields))


def drop_staging(conn: psycopg.Connection, spec: LayerSpec) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ids.staging_table(spec)))


def _copy_columns(spec: LayerSpec) -> sql.Composed:
    names = ["source_row", "fid", *spec.field_names, "geom", "valid_from", "valid_to", "row_hash"]
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def canonical_lines(batch: NormalisedBatch, spec: LayerSpec) -> list[str]:
    """One CSV line per row: fid, fields, EWKB hex geometry, valid_from, valid_to."""
    frame = batch.frame[["fid", *spec.field_names]].copy()
    frame["geom"] = shapely.to_wkb(shapely.set_srid(batch.geometries, spec.srid), hex=True, include_srid=True)
    frame["valid_from"] = batch.frame["valid_from"]
    frame["valid_to"] = batch.frame["valid_to"]
    text = frame.to_csv(header=False, index=False, lineterminator=_RECORD, quoting=csv.QUOTE_MINIMAL)
    return text.split(_RECORD)[:-1]


def copy_batch(conn: psycopg.Connection, spec: LayerSpec, batch: NormalisedBatch) -> None:
    lines = canonical_lines(batch, spec)
    buffer = io.StringIO()
    for offset, line in enumerate(lines):
        digest = hashlib.md5(line.encode(), usedforsecurity=False).hexdigest()
        buffer.write(f"{batch.first_row + offset},{line},\\x{digest}\n")
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        ids.staging_table(spec), _copy_columns(spec))
    with conn.cursor().copy(statement) as copy:
        copy.write(buffer.getvalue())


def duplicate_fids(conn: psycopg.Connection, spec: LayerSpec) -> list[tuple[int, str]]:
    """(source row, fid) of every row whose fid appears more than once in the delivery."""
    return conn.execute(sql.SQL(
        "SELECT source_row, fid FROM (SELECT source_row, fid, count(*) OVER (PARTITION BY fid) AS n "
        "FROM {} WHERE fid IS NOT NULL) d WHERE n > 1 ORDER BY source_row"
    ).format(ids.staging_table(spec))).fetchall()
