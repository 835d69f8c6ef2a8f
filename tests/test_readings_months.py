"""Monthly partitions at their edges: readings delivered dated months ahead wait in the default partition and move
into their month when it is made (migration 031), and a prune's dropped months take the layer's extents with
them."""

import csv
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import ADMIN_HEADERS, cloned_database

from gis.db import layer_partitions
from gis.db.retention import prune
from gis.layers import LayerRegistry
from gis.refresh.runner import RefreshRequest, run_refresh
from gis.settings import Settings

BEIJING = "+08:00"


def _month_start(moment: datetime, months: int) -> datetime:
    """The first instant (UTC) of the month `months` after the month of `moment`."""
    index = moment.year * 12 + moment.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _sample_rows(settings: Settings, registry: LayerRegistry, count: int) -> tuple[list[str], list[list[str]]]:
    path = settings.samples_dir / registry["sensor_readings"].source.path
    with path.open(encoding="utf-8", newline="") as stream:
        reader = csv.reader(stream)
        header = next(reader)
        return header, [next(reader) for _ in range(count)]


def _delivery(tmp_path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path = tmp_path / "sensor_readings.csv"
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _dated(header: list[str], row: list[str], fid: str, at: datetime) -> list[str]:
    out = list(row)
    out[header.index("reading_id")] = fid
    out[header.index("observed_at")] = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    return out


def _refresh(url: str, settings: Settings, registry: LayerRegistry, path: Path, force: bool = False) -> None:
    run_refresh(url, RefreshRequest(registry["sensor_readings"], path, settings.city_extent, settings.rejects_dir,
                                    force=force, progress=False))


def _where(conn: psycopg.Connection, fids: list[str]) -> dict[str, tuple[str, datetime, float, bytes]]:
    return {r[0]: tuple(r[1:]) for r in conn.execute(
        "SELECT fid, tableoid::regclass::text, observed_at, value, row_hash FROM pipeline.sensor_readings "
        "WHERE fid = ANY(%s)", (fids,)).fetchall()}


def test_readings_delivered_months_ahead_move_into_their_month_when_it_is_made(
        clone_db: Callable[[], str], settings: Settings, registry: LayerRegistry, tmp_path: Path) -> None:
    url = clone_db()
    spec = registry["sensor_readings"]
    now = datetime.now(UTC)
    # Past the months made ahead (this one and MONTHS_AHEAD more): the delivery's rows wait in the default partition.
    ahead = _month_start(now, layer_partitions.MONTHS_AHEAD + 1)
    later = _month_start(now, layer_partitions.MONTHS_AHEAD + 2)
    header, rows = _sample_rows(settings, registry, 3)
    fids = ["SN-AHEAD@1", "SN-AHEAD@2", "SN-AHEAD@3"]
    dated = [_dated(header, rows[0], fids[0], ahead + timedelta(hours=1)),
             _dated(header, rows[1], fids[1], ahead + timedelta(days=3)),
             _dated(header, rows[2], fids[2], later + timedelta(hours=5))]
    path = _delivery(tmp_path, header, dated)
    _refresh(url, settings, registry, path)
    with psycopg.connect(url) as conn:
        waiting = _where(conn, fids)
        count = conn.execute("SELECT count(*) FROM pipeline.sensor_readings").fetchone()
        # What `gis ops prune` (and `gis migrate`) runs once those months come within MONTHS_AHEAD; this refused
        # before ("updated partition constraint for default partition would be violated").
        made = layer_partitions.ensure_partitions(conn, spec, months_ahead=layer_partitions.MONTHS_AHEAD + 2)
        conn.commit()
        moved = _where(conn, fids)
        count_after = conn.execute("SELECT count(*) FROM pipeline.sensor_readings").fetchone()
        in_default = conn.execute("SELECT count(*) FROM partitions.pipeline_sensor_readings_default "
                                  "WHERE fid = ANY(%s)", (fids,)).fetchone()
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT * FROM pipeline.sensor_readings WHERE observed_at >= %s AND observed_at < %s",
            (ahead, ahead + timedelta(days=1))).fetchall())
    assert {fid: where for fid, (where, *_) in waiting.items()} == dict.fromkeys(
        fids, "partitions.pipeline_sensor_readings_default")
    assert made == 4  # two months, current and history tables
    assert {fid: where for fid, (where, *_) in moved.items()} == {
        fids[0]: f"partitions.pipeline_sensor_readings_{ahead:%Y%m}",
        fids[1]: f"partitions.pipeline_sensor_readings_{ahead:%Y%m}",
        fids[2]: f"partitions.pipeline_sensor_readings_{later:%Y%m}"}
    assert {fid: rest for fid, (_, *rest) in moved.items()} == {fid: rest for fid, (_, *rest) in waiting.items()}
    assert count_after == count and in_default == (0,)
    assert f"pipeline_sensor_readings_{ahead:%Y%m}" in plan and "_default" not in plan
    # The moved month is a full partition: the same rows compared again change nothing (the key finds them).
    _refresh(url, settings, registry, path, force=True)
    with psycopg.connect(url) as conn:
        logged = conn.execute("SELECT inserted, updated, unchanged FROM ops.refresh_log WHERE layer_id = %s "
                              "ORDER BY refresh_id DESC LIMIT 1", (spec.id,)).fetchone()
        assert _where(conn, fids) == moved
    assert logged == (0, 0, 3)


