"""What a refresh leaves in ops: its log row, and the layer's counts, extents and change version."""

import json
from datetime import datetime

import psycopg
from psycopg import sql

from gis import identifiers as ids
from gis.layers import LayerSpec
from gis.refresh.merge import MergeCounts


def last_success_checksum(conn: psycopg.Connection, layer_id: str) -> str | None:
    row = conn.execute(
        "SELECT source_checksum FROM ops.refresh_log WHERE layer_id = %s AND status = 'succeeded' "
        "ORDER BY refresh_id DESC LIMIT 1", (layer_id,)
    ).fetchone()
    return row[0] if row else None


def next_refresh_id(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT nextval('ops.refresh_log_refresh_id_seq')").fetchone()
    assert row is not None
    return int(row[0])


def write_success(conn: psycopg.Connection, spec: LayerSpec, refresh_id: int, started_at: datetime,
                  source_path: str, checksum: str | None, counts: MergeCounts, timings: dict[str, float]) -> None:
    """Log the refresh and, where it changed the layer, recompute the layer's stats."""
    conn.execute(
        "INSERT INTO ops.refresh_log (refresh_id, layer_id, status, started_at, source_path, source_checksum, "
        "inserted, updated, closed, unchanged, rejected, timings) "
        "VALUES (%s, %s, 'succeeded', %s, %s, %s, %s, %s, %s, %s, 0, %s)",
        (refresh_id, spec.id, started_at, source_path, checksum, counts.inserted, counts.updated,
         counts.closed, counts.unchanged, json.dumps(timings)),
    )
    changed = counts.inserted or counts.updated or counts.closed
    exists = conn.execute("SELECT 1 FROM ops.layer_stats WHERE layer_id = %s", (spec.id,)).fetchone()
    if changed or not exists:
        recompute_stats(conn, spec, refresh_id)
    else:
        conn.execute("UPDATE ops.layer_stats SET last_refresh_id = %s WHERE layer_id = %s", (refresh_id, spec.id))
    conn.execute(
        "UPDATE ops.refresh_log SET row_count = s.row_count, extent = s.extent FROM ops.layer_stats s "
        "WHERE s.layer_id = refresh_log.layer_id AND refresh_log.refresh_id = %s", (refresh_id,)
    )


def _time_extent_sql(spec: LayerSpec) -> sql.Composed:
    """Without an event field, one parameter: the current rows' latest valid_to, found with their count."""
    if spec.temporal.field:
        event = ids.column(spec, spec.temporal.field)
        return sql.SQL("ARRAY[min({0})::timestamptz, max({0})::timestamptz] FROM {1}").format(
            event, ids.current_table(spec))
    return sql.SQL(
        "ARRAY[least((SELECT min(valid_from) FROM {0}), (SELECT min(valid_from) FROM {1})), %s::timestamptz]"
    ).format(ids.current_table(spec), ids.history_table(spec))


def recompute_stats(conn: psycopg.Connection, spec: LayerSpec, refresh_id: int) -> None:
    """The layer's count, spatial and time extents from its rows, its version moved to `refresh_id`."""
    # The latest end of validity in the same scan of the current rows as the count and extent (no index has it).
    latest = sql.SQL("NULL::timestamptz" if spec.temporal.field else "max(valid_to)")
    stats = conn.execute(sql.SQL(
        "SELECT n, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e), latest "
        "FROM (SELECT count(*) AS n, ST_Extent(geom) AS e, {} AS latest FROM {}) x"
    ).format(latest, ids.current_table(spec))).fetchone()
    row_count = stats[0] if stats else 0
    extent = list(stats[1:5]) if stats and stats[1] is not None else None
    latest_end = stats[5] if stats else None
    time_row = conn.execute(sql.SQL("SELECT {}").format(_time_extent_sql(spec)),
                            None if spec.temporal.field else (latest_end,)).fetchone()
    conn.execute(
        "INSERT INTO ops.layer_stats (layer_id, row_count, extent, time_extent, last_refresh_id, "
        "changed_refresh_id, changed_at) VALUES (%(id)s, %(n)s, %(e)s, %(t)s, %(r)s, %(r)s, now()) "
        "ON CONFLICT (layer_id) DO UPDATE SET row_count = EXCLUDED.row_count, extent = EXCLUDED.extent, "
        "time_extent = EXCLUDED.time_extent, last_refresh_id = EXCLUDED.last_refresh_id, "
        "changed_refresh_id = EXCLUDED.changed_refresh_id, changed_at = EXCLUDED.changed_at",
        {"id": spec.id, "n": row_count, "e": extent, "t": time_row[0] if time_row else None, "r": refresh_id},
    )


def write_unchanged_source(conn: psycopg.Connection, spec: LayerSpec, started_at: datetime,
                           source_path: str, checksum: str) -> int:
    """The delivery is byte-for-byte the last one loaded: record the check, touch no layer row."""
    refresh_id = next_refresh_id(conn)
    write_success(conn, spec, refresh_id, started_at, source_path, checksum,
                  MergeCounts(0, 0, 0, _row_count(conn, spec)), {"skipped": 0.0})
    return refresh_id


def _row_count(conn: psycopg.Connection, spec: LayerSpec) -> int:
    row = conn.execute("SELECT row_count FROM ops.layer_stats WHERE layer_id = %s", (spec.id,)).fetchone()
    return int(row[0]) if row else 0


def write_failure(url: str, spec: LayerSpec, started_at: datetime, source_path: str, message: str,
                  rejected: int | None) -> None:
    """On its own connection: the refresh's transaction has been rolled back."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ops.refresh_log (layer_id, status, started_at, source_path, rejected, message) "
            "VALUES (%s, 'failed', %s, %s, %s, %s)",
            (spec.id, started_at, source_path, rejected, message),
        )
