"""Merging the staged delivery into the served layer, keeping history, in the caller's transaction.

Readers go on while it runs (the layer is locked EXCLUSIVE, which still admits SELECT) and see either
the whole old layer or the whole new one. Unchanged rows are not touched.
"""

from dataclasses import dataclass

import psycopg
from psycopg import sql

from gis import identifiers as ids
from gis.layers import LayerSpec


@dataclass(frozen=True)
class MergeCounts:
    inserted: int
    updated: int
    closed: int
    unchanged: int


def _names(spec: LayerSpec) -> dict[str, sql.Composable]:
    fields = ids.field_columns(spec)
    return {
        "current": ids.current_table(spec),
        "history": ids.history_table(spec),
        "staging": ids.staging_table(spec),
        "fields": sql.SQL(", ").join(fields),
        "c_fields": sql.SQL(", ").join(sql.SQL("c.{}").format(f) for f in fields),
        "s_fields": sql.SQL(", ").join(sql.SQL("s.{}").format(f) for f in fields),
        "set_fields": sql.SQL(", ").join(sql.SQL("{0} = s.{0}").format(f) for f in fields),
        "geom_idx": ids.index_name(spec, "geom_idx"),
        "geom_idx_qualified": ids.qualified_index_name(spec, "geom_idx"),
    }


def _close_missing(conn: psycopg.Connection, n: dict[str, sql.Composable], refresh_id: int) -> int:
    """Rows no longer delivered leave the current table and become closed versions."""
    cursor = conn.execute(sql.SQL(
        "WITH gone AS (DELETE FROM {current} c WHERE NOT EXISTS "
        "(SELECT 1 FROM {staging} s WHERE s.fid = c.fid) RETURNING c.*) "
        "INSERT INTO {history} (fid, {fields}, geom, valid_from, valid_to, row_hash, refresh_id, "
        "closed_refresh_id) SELECT c.fid, {c_fields}, c.geom, c.valid_from, greatest(now(), c.valid_from), "
        "c.row_hash, c.refresh_id, %(rid)s FROM gone c"
    ).format(**n), {"rid": refresh_id})
    return cursor.rowcount


def _update_changed(conn: psycopg.Connection, n: dict[str, sql.Composable], refresh_id: int) -> int:
    """A changed row's old version goes to history, closed where the new one starts."""
    conn.execute(sql.SQL(
        "INSERT INTO {history} (fid, {fields}, geom, valid_from, valid_to, row_hash, refresh_id, "
        "closed_refresh_id) SELECT c.fid, {c_fields}, c.geom, c.valid_from, "
        "greatest(coalesce(s.valid_from, now()), c.valid_from), c.row_hash, c.refresh_id, %(rid)s "
        "FROM {current} c JOIN {staging} s ON s.fid = c.fid WHERE s.row_hash <> c.row_hash"
    ).format(**n), {"rid": refresh_id})
    cursor = conn.execute(sql.SQL(
        "UPDATE {current} c SET {set_fields}, geom = s.geom, valid_from = coalesce(s.valid_from, now()), "
        "valid_to = s.valid_to, row_hash = s.row_hash, refresh_id = %(rid)s "
        "FROM {staging} s WHERE s.fid = c.fid AND s.row_hash <> c.row_hash"
    ).format(**n), {"rid": refresh_id})
    return cursor.rowcount


def _insert_new(conn: psycopg.Connection, n: dict[str, sql.Composable], refresh_id: int, empty: bool) -> int:
    insert = sql.SQL(
        "INSERT INTO {current} (fid, {fields}, geom, valid_from, valid_to, row_hash, refresh_id) "
        "SELECT s.fid, {s_fields}, s.geom, coalesce(s.valid_from, now()), s.valid_to, s.row_hash, %(rid)s "
        "FROM {staging} s WHERE NOT EXISTS (SELECT 1 FROM {current} c WHERE c.fid = s.fid)"
    ).format(**n)
    if not empty:
        return conn.execute(insert, {"rid": refresh_id}).rowcount
    # Into an empty layer, one sorted GiST build is several times faster than a million inserts.
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {geom_idx_qualified}").format(**n))
    count = conn.execute(insert, {"rid": refresh_id}).rowcount
    conn.execute(sql.SQL("CREATE INDEX {} ON {current} USING gist (geom)").format(n["geom_idx"], **n))
    return count


def merge(conn: psycopg.Connection, spec: LayerSpec, refresh_id: int, staged_rows: int) -> MergeCounts:
    n = _names(spec)
    conn.execute(sql.SQL("ANALYZE {}").format(n["staging"]))
    conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(n["current"]))
    empty = conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(n["current"])).fetchone()
    closed = _close_missing(conn, n, refresh_id)
    updated = _update_changed(conn, n, refresh_id)
    inserted = _insert_new(conn, n, refresh_id, bool(empty and empty[0]))
    return MergeCounts(inserted, updated, closed, staged_rows - inserted - updated)
