"""Event layers partitioned by month of their event time (`partition: month` in the layer file: sensor_readings).

Readings only grow (every sensor posts every few minutes), so their current and history tables are range-
partitioned on the event-time field, one partition a month in the schema `partitions` (migration 020),
plus a default partition that takes rows of months with none yet, so a write never fails. Retention then drops
whole months (`gis ops prune`, GIS_EVENT_RETENTION_DAYS): no row-by-row delete, no bloat. Reads go through the
parent tables as before, so every query (`datetime` ranges, items by id, tiles, warnings) still sees every
month kept; a time range reads only its months.

The primary key is (fid, event time): PostgreSQL wants the partition key in every unique index. A reading's fid
is its sensor and instant, so it stays unique; the refresh merge and the readings upsert keep it so.

A database made before a layer was declared partitioned has plain tables: `convert` moves their rows into the
partitioned ones in the migration's transaction (the regrant hook of `gis migrate` then grants the new tables).
Identifiers come from the registry or the catalog, composed with psycopg.sql.
"""

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from gis import identifiers as ids
from gis.layers import LayerRegistry, LayerSpec

MONTHS_AHEAD = 3
# New tables get partitions from this many months back, so a first delivery of the last year's readings lands
# in monthly partitions (older rows go to the default partition, deleted there by retention).
BACKFILL_MONTHS = 13
_SET_ASIDE = "_unpartitioned"
SCHEMA = "partitions"  # where the partitions live (migration 020), out of the domain schemas


def default_partition(spec: LayerSpec, table: str) -> sql.Identifier:
    return sql.Identifier(SCHEMA, f"{spec.domain.value}_{table}_default")
_PARTITIONS = """
SELECT n.nspname, c.relname, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = format('%%I.%%I', %s::text, %s::text)::regclass
"""


def partitioned_layers(registry: LayerRegistry) -> list[LayerSpec]:
    return [spec for spec in registry.values() if spec.partition is not None]


def key_column(spec: LayerSpec) -> sql.Identifier:
    """The partition key: the event-time field (a required timestamp, checked by LayerSpec)."""
    assert spec.partition is not None and spec.temporal.field is not None
    return ids.column(spec, spec.temporal.field)


def table_clauses(spec: LayerSpec, history: bool) -> tuple[sql.Composable, sql.Composable]:
    """(the primary key's columns, the PARTITION BY clause) of one of the layer's tables."""
    base: list[sql.Composable] = [sql.SQL("fid"), *([sql.SQL("refresh_id")] if history else [])]
    if spec.partition is None:
        return sql.SQL(", ").join(base), sql.SQL("")
    key = key_column(spec)
    return sql.SQL(", ").join([*base, key]), sql.SQL(" PARTITION BY RANGE ({})").format(key)


def _names(spec: LayerSpec) -> list[str]:
    return [spec.id, spec.history_table]


def _relkind(conn: psycopg.Connection, schema: str, table: str) -> str | None:
    row = conn.execute("SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = %s AND c.relname = %s", (schema, table)).fetchone()
    return None if row is None else str(row[0])


def set_aside_plain_tables(conn: psycopg.Connection, spec: LayerSpec) -> list[str]:
    """Before the tables are made: a partitioned layer's plain tables (made before it was declared so) are renamed,
    with their indexes, so the partitioned ones can take their names. Returns the tables set aside."""
    if spec.partition is None:
        return []
    schema = spec.domain.value
    aside = []
    for table in _names(spec):
        if _relkind(conn, schema, table) != "r":
            continue
        indexes = conn.execute("SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                               "WHERE i.indrelid = format('%%I.%%I', %s::text, %s::text)::regclass",
                               (schema, table)).fetchall()
        for (index,) in indexes:
            conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(schema, index), sql.Identifier((index + _SET_ASIDE)[-63:])))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            sql.Identifier(schema, table), sql.Identifier(table + _SET_ASIDE)))
        aside.append(table)
    return aside


def is_new(conn: psycopg.Connection, spec: LayerSpec) -> bool:
    """The layer's tables are still to be made (so partitions for past months cannot clash with rows)."""
    return _relkind(conn, spec.domain.value, spec.id) is None


