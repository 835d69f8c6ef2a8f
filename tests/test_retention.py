"""Growth: the audit log partitioned by month with retention (`gis ops prune`), history still queryable,
synchronous process jobs kept only briefly, and delivered files' bytes dropped after their retention."""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import process_client
import psycopg
import pytest
from conftest import cloned_database
from shapely.geometry import box, mapping

from gis.db.retention import prune
from gis.deliveries import store
from gis.errors import NotFound
from gis.layers import LayerRegistry
from gis.settings import Settings

SQUARE = box(123.40, 41.75, 123.402, 41.752)


@pytest.fixture(scope="module")
def db(server_url: str, template_db: str) -> Iterator[str]:
    with cloned_database(server_url, template_db, "gis_test_retention") as url:
        yield url


def _audit(conn: psycopg.Connection, at: datetime, subject: str) -> None:
    conn.execute("INSERT INTO ops.audit_log (at, subject, role, method, action) VALUES (%s, %s, 'r', 'm', 'read')",
                 (at, subject))


def test_the_audit_log_is_partitioned_by_month(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = 'ops.audit_log'::regclass").fetchone()
        _audit(conn, datetime.now(UTC), "now-reader")
        where = conn.execute("SELECT tableoid::regclass::text FROM ops.audit_log WHERE subject = 'now-reader'"
                             ).fetchone()
    assert kind == ("p",)
    assert where == (f"ops.audit_log_{datetime.now(UTC):%Y%m}",)


def test_prune_drops_months_past_retention_and_keeps_the_rest_queryable(db: str) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=800)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SELECT ops.ensure_monthly_partitions('ops.audit_log', %s::date, 0)", (old.date(),))
        _audit(conn, old, "old-reader")
        _audit(conn, now - timedelta(days=30), "recent-reader")
        old_partition = f"audit_log_{old:%Y%m}"
        with conn.transaction():
            done = prune(conn, Settings(audit_retention_days=400), now)
        left = {r[0] for r in conn.execute("SELECT subject FROM ops.audit_log WHERE subject LIKE '%-reader'")}
        parts = {r[0] for r in conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = "
                                            "i.inhrelid WHERE i.inhparent = 'ops.audit_log'::regclass")}
    assert old_partition in done.dropped_partitions
    assert old_partition not in parts
    assert f"audit_log_{now + timedelta(days=62):%Y%m}" in parts  # months ahead are made
    assert "old-reader" not in left
    assert {"recent-reader", "now-reader"} <= left


def test_synchronous_process_jobs_are_pruned_and_asynchronous_ones_kept(
        db: str, serve_api: Callable[[str], AbstractContextManager[str]]) -> None:
    with serve_api(db) as api:
        sync = process_client.execute(api, "overlap-check", {"geometry": mapping(SQUARE), "proposed_use": "R"},
                                      None, "planner")
        assert sync.status_code == 200
        queued = process_client.execute(api, "overlap-check", {"project": "XM202300046"}, "respond-async", "planner")
        assert queued.status_code == 201
    with psycopg.connect(db, autocommit=True) as conn:
        kinds = dict(conn.execute("SELECT sync, count(*) FROM ops.jobs GROUP BY sync").fetchall())
        assert kinds.get(True) == 1
        with conn.transaction():
            done = prune(conn, Settings(sync_job_retention_minutes=1), datetime.now(UTC) + timedelta(minutes=5))
        left = dict(conn.execute("SELECT sync, count(*) FROM ops.jobs GROUP BY sync").fetchall())
    assert done.sync_jobs_deleted == 1
    assert True not in left and left.get(False, 0) >= 1


def test_prune_drops_the_bytes_of_finished_deliveries_and_keeps_their_records(
        db: str, settings: Settings, registry: LayerRegistry) -> None:
    spec = registry["pipe_nodes"]
    path = settings.samples_dir / spec.source.path
    sender = store.Sender("retention-test", "pipeline_office", "api")
    with psycopg.connect(db) as conn:
        finished = store.receive(conn, spec, sender, path.name, path.read_bytes(), None, None)
        waiting = store.receive(conn, spec, sender, path.name, path.read_bytes(), None, None)
    result = store.run_delivery(db, spec, finished.delivery_id, settings.city_extent, settings.rejects_dir)
    assert result["status"] == "succeeded"
    columns = "delivery_id, status, content IS NULL, content_pruned_at IS NOT NULL, checksum, size_bytes, result"
    with psycopg.connect(db, autocommit=True) as conn:
        before = {r[0]: r for r in conn.execute(f"SELECT {columns} FROM ops.deliveries").fetchall()}
        with conn.transaction():  # a day short of the retention: nothing goes
            early = prune(conn, Settings(delivery_retention_days=30), datetime.now(UTC) + timedelta(days=29))
        with conn.transaction():
            done = prune(conn, Settings(delivery_retention_days=30), datetime.now(UTC) + timedelta(days=31))
        after = {r[0]: r for r in conn.execute(f"SELECT {columns} FROM ops.deliveries").fetchall()}
    assert early.deliveries_pruned == 0
    assert done.deliveries_pruned == 1 and done.delivery_bytes_dropped == path.stat().st_size
    kept = before[finished.delivery_id]
    assert kept[2:4] == (False, False)
    assert after[finished.delivery_id] == (*kept[:2], True, True, *kept[4:])  # the record, without its bytes
    assert after[waiting.delivery_id] == before[waiting.delivery_id]  # its job still needs the bytes
    assert after[waiting.delivery_id][1:3] == ("accepted", False)
    with pytest.raises(NotFound, match="no longer kept"):
        store.run_delivery(db, spec, finished.delivery_id, settings.city_extent, settings.rejects_dir)
