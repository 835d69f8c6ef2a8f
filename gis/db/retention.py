"""Retention of the append-only operations tables (`gis ops prune`, run daily by a timer).

- ops.audit_log is partitioned by month (migration 014): a month older than the retention is dropped
  whole (DETACH, then DROP: no row-by-row delete, no bloat); rows of the default partition older than
  the retention are deleted; the coming months' partitions are made.
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

    def summary(self) -> str:
        dropped = ", ".join(self.dropped_partitions) or "none"
        return (f"audit log: partitions dropped: {dropped}; {self.audit_rows_deleted} older rows deleted from the "
                f"default partition; {self.made_partitions} partitions made ahead; "
                f"synchronous process jobs deleted: {self.sync_jobs_deleted}; "
                f"delivery files dropped: {self.deliveries_pruned} ({self.delivery_bytes_dropped:,} bytes; "
                "their records kept)")


def _upper_bound(bound: str) -> datetime | None:
    """'FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-02-01 00:00:00+00')' -> the TO instant."""
    if "TO ('" not in bound:
        return None  # the DEFAULT partition
    text = bound.split("TO ('", 1)[1].split("')", 1)[0]
    return datetime.fromisoformat(text)


def prune(conn: psycopg.Connection, settings: Settings, now: datetime | None = None) -> PruneResult:
    """One transaction: partitions made ahead, old months dropped, old sync jobs deleted."""
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
        result.sync_jobs_deleted = conn.execute(
            "DELETE FROM ops.jobs WHERE sync AND status IN ('successful', 'failed', 'dismissed') "
            "AND finished < %s", (now - timedelta(minutes=settings.sync_job_retention_minutes),)).rowcount
        row = conn.execute(
            "WITH pruned AS (UPDATE ops.deliveries SET content = NULL, content_pruned_at = %s "
            "WHERE content_pruned_at IS NULL AND status IN ('succeeded', 'failed') AND received_at < %s "
            "RETURNING size_bytes) SELECT count(*), coalesce(sum(size_bytes), 0) FROM pruned",
            (now, now - timedelta(days=settings.delivery_retention_days))).fetchone()
        result.deliveries_pruned, result.delivery_bytes_dropped = (int(row[0]), int(row[1])) if row else (0, 0)
    return result
