"""Retention of the append-only operations tables (`gis ops prune`, run daily by a timer).

- ops.audit_log is partitioned by month (migration 014): a month older than the retention is dropped
  whole (DETACH, then DROP: no row-by-row delete, no bloat); rows of the default partition older than
  the retention are deleted; the coming months' partitions are made.
- event layers declared `partition: month` (sensor_readings, gis.db.layer_partitions): months of readings (and
  their corrections in history) older than event_retention_days dropped whole; the layer's count, spatial and
  time extents (measured again from the rows kept) and version move with them (one ops.refresh_log row), so
  caches and ETags keyed by the version renew.
- ops.jobs rows of synchronous process calls (their caller has had the answer) go after
  sync_job_retention_minutes.
- the bytes of finished deliveries (ops.deliveries.content) go after delivery_retention_days; the row stays
  (sender, file name, checksum, size, result, rejects) with content_pruned_at set. A delivery still accepted
  or running keeps its bytes: its job needs them.
Partition names come from the catalog and are composed with psycopg.sql, never from input.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from gis.db import layer_partitions
from gis.layers import LayerRegistry, LayerSpec
from gis.refresh import record
from gis.settings import Settings

MONTHS_AHEAD = 3
# The monthly partitions of a table and each one's upper bound, from the catalog.
_PARTITIONS = """
SELECT n.nspname, c.relname, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = %s::regclass
"""


@dataclass
class PruneResult:
    dropped_partitions: list[str] = field(default_factory=list)
    made_partitions: int = 0
    audit_rows_deleted: int = 0
    sync_jobs_deleted: int = 0
    delivery_bytes_dropped: int = 0
    deliveries_pruned: int = 0
    layers: dict[str, layer_partitions.Dropped] = field(default_factory=dict)  # partitioned event layers

    def summary(self) -> str:
        dropped = ", ".join(self.dropped_partitions) or "none"
        lines = [f"audit log: partitions dropped: {dropped}; {self.audit_rows_deleted} older rows deleted from the "
                 f"default partition; {self.made_partitions} partitions made ahead; "
                 f"synchronous process jobs deleted: {self.sync_jobs_deleted}",
                 f"delivery files dropped: {self.deliveries_pruned} ({self.delivery_bytes_dropped:,} bytes; "
                 "their records kept)"]
        for layer, gone in self.layers.items():
            lines.append(f"{layer}: {gone.current_rows} rows past retention removed; partitions dropped: "
                         f"{', '.join(gone.partitions) or 'none'}")
        return "\n".join(lines)


def _upper_bound(bound: str) -> datetime | None:
    """'FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-02-01 00:00:00+00')' -> the TO instant."""
    if "TO ('" not in bound:
        return None  # the DEFAULT partition
    text = bound.split("TO ('", 1)[1].split("')", 1)[0]
    return datetime.fromisoformat(text)


# A prune that removed rows is a change of the layer: logged like a write, with the version moved.
_PRUNE_LOG = """
INSERT INTO ops.refresh_log (refresh_id, layer_id, status, started_at, source_path, inserted, updated, closed,
                             unchanged, message)
VALUES (%(rid)s, %(layer)s, 'succeeded', %(started)s, 'gis ops prune', 0, 0, 0, 0, %(message)s)
"""
def _prune_layer(conn: psycopg.Connection, spec: LayerSpec, cutoff: datetime) -> layer_partitions.Dropped:
    """Under the layer's write lock (as a refresh or a readings post takes it), so refresh ids stay in commit
    order for the warnings' watch."""
    started = datetime.now(UTC)
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('gis-refresh:' || %s))", (spec.id,))
    layer_partitions.ensure_partitions(conn, spec)
    gone = layer_partitions.drop_old_rows(conn, spec, cutoff)
    if gone.current_rows or gone.partitions:
        row = conn.execute("SELECT nextval('ops.refresh_log_refresh_id_seq')").fetchone()
        assert row is not None
        rid = int(row[0])
        message = f"retention: {gone.current_rows} rows observed before {cutoff.isoformat(timespec='seconds')} removed"
        conn.execute(_PRUNE_LOG, {"rid": rid, "layer": spec.id, "started": started, "message": message})
        # Counted and measured again from what remains: the extents the collection shows shrink with the months
        # dropped (one scan of the kept readings, once a day at most).
        record.recompute_stats(conn, spec, rid)
    return gone


def prune(conn: psycopg.Connection, settings: Settings, now: datetime | None = None,
          registry: LayerRegistry | None = None) -> PruneResult:
    """One transaction: partitions made ahead, old months dropped (the audit log's, and the partitioned event
    layers' of `registry`), old sync jobs deleted."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=settings.audit_retention_days)
    result = PruneResult()
    with conn.transaction():
        row = conn.execute("SELECT ops.ensure_monthly_partitions('ops.audit_log', %s::date, %s)",
                           (now.date(), MONTHS_AHEAD)).fetchone()
        result.made_partitions = int(row[0]) if row else 0
        for schema, name, bound in conn.execute(_PARTITIONS, ("ops.audit_log",)).fetchall():
            upper = _upper_bound(bound)
            if upper is not None and upper <= cutoff:
                table = sql.Identifier(schema, name)
                conn.execute(sql.SQL("ALTER TABLE ops.audit_log DETACH PARTITION {}").format(table))
                conn.execute(sql.SQL("DROP TABLE {}").format(table))
                result.dropped_partitions.append(name)
        result.audit_rows_deleted = conn.execute(
            "DELETE FROM ops.audit_log_default WHERE at < %s", (cutoff,)).rowcount
        event_cutoff = now - timedelta(days=settings.event_retention_days)
        for spec in layer_partitions.partitioned_layers(registry) if registry is not None else []:
            result.layers[spec.id] = _prune_layer(conn, spec, event_cutoff)
        result.sync_jobs_deleted = conn.execute(
            "DELETE FROM ops.jobs WHERE execution = 'sync' AND status IN ('successful', 'failed', 'dismissed') "
            "AND finished < %s", (now - timedelta(minutes=settings.sync_job_retention_minutes),)).rowcount
        row = conn.execute(
            "WITH pruned AS (UPDATE ops.deliveries SET content = NULL, content_pruned_at = %s "
            "WHERE content_pruned_at IS NULL AND status IN ('succeeded', 'failed') AND received_at < %s "
            "RETURNING size_bytes) SELECT count(*), coalesce(sum(size_bytes), 0) FROM pruned",
            (now, now - timedelta(days=settings.delivery_retention_days))).fetchone()
        result.deliveries_pruned, result.delivery_bytes_dropped = (int(row[0]), int(row[1])) if row else (0, 0)
    return result
