"""Growth: the audit log partitioned by month with retention (`gis ops prune`), history still queryable,
synchronous process jobs kept only briefly, and delivered files' bytes dropped after their retention."""

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import process_client
import psycopg
import pytest
from conftest import cloned_database
from local_ports import until
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
        with psycopg.connect(db, autocommit=True) as conn:  # run by the service itself (GIS_JOBS_IN_SERVICE)
            assert until(lambda: conn.execute("SELECT status FROM ops.jobs WHERE job_id = %s",
                                              (queued.json()["jobID"],)).fetchone() == ("successful",), 60)
    with psycopg.connect(db, autocommit=True) as conn:
        kept = dict(conn.execute("SELECT execution, count(result) FROM ops.jobs GROUP BY execution").fetchall())
        kinds = dict(conn.execute("SELECT execution, count(*) FROM ops.jobs GROUP BY execution").fetchall())
        columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                              "WHERE table_schema = 'ops' AND table_name = 'jobs'").fetchall()}
        assert kinds.get("sync") == 1
        with conn.transaction():
            done = prune(conn, Settings(sync_job_retention_minutes=1), datetime.now(UTC) + timedelta(minutes=5))
        left = dict(conn.execute("SELECT execution, count(*) FROM ops.jobs GROUP BY execution").fetchall())
    assert kept.get("sync") == 0  # the synchronous caller had its result in the response: no copy kept
    assert kept.get("async", 0) >= 1  # an asynchronous job's result is read later from /jobs/{id}/results
    assert "sync" not in columns  # one column says how a job ran: execution
    assert done.sync_jobs_deleted == 1
    assert "sync" not in left and left.get("async", 0) >= 1


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


# -- sensor readings: partitioned by month of observed_at, with retention -------------------------------------

_READING_COPY = """
INSERT INTO pipeline.sensor_readings (fid, sensor, sensor_type, utility, observed_at, value, unit, quality, geom,
                                      valid_from, row_hash, refresh_id)
SELECT %(fid)s, sensor, sensor_type, utility, %(at)s, value, unit, quality, geom, valid_from, row_hash, refresh_id
FROM pipeline.sensor_readings ORDER BY fid LIMIT 1
"""


def _partition_of(conn: psycopg.Connection, fid: str) -> str | None:
    row = conn.execute("SELECT tableoid::regclass::text FROM pipeline.sensor_readings WHERE fid = %s",
                       (fid,)).fetchone()
    return None if row is None else str(row[0])


def _stats(conn: psycopg.Connection) -> tuple[int, int, datetime]:
    row = conn.execute("SELECT row_count, changed_refresh_id, time_extent[1] FROM ops.layer_stats "
                       "WHERE layer_id = 'sensor_readings'").fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), row[2]


def test_sensor_readings_are_partitioned_by_month_of_observation(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        kinds = dict(conn.execute("SELECT relname, relkind FROM pg_class WHERE relnamespace = 'pipeline'::regnamespace "
                                  "AND relname IN ('sensor_readings', 'sensor_readings_history')").fetchall())
        # the sample readings (delivered by the template's refresh) sit in their months' partitions
        sample = conn.execute("SELECT fid, observed_at FROM pipeline.sensor_readings ORDER BY fid LIMIT 1").fetchone()
        assert sample is not None
        where = _partition_of(conn, sample[0])
        # a time range reads only its month's partition
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT count(*) FROM pipeline.sensor_readings WHERE observed_at >= %s AND observed_at < %s",
            (sample[1], sample[1] + timedelta(hours=1))).fetchall())
    assert kinds == {"sensor_readings": "p", "sensor_readings_history": "p"}
    month = f"pipeline_sensor_readings_{sample[1].astimezone(UTC):%Y%m}"
    assert where == f"partitions.{month}"  # out of the domain schema: QGIS and the catalog list only the layer
    assert month in plan and "sensor_readings_default" not in plan


def test_prune_drops_reading_months_past_retention_and_moves_the_layer_version(db: str, registry) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=800)
    with psycopg.connect(db, autocommit=True) as conn:
        for table in ("sensor_readings", "sensor_readings_history"):
            conn.execute("SELECT ops.ensure_monthly_partitions_in(%s::regclass, 'partitions', %s::date, 0)",
                         (f"pipeline.{table}", old.date()))
        conn.execute(_READING_COPY, {"fid": "SN-OLD@1", "at": old})
        conn.execute("UPDATE ops.layer_stats SET row_count = row_count + 1, time_extent[1] = %s "
                     "WHERE layer_id = 'sensor_readings'", (old,))
        assert _partition_of(conn, "SN-OLD@1") == f"partitions.pipeline_sensor_readings_{old:%Y%m}"
        count_before, version_before, _ = _stats(conn)
        recent_before = conn.execute("SELECT count(*) FROM pipeline.sensor_readings WHERE observed_at > %s",
                                     (now - timedelta(days=400),)).fetchone()
        with conn.transaction():
            done = prune(conn, Settings(event_retention_days=400), now, registry)
        count_after, version_after, first_after = _stats(conn)
        recent_after = conn.execute("SELECT count(*) FROM pipeline.sensor_readings WHERE observed_at > %s",
                                    (now - timedelta(days=400),)).fetchone()
        gone = _partition_of(conn, "SN-OLD@1")
        first = conn.execute("SELECT min(observed_at) FROM pipeline.sensor_readings").fetchone()
        logged = conn.execute("SELECT source_path, message FROM ops.refresh_log WHERE refresh_id = %s",
                              (version_after,)).fetchone()
    assert f"pipeline_sensor_readings_{old:%Y%m}" in done.layers["sensor_readings"].partitions
    assert f"pipeline_sensor_readings_history_{old:%Y%m}" in done.layers["sensor_readings"].partitions
    assert done.layers["sensor_readings"].current_rows == 1
    assert gone is None
    assert recent_after == recent_before and recent_after is not None and recent_after[0] > 0  # the rest queryable
    assert count_after == count_before - 1
    assert version_after > version_before  # caches and ETags keyed by the version renew
    assert first is not None and first_after == first[0]
    assert logged is not None and logged[0] == "gis ops prune" and "1 rows" in logged[1]


