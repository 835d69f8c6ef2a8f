"""A burst beyond what the service can queue is shed at once with a clear 503 busy and Retry-After, while the
requests it queued are answered (gis/db/pool.py: the pool's queue bound, `GIS_DB_POOL_MAX_WAITING`).

The service under test has one pooled connection and room for one request in its queue. An audited read holds
that connection (its audit row waits on a lock the test holds), so of the reads sent meanwhile one is queued and
the others are shed; when the lock goes the held and the queued ones answer 200, each with its audit row."""

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

import httpx
import psycopg
import pytest
from local_ports import until

from gis.security.keys import create_key

LAYER = "pipelines"  # internal: every read of it writes an audit row
PATH = f"/collections/{LAYER}/items?limit=5"
SENT = 6  # while the one connection is held
TIMEOUT = 60.0

Serve = Callable[[str], AbstractContextManager[str]]


def _get(base: str, token: str) -> httpx.Response | None:
    try:
        return httpx.get(base + PATH, headers={"X-API-Key": token}, timeout=TIMEOUT)
    except httpx.TransportError:
        return None  # no answer within the client's bound: a hang


def _audit_insert_waits(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        # a lock on the audit log not granted: the audit row's INSERT, or the read whose statement writes it
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted "
                           "AND relation = 'ops.audit_log'::regclass").fetchone()
    return bool(row and row[0])


def test_a_burst_past_the_queue_is_shed_with_503_busy_and_the_queued_reads_are_answered(
        clone_db: Callable[[], str], serve_api: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    url = clone_db()
    with psycopg.connect(url) as conn:
        key, token = create_key(conn, "overload", "pipeline_app", pepper="")
        conn.commit()
    for name, value in {"GIS_POOL_MIN_SIZE": "1", "GIS_POOL_MAX_SIZE": "1", "GIS_DB_POOL_MAX_WAITING": "1",
                        "GIS_DB_POOL_TIMEOUT_S": "60"}.items():
        monkeypatch.setenv(name, value)
    answers: list[httpx.Response | None] = []

    def send() -> None:
        answers.append(_get(base, token))

    with serve_api(url) as base:
        first = _get(base, token)
        assert first is not None and first.status_code == 200  # the key is known now (cached): no lookup below
        blocker = psycopg.connect(url)
        try:
            blocker.execute("LOCK TABLE ops.audit_log IN ACCESS EXCLUSIVE MODE")
            held = threading.Thread(target=send)
            held.start()
            assert until(lambda: _audit_insert_waits(url), 30), "the read's audit row does not wait on the lock"
            burst = [threading.Thread(target=send) for _ in range(SENT)]
            for thread in burst:
                thread.start()
            # The shed ones answer while the lock is still held: at most one waits in the queue.
            assert until(lambda: len(answers) >= SENT - 1, 30), [a and a.status_code for a in answers]
        finally:
            blocker.close()  # the lock goes: the held read, then the queued one, go on
        for thread in [held, *burst]:
            thread.join(TIMEOUT)
    assert len(answers) == SENT + 1 and None not in answers  # none hung
    shed = [a for a in answers if a is not None and a.status_code == 503]
    answered = [a for a in answers if a is not None and a.status_code == 200]
    assert len(shed) + len(answered) == SENT + 1, [a and a.status_code for a in answers]
    assert len(shed) >= SENT - 1 and len(answered) >= 1
    for response in shed:
        assert response.headers["Retry-After"] == "1"
        assert response.json()["code"] == "ServiceBusy"
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT count(*) FROM ops.audit_log WHERE key_id = %s AND action = 'read' "
                            "AND status = 200", (key.key_id,)).fetchone()
    assert rows is not None and rows[0] == 1 + len(answered)  # the first read's row and each 200's