def ensure_partitions(conn: psycopg.Connection, spec: LayerSpec, from_month: datetime | None = None,
                      backfill: bool = False, months_ahead: int = MONTHS_AHEAD) -> int:
    """The default partition and the monthly ones from `from_month` (else this month, or BACKFILL_MONTHS back
    for new tables) to `months_ahead` ahead, on both tables; returns how many were made. Rows the default
    partition holds for a month made now (readings delivered dated months ahead) move into it (migration 031)."""
    if spec.partition is None:
        return 0
    months_back = BACKFILL_MONTHS if backfill else 0
    made = 0
    for table in _names(spec):
        row = conn.execute(
            "SELECT ops.ensure_monthly_partitions_in(format('%%I.%%I', %s::text, %s::text)::regclass, %s, "
            "coalesce(%s::timestamptz, now() - make_interval(months => %s))::date, %s)",
            (spec.domain.value, table, SCHEMA, from_month, months_back, months_ahead)).fetchone()
        made += int(row[0]) if row else 0
    return made


def move_rows_back(conn: psycopg.Connection, spec: LayerSpec, aside: list[str]) -> int:
    """The rows of the tables set aside into the partitioned ones (monthly partitions made for their months
    first), then the old tables dropped. Returns the current rows moved."""
    if not aside:
        return 0
    schema = spec.domain.value
    key = key_column(spec)
    first = None
    for table in aside:
        row = conn.execute(sql.SQL("SELECT min({}) FROM {}").format(
            key, sql.Identifier(schema, table + _SET_ASIDE))).fetchone()
        if row and row[0] is not None:
            first = row[0] if first is None else min(first, row[0])
    ensure_partitions(conn, spec, first)
    moved = 0
    for table in aside:
        old = sql.Identifier(schema, table + _SET_ASIDE)
        wanted = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "ORDER BY ordinal_position", (schema, table)).fetchall()]
        present = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (schema, table + _SET_ASIDE)).fetchall()}
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in wanted if c in present)
        count = conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
            sql.Identifier(schema, table), columns, columns, old)).rowcount
        if table == spec.id:
            moved = count
        conn.execute(sql.SQL("DROP TABLE {}").format(old))
    return moved


@dataclass
class Dropped:
    partitions: list[str]
    current_rows: int  # rows of the current table removed: what the layer's count loses


def _upper_bound(bound: str) -> datetime | None:
    """'FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-02-01 00:00:00+00')' -> the TO instant."""
    if "TO ('" not in bound:
        return None  # the DEFAULT partition
    return datetime.fromisoformat(bound.split("TO ('", 1)[1].split("')", 1)[0])


def drop_months_before(conn: psycopg.Connection, parent: sql.Identifier, schema: str, table: str,
                       cutoff: datetime) -> list[tuple[str, int]]:
    """Detach and drop each monthly partition of schema.table that ends at or before `cutoff`; returns each
    one's name and row count (counted once detached: no write reaches it any more)."""
    dropped = []
    for part_schema, name, bound in conn.execute(_PARTITIONS, (schema, table)).fetchall():
        upper = _upper_bound(bound)
        if upper is None or upper > cutoff:
            continue
        part = sql.Identifier(part_schema, name)
        conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, part))
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(part)).fetchone()
        conn.execute(sql.SQL("DROP TABLE {}").format(part))
        dropped.append((name, int(row[0]) if row else 0))
    return dropped


def drop_old_rows(conn: psycopg.Connection, spec: LayerSpec, cutoff: datetime) -> Dropped:
    """Retention of one partitioned layer: its months (current and history) that end before `cutoff` dropped
    whole, and the default partitions' rows older than it deleted."""
    schema = spec.domain.value
    key = key_column(spec)
    result = Dropped([], 0)
    for table in _names(spec):
        gone = drop_months_before(conn, sql.Identifier(schema, table), schema, table, cutoff)
        deleted = conn.execute(sql.SQL("DELETE FROM {} WHERE {} < %s").format(
            default_partition(spec, table), key), (cutoff,)).rowcount
        result.partitions.extend(name for name, _ in gone)
        if table == spec.id:
            result.current_rows += sum(count for _, count in gone) + deleted
    return result