def test_audit_rows_past_the_months_made_move_into_their_month_too(clone_db: Callable[[], str]) -> None:
    """Audit rows of a month no prune made yet (the timer stopped for a while) no longer block making it."""
    url = clone_db()
    ahead = _month_start(datetime.now(UTC), 5)
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO ops.audit_log (at, subject, role, method, action) "
                     "VALUES (%s, 'ahead-reader', 'r', 'm', 'read')", (ahead + timedelta(days=2),))
        before = conn.execute("SELECT tableoid::regclass::text FROM ops.audit_log WHERE subject = 'ahead-reader'"
                              ).fetchone()
        conn.execute("SELECT ops.ensure_monthly_partitions('ops.audit_log', now()::date, 5)")
        after = conn.execute("SELECT tableoid::regclass::text, at FROM ops.audit_log WHERE subject = 'ahead-reader'"
                             ).fetchone()
    assert before == ("ops.audit_log_default",)
    assert after == (f"ops.audit_log_{ahead:%Y%m}", ahead + timedelta(days=2))


def test_a_month_made_with_rows_to_move_refuses_nothing_else(clone_db: Callable[[], str]) -> None:
    """The moved month's partition is the parent's in every way: the primary key holds on it."""
    url = clone_db()
    ahead = _month_start(datetime.now(UTC), 6)
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO pipeline.sensor_readings (fid, sensor, sensor_type, utility, observed_at, value, "
                     "geom, row_hash, refresh_id) SELECT 'SN-KEY@1', sensor, sensor_type, utility, %s, value, geom, "
                     "row_hash, refresh_id FROM pipeline.sensor_readings ORDER BY fid LIMIT 1", (ahead,))
        conn.execute("SELECT ops.ensure_monthly_partitions_in('pipeline.sensor_readings', 'partitions', %s::date, 6)",
                     (ahead.date(),))
        indexes = {r[0] for r in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'partitions' AND tablename = %s",
            (f"pipeline_sensor_readings_{ahead:%Y%m}",)).fetchall()}
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO pipeline.sensor_readings (fid, sensor, sensor_type, utility, observed_at, value, "
                         "geom, row_hash, refresh_id) SELECT fid, sensor, sensor_type, utility, observed_at, value, "
                         "geom, row_hash, refresh_id FROM pipeline.sensor_readings WHERE fid = 'SN-KEY@1'")
    assert any("UNIQUE" in i and "fid" in i for i in indexes)


# -- a prune's dropped months take the extents with them ---------------------------------------------------------

@pytest.fixture
def pruned_db(server_url: str, template_db: str) -> Iterator[str]:
    with cloned_database(server_url, template_db, "gis_test_readings_prune_extent") as url:
        yield url


def test_prune_shrinks_the_readings_extents_to_the_months_kept(
        pruned_db: str, settings: Settings, registry: LayerRegistry, tmp_path: Path,
        serve_api: Callable[[str], AbstractContextManager[str]]) -> None:
    spec = registry["sensor_readings"]
    now = datetime.now(UTC)
    old = now - timedelta(days=800)
    header, rows = _sample_rows(settings, registry, 1)
    outlier = _dated(header, rows[0], "SN-FARWEST@1", old)
    # 20 km west of a sensor (EPSG:4550 metres), still inside the city: the layer's extent widens to it.
    outlier[header.index("x")] = str(float(rows[0][header.index("x")]) - 20_000)
    with psycopg.connect(pruned_db) as conn:
        for table in (spec.id, spec.history_table):  # the old month's partitions, as a long-running layer has
            conn.execute("SELECT ops.ensure_monthly_partitions_in(format('pipeline.%%I', %s::text)::regclass, "
                         "'partitions', %s::date, 0)", (table, old.date()))
        conn.commit()
    _refresh(pruned_db, settings, registry, _delivery(tmp_path, header, [outlier]))
    with serve_api(pruned_db) as api:
        def extent() -> dict[str, list[list[float | str | None]]]:
            answer = httpx.get(f"{api}/collections/sensor_readings", headers=ADMIN_HEADERS, timeout=30)
            assert answer.status_code == 200
            found = answer.json()["extent"]
            return {"bbox": found["spatial"]["bbox"], "interval": found["temporal"]["interval"]}

        before = extent()
        with psycopg.connect(pruned_db, autocommit=True) as conn, conn.transaction():
            prune(conn, Settings(event_retention_days=400), now, registry)
        after = extent()
        with psycopg.connect(pruned_db) as conn:
            kept = conn.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e), t0, t1 FROM "
                                "(SELECT ST_Extent(geom) e, min(observed_at) t0, max(observed_at) t1 "
                                "FROM pipeline.sensor_readings) x").fetchone()
    assert kept is not None
    assert before["bbox"][0][0] < kept[0] - 0.1  # the far-west reading widened it
    assert before["interval"][0][0] == f"{old:%Y-%m-%dT%H:%M:%SZ}"
    assert after["bbox"] == [pytest.approx(list(kept[:4]))]
    assert after["interval"] == [[f"{kept[4].astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}",
                                  f"{kept[5].astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"]]
