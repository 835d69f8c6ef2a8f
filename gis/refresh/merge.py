"""Merging the staged delivery into the served layer, keeping history, in the caller's transaction.

Readers go on while it runs (the layer is locked EXCLUSIVE, which still admits SELECT) and see either
the whole old layer or the whole new one. Unchanged rows are not touched. A first load into an empty
layer skips staging altogether (see staging.LoadMode).
"""

import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
from psycopg import sql

from gis import identifiers as ids
from gis.db import layer_partitions
from gis.db.migrate import declared_indexes, table_indexes
from gis.layers import LayerSpec
from gis.refresh.staging import CurrentRows, as_integers

LOGGER = logging.getLogger("gis.refresh")


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
        "o_fields": sql.SQL(", ").join(sql.SQL("o.{}").format(f) for f in fields),
        "set_fields": sql.SQL(", ").join(sql.SQL("{0} = s.{0}").format(f) for f in fields),
    }


def _close_missing(conn: psycopg.Connection, n: dict[str, sql.Composable], refresh_id: int,
                   gone: list[str]) -> int:
    """Rows no longer delivered leave the current table and become closed versions."""
    if not gone:
        return 0
    cursor = conn.execute(sql.SQL(
        "WITH gone AS (DELETE FROM {current} c WHERE c.fid = ANY(%(gone)s::text[]) RETURNING c.*) "
        "INSERT INTO {history} (fid, {fields}, geom, valid_from, valid_to, row_hash, refresh_id, "
        "closed_refresh_id) SELECT c.fid, {c_fields}, c.geom, c.valid_from, greatest(now(), c.valid_from), "
        "c.row_hash, c.refresh_id, %(rid)s FROM gone c"
    ).format(**n), {"rid": refresh_id, "gone": gone})
    return cursor.rowcount


def _update_changed(conn: psycopg.Connection, n: dict[str, sql.Composable], refresh_id: int) -> int:
    """A changed row takes its new version in place, and its old version goes to history, closed where the new
    one starts: one statement, one pass over the staged rows. The old values come from a second reference to
    the layer (`o`, the same row by its ctid), which the UPDATE reads as it was before it changed anything."""
    cursor = conn.execute(sql.SQL(
        "WITH old AS (UPDATE {current} c SET {set_fields}, geom = s.geom, valid_from = coalesce(s.valid_from, now()), "
        "valid_to = s.valid_to, row_hash = s.row_hash, refresh_id = %(rid)s "
        "FROM {staging} s JOIN {current} o ON o.fid = s.fid "
        "WHERE c.fid = s.fid AND o.ctid = c.ctid AND o.tableoid = c.tableoid AND s.row_hash <> c.row_hash "
        "RETURNING o.fid, {o_fields}, o.geom, o.valid_from, greatest(coalesce(s.valid_from, now()), o.valid_from) "
        "AS closed_at, o.row_hash, o.refresh_id) "
        "INSERT INTO {history} (fid, {fields}, geom, valid_from, valid_to, row_hash, refresh_id, closed_refresh_id) "
        "SELECT fid, {fields}, geom, valid_from, closed_at, row_hash, refresh_id, %(rid)s FROM old"
    ).format(**n), {"rid": refresh_id})
    return cursor.rowcount


def _insert_new(conn: psycopg.Connection, n: dict[str, sql.Composable], refresh_id: int) -> int:
    return conn.execute(sql.SQL(
        "INSERT INTO {current} (fid, {fields}, geom, valid_from, valid_to, row_hash, refresh_id) "
        "SELECT s.fid, {s_fields}, s.geom, coalesce(s.valid_from, now()), s.valid_to, s.row_hash, %(rid)s "
        "FROM {staging} s WHERE NOT EXISTS (SELECT 1 FROM {current} c WHERE c.fid = s.fid)"
    ).format(**n), {"rid": refresh_id}).rowcount


def current_rows(conn: psycopg.Connection, spec: LayerSpec) -> CurrentRows:
    """fid -> row hash of the layer's current rows: what a delivery is compared with before staging.

    One row of three aggregated byte strings (each fid's length, the fids, the 8-byte hashes), all aggregates
    fed the rows in the same order, sent in binary: no value is formatted as text or parsed back, and nothing
    runs per row in Python (a row at a time was most of the second this took for a million rows). The fids
    become an Arrow string array straight from those bytes; each hash is the integer with the same bits, so a
    batch is compared with one vectorised look-up.
    """
    row = conn.execute(sql.SQL(
        "SELECT count(*), string_agg(int4send(octet_length(convert_to(fid, 'UTF8'))), ''), "
        "string_agg(convert_to(fid, 'UTF8'), ''), string_agg(row_hash, '') FROM {}"
    ).format(ids.current_table(spec)), binary=True).fetchone()
    if row is None or not row[0]:
        return CurrentRows.empty()
    count, lengths, text, hashes = int(row[0]), bytes(row[1]), bytes(row[2]), bytes(row[3])
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.frombuffer(lengths, dtype=">i4"), out=offsets[1:])
    fids = pa.Array.from_buffers(pa.large_string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(text)])
    return CurrentRows(pd.Index(fids.to_numpy(zero_copy_only=False), dtype=object), as_integers(hashes), arrow=fids)