def test_plain_reading_tables_of_an_older_database_become_partitioned_with_every_row(
        clone_db: Callable[[], str], registry) -> None:
    from gis.db.migrate import create_layer_tables, ensure_layer_tables

    spec = registry["sensor_readings"]
    with psycopg.connect(clone_db()) as conn:
        with conn.transaction():
            rows = conn.execute("SELECT fid, observed_at, value FROM pipeline.sensor_readings ORDER BY fid").fetchall()
            history = conn.execute("SELECT count(*) FROM pipeline.sensor_readings_history").fetchone()
            conn.execute("CREATE TABLE keep_current AS SELECT * FROM pipeline.sensor_readings")
            conn.execute("CREATE TABLE keep_history AS SELECT * FROM pipeline.sensor_readings_history")
            conn.execute("DROP TABLE pipeline.sensor_readings, pipeline.sensor_readings_history")
            create_layer_tables(conn, spec.model_copy(update={"partition": None}))  # as made before migration
            conn.execute("INSERT INTO pipeline.sensor_readings SELECT * FROM keep_current")
            conn.execute("INSERT INTO pipeline.sensor_readings_history SELECT * FROM keep_history")
            plain = conn.execute("SELECT relkind FROM pg_class WHERE oid = 'pipeline.sensor_readings'::regclass"
                                 ).fetchone()
        ensure_layer_tables(conn, registry)
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = 'pipeline.sensor_readings'::regclass").fetchone()
        after = conn.execute("SELECT fid, observed_at, value FROM pipeline.sensor_readings ORDER BY fid").fetchall()
        history_after = conn.execute("SELECT count(*) FROM pipeline.sensor_readings_history").fetchone()
        in_default = conn.execute("SELECT count(*) FROM partitions.pipeline_sensor_readings_default").fetchone()
        leftovers = conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE '%%unpartitioned%%'").fetchone()
    assert plain == ("r",) and kind == ("p",)
    assert after == rows and len(rows) > 0
    assert history_after == history
    assert in_default == (0,)  # months were made for the rows' own months
    assert leftovers == (0,)


def _audit_partitions(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT i.inhrelid::regclass::text FROM pg_inherits i WHERE i.inhparent = 'ops.audit_log'::regclass")}


def test_audit_partitions_keep_their_names_when_one_function_makes_every_partition(server_url: str) -> None:
    """Migration 031 makes 014's and 020's partition makers one loop (ops.make_months): a database migrated before
    it keeps its audit partitions' names, and the months made after it are named as 014 named them (not
    <schema>_<table>_YYYYMM as 020 names the layers')."""
    from gis.db.migrate import apply_migrations, migration_files

    old = datetime.now(UTC) - timedelta(days=400)
    with cloned_database(server_url, "template0", "gis_test_before_031") as url, psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE public.gis_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        for version, name, text in migration_files():  # the database as a service before 031 left it
            if version < 31:
                conn.execute(text.encode())
                conn.execute("INSERT INTO public.gis_schema_migrations VALUES (%s, %s)", (version, name))
        conn.execute("SELECT ops.ensure_monthly_partitions('ops.audit_log', %s::date, 0)", (old.date(),))
        conn.commit()
        before = _audit_partitions(conn)
        applied = apply_migrations(conn)
        made = conn.execute("SELECT ops.ensure_monthly_partitions('ops.audit_log', %s::date, 4)",
                            ((old - timedelta(days=62)).date(),)).fetchone()
        conn.commit()
        after = _audit_partitions(conn)
    assert "031_month_partition_moves_default_rows.sql" in applied
    assert f"ops.audit_log_{old:%Y%m}" in before and "ops.audit_log_default" in before
    assert before < after  # every partition there before is there, by its name
    assert made is not None and made[0] == len(after - before) > 0
    assert f"ops.audit_log_{old - timedelta(days=62):%Y%m}" in after
    assert f"ops.audit_log_{datetime.now(UTC) + timedelta(days=100):%Y%m}" in after
    assert all(re.fullmatch(r"ops\.audit_log_(\d{6}|default)", name) for name in after)
