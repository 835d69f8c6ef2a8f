"""Read audit rows are written by group commit (gis/security/audit_writer.py), through the real service: every
answered read of an internal layer has its row, concurrent reads share commits, and a database lost while a batch
is being written answers 503 to each read of that batch, never 200 without its row."""

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from local_ports import until
from own_cluster import own_cluster

from gis.db.cluster import Cluster
from gis.layers import LayerRegistry
from gis.security.keys import create_key
from gis.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".gisdata" / "test" / "audit-group-commit"
LAYER = "pipelines"  # internal: every read of it writes an audit row
READS = 240
CLIENTS = 24
TIMEOUT = 60.0


def _new_key(url: str, name: str) -> tuple[str, str]:
    """(key id, token) of a fresh pipeline_app key, so the test counts exactly its own audit rows."""
    with psycopg.connect(url) as conn:
        record, token = create_key(conn, name, "pipeline_app", pepper="")
        conn.commit()
    return record.key_id, token


def _audit_rows(url: str, key_id: str) -> list[tuple[str, int | None, int | None]]:
    """(the inserting transaction, features, status) of each read row of that key."""
    with psycopg.connect(url) as conn:
        return [(str(r[0]), r[1], r[2]) for r in conn.execute(
            "SELECT xmin::text, features, status FROM ops.audit_log WHERE key_id = %s AND action = 'read'",
            (key_id,))]


def _get(base: str, path: str, token: str, timeout: float = TIMEOUT) -> int:
    try:
        return httpx.get(base + path, headers={"X-API-Key": token}, timeout=timeout).status_code
    except httpx.TransportError:
        return -1  # no answer within the client's bound


def _fids(url: str, n: int) -> list[str]:
    with psycopg.connect(url) as conn:
        return [str(r[0]) for r in conn.execute("SELECT fid FROM pipeline.pipelines ORDER BY fid LIMIT %s", (n,))]


Serve = Callable[[str], contextlib.AbstractContextManager[str]]


def test_every_answered_read_under_concurrency_has_its_row_and_reads_share_commits(
        clone_db: Callable[[], str], serve_api: Serve) -> None:
    url = clone_db()
    key_id, token = _new_key(url, "group commit")
    fids = _fids(url, 20)
    # found items (features 1, 200) and missing ones (features 0, 404): both are audited reads
    paths = [f"/collections/{LAYER}/items/{fids[i % len(fids)]}" if i % 4 else f"/collections/{LAYER}/items/nope-{i}"
             for i in range(READS)]
    with serve_api(url) as base, ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(pool.map(lambda p: _get(base, p, token), paths))
    assert Counter(statuses) == {200: READS - READS // 4, 404: READS // 4}
    rows = _audit_rows(url, key_id)
    assert len(rows) == READS  # not one answer without its row, and no row twice
    assert Counter((features, status) for _, features, status in rows) == {
        (1, 200): READS - READS // 4, (0, 404): READS // 4}
    # group commit: concurrent reads' rows went in shared transactions (one each before: READS transactions)
    assert len({xid for xid, _, _ in rows}) < READS


# -- a database lost while a batch is being written ----------------------------------------------------------

@pytest.fixture(scope="module")
def database(registry: LayerRegistry, settings: Settings) -> Iterator[Cluster]:
    with own_cluster(HOME, registry, settings, LAYER) as cluster:
        yield cluster


def _insert_waiting_on_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND query LIKE 'INSERT INTO ops.audit_log%'").fetchone()
    return bool(row and row[0])


def test_a_database_lost_during_a_batch_answers_503_and_no_read_without_its_row(
        database: Cluster, serve_api: Serve) -> None:
    url = database.url()
    key_id, token = _new_key(url, "outage during a batch")
    fid = _fids(url, 1)[0]
    path = f"/collections/{LAYER}/items/{fid}"
    with serve_api(url) as base:
        assert _get(base, path, token) == 200
        # The audit log locked: the next batch's INSERT waits on the lock, its reads wait for its commit.
        blocker = psycopg.connect(url)
        blocker.execute("LOCK TABLE ops.audit_log IN ACCESS EXCLUSIVE MODE")
        statuses: list[int] = []
        readers = [threading.Thread(target=lambda: statuses.append(_get(base, path, token, 30.0)))
                   for _ in range(12)]
        for reader in readers:
            reader.start()
        try:
            assert until(lambda: _insert_waiting_on_lock(url), 30), "no batch is waiting on the locked audit log"
            database.stop()  # the primary gone mid-batch (its fast shutdown ends every session, the lock's too)
            for reader in readers:
                reader.join(60)
        finally:
            blocker.close()
            database.start()
        # None hung, none is a 500. A 200 is possible: the shutdown ends the lock's session too, and a waiting
        # INSERT granted the lock in that instant may commit before its own session ends (its row then exists).
        assert len(statuses) == 12 and set(statuses) <= {200, 503}, statuses
        assert until(lambda: _get(base, path, token, 10.0) == 200, 30)  # the service is back with the database
        with ThreadPoolExecutor(8) as pool:
            after = list(pool.map(lambda _n: _get(base, path, token), range(40)))
        # Pooled connections the restart broke fail the batches that meet them (503) until the pool replaces them.
        assert set(after) <= {200, 503} and 200 in after, after
    # Every 200 the service ever gave this key has its row: the first one, the one that found it back, and every
    # 200 among the reads during the outage and after it; a 503 has none.
    rows = _audit_rows(url, key_id)
    assert sum(1 for _, _, status in rows if status == 200) == 1 + 1 + statuses.count(200) + after.count(200)