def fetch_current_rows(url: str, spec: LayerSpec, memo_key: str | None = None) -> CurrentRows:
    """current_rows on a connection of its own, so a refresh fetches them while it reads the delivery's first
    batches (gis.refresh.runner). Read after the refresh took the layer's lock, it sees what the refresh's own
    statements would (each statement of a READ COMMITTED transaction reads what was committed when it began).
    With the key of the refresh's memo, with the source hashes the layer's memo vouches for (gis.refresh.memo)."""
    from gis.refresh import memo  # memo names this module's neighbours' code in its key

    with psycopg.connect(url, application_name=f"gis-refresh:{spec.id}:compare") as conn:
        rows = current_rows(conn, spec)
        return rows if memo_key is None else memo.vouch(conn, spec, memo_key, rows)


def current_starts(conn: psycopg.Connection, spec: LayerSpec) -> dict[str, datetime]:
    """fid -> valid_from of the layer's current rows, for a layer whose source gives it (else empty): a row
    delivered without its start keeps the stored one when nothing else changed (staging.with_starts)."""
    if not spec.source.valid_from:
        return {}
    rows = conn.execute(sql.SQL("SELECT fid, valid_from FROM {}").format(ids.current_table(spec))).fetchall()
    return dict(rows)


def merge(conn: psycopg.Connection, spec: LayerSpec, refresh_id: int, gone: list[str],
          unchanged: int) -> MergeCounts:
    """Staging holds only the new and changed rows; `gone` the fids no longer delivered."""
    n = _names(spec)
    # The joins need the staged fids' statistics only: the geometry's would cost a second on 65,000 rows.
    conn.execute(sql.SQL("ANALYZE {} (fid, row_hash)").format(n["staging"]))
    conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(n["current"]))
    closed = _close_missing(conn, n, refresh_id, gone)
    updated = _update_changed(conn, n, refresh_id)
    inserted = _insert_new(conn, n, refresh_id)
    return MergeCounts(inserted, updated, closed, unchanged)


def compress_wal(conn: psycopg.Connection) -> None:
    """Compress the full-page images in the WAL of the refresh's transaction, where the role may set it. The first
    change to a page after a checkpoint logs the whole page: a delivery changing 5% of a million rows scattered
    over every page and nine indexes wrote 644 MB of WAL, 363 MB with lz4, and its merge took half the time."""
    row = conn.execute("SELECT has_parameter_privilege('wal_compression', 'SET') AND 'lz4' = ANY(enumvals) "
                       "FROM pg_settings WHERE name = 'wal_compression'").fetchone()
    if row and row[0]:
        conn.execute("SET LOCAL wal_compression = 'lz4'")


def layer_is_empty(conn: psycopg.Connection, spec: LayerSpec) -> bool:
    row = conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(ids.current_table(spec))).fetchone()
    return bool(row and row[0])


def _primary_key(conn: psycopg.Connection, spec: LayerSpec) -> str | None:
    row = conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
                       (ids.current_table(spec).as_string(conn),)).fetchone()
    return str(row[0]) if row else None


def begin_first_load(conn: psycopg.Connection, spec: LayerSpec) -> bool:
    """Before copying straight into an empty layer: its indexes and primary key go, to be built once afterwards
    (a sorted build of each beats keeping nine indexes up to date through a million inserts). All in the
    refresh's transaction: a failed load puts them back with everything else. Returns whether the rows may be
    copied frozen: a plain table is truncated (it is empty: the truncation only lets COPY FREEZE write the pages
    all-visible and frozen, so the VACUUM after the refresh has no page to visit; dropping the indexes already
    holds readers off until the load commits). A partitioned one may not be copied frozen."""
    table = ids.current_table(spec)
    conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
    for name, _ in (*table_indexes(spec, history=False), *declared_indexes(spec, history=False)):
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(name))
    key = _primary_key(conn, spec)
    if key is not None:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, sql.Identifier(key)))
    if spec.partition is not None:
        return False
    conn.execute(sql.SQL("TRUNCATE {}").format(table))
    return True


def finish_first_load(conn: psycopg.Connection, spec: LayerSpec, rows: int) -> MergeCounts:
    """The primary key (which also proves the fids unique) and every index, each built once over the loaded rows."""
    table = ids.current_table(spec)
    key, _ = layer_partitions.table_clauses(spec, history=False)
    conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(table, key))
    for _, statement in (*table_indexes(spec, history=False), *declared_indexes(spec, history=False)):
        conn.execute(statement)
    conn.execute(sql.SQL("ANALYZE {}").format(table))
    return MergeCounts(rows, 0, 0, 0)


def vacuum(url: str, spec: LayerSpec) -> None:
    """After the refresh committed: VACUUM the layer's tables, so the pages it wrote are marked all-visible.

    An index-only scan (the bounded numberMatched count of a filtered page, a keyset probe) reads the heap
    for every entry on a page not marked all-visible: after a first load every page, after a 5% change most
    of them (about 30 rows share a page), until autovacuum comes, which a change under a fifth of the rows
    never calls. VACUUM skips the pages still marked, so its cost follows the change, not the layer.
    It runs outside the refresh's transaction (VACUUM cannot run in one); SKIP_LOCKED leaves a table that
    another refresh or VACUUM holds to that one. Failing here changes no data, so it is logged, not raised."""
    tables = sql.SQL(", ").join([ids.current_table(spec), ids.history_table(spec)])
    try:
        with psycopg.connect(url, autocommit=True, application_name=f"gis-refresh:{spec.id}:vacuum") as conn:
            conn.execute(sql.SQL("VACUUM (SKIP_LOCKED) {}").format(tables))
    except psycopg.Error as exc:
        LOGGER.warning("refresh of %s: VACUUM after the refresh failed: %s", spec.id, exc)
