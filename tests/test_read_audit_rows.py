"""The audit row of a read written by the read's own statement (gis.db.routing.run_row's `then`), and what the
service's audited reads of items, one item and its history record through it.

With no standby the row and the read are one statement: both commit, or neither (an error in the read writes
no row), and what the row counts comes from the read's own row.
"""

import asyncio
import uuid
from typing import Any

import httpx
import psycopg
from conftest import TEST_KEYS

from gis.db.pool import GuardedPool, make_pool
from gis.db.routing import run_row
from gis.security import audit
from gis.settings import Settings

KEY = {"X-API-Key": TEST_KEYS["pipeline_app"]}  # pipelines is an internal layer: every read of it is audited
FOUND = audit.insert_from_row("CASE WHEN r.found THEN r.n ELSE 0 END", "CASE WHEN r.found THEN 200 ELSE 404 END")


async def _opened(url: str, settings: Settings) -> GuardedPool:
    pool = make_pool(url, settings.model_copy(update={"pool_min_size": 1, "pool_max_size": 2}))
    await pool.open(wait=True)
    await pool.probe_once()
    return pool


def _read(url: str, settings: Settings, query: str, params: dict[str, object], subject: str) -> Any:
    entry = audit.AuditEntry(subject, "tester", "api-key", None, "read", "roads", "/test", {"fid": "x"})

    async def read() -> Any:
        pool = await _opened(url, settings)
        try:
            return await run_row(pool, None, ["roads"], query, params, 5.0, then=(FOUND, audit.row_values(entry)))
        finally:
            await pool.close()

    return asyncio.run(read())


def _logged(url: str, subject: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT role, method, key_id, action, layer_id, path, query, features, status "
                            "FROM ops.audit_log WHERE subject = %s", (subject,)).fetchall()


def test_a_read_writes_its_audit_row_from_its_own_row(loaded_db_url: str, settings: Settings) -> None:
    with psycopg.connect(loaded_db_url) as conn:
        fid = conn.execute("SELECT fid FROM base.roads ORDER BY fid LIMIT 1").fetchone()[0]
    subject = f"reader-{uuid.uuid4().hex[:8]}"
    row, served = _read(loaded_db_url, settings, "SELECT fid, 7 AS n FROM base.roads WHERE fid = %(fid)s",
                        {"fid": fid}, subject)
    assert row == (fid, 7) and served.server == "primary" and "roads" in served.versions
    assert _logged(loaded_db_url, subject) == [("tester", "api-key", None, "read", "roads", "/test", {"fid": "x"},
                                                7, 200)]
    missing = f"reader-{uuid.uuid4().hex[:8]}"
    row, _ = _read(loaded_db_url, settings, "SELECT fid, 7 AS n FROM base.roads WHERE fid = %(fid)s",
                   {"fid": "no such road"}, missing)
    assert row is None
    assert [r[-2:] for r in _logged(loaded_db_url, missing)] == [(0, 404)]


def test_a_read_that_fails_writes_no_audit_row(loaded_db_url: str, settings: Settings) -> None:
    subject = f"reader-{uuid.uuid4().hex[:8]}"
    try:
        _read(loaded_db_url, settings, "SELECT fid, 1 / %(zero)s::int AS n FROM base.roads LIMIT 1", {"zero": 0},
              subject)
    except psycopg.errors.DivisionByZero:
        pass
    else:
        raise AssertionError("the read should have failed")
    assert _logged(loaded_db_url, subject) == []


def _rows_since(url: str, since: int, path: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT features, status, query FROM ops.audit_log WHERE audit_id > %s AND path = %s "
                            "AND role = 'pipeline_app' ORDER BY audit_id", (since, path)).fetchall()


def test_audited_reads_through_the_service_record_what_they_answered(api_url: str, loaded_db_url: str) -> None:
    with psycopg.connect(loaded_db_url) as conn:
        since = conn.execute("SELECT coalesce(max(audit_id), 0) FROM ops.audit_log").fetchone()[0]
        fid = conn.execute("SELECT fid FROM pipeline.pipelines ORDER BY fid LIMIT 1").fetchone()[0]
    items = "/collections/pipelines/items"
    with httpx.Client(base_url=api_url, headers=KEY, timeout=30) as http:
        page = http.get(items, params={"limit": 3})
        one = http.get(f"{items}/{fid}")
        none = http.get(f"{items}/no-such-pipe-{uuid.uuid4().hex[:6]}")
        history = http.get(f"{items}/{fid}/history")
        no_history = http.get(f"{items}/no-such-pipe-{uuid.uuid4().hex[:6]}/history")
    assert (page.status_code, one.status_code, none.status_code, history.status_code, no_history.status_code) == (
        200, 200, 404, 200, 404)
    assert _rows_since(loaded_db_url, since, items) == [(page.json()["numberReturned"], 200, {"limit": "3"})]
    assert _rows_since(loaded_db_url, since, f"{items}/{fid}") == [(1, 200, {})]
    assert [r[:2] for r in _rows_since(loaded_db_url, since, none.request.url.path)] == [(0, 404)]
    assert _rows_since(loaded_db_url, since, f"{items}/{fid}/history") == [(history.json()["numberReturned"], 200, {})]
    assert [r[:2] for r in _rows_since(loaded_db_url, since, no_history.request.url.path)] == [(0, 404)]
