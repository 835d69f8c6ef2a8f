"""A primary restarted between two probes of the circuit breaker: the pooled connections the restart broke are
found at checkout and replaced (gis/db/pool.py), so the reads that follow answer 200, audited ones with their rows.

The service's probe interval is set far longer than the test, so the breaker never sees the restart: every
pooled connection is broken and nothing but the checkout itself can notice (with the default interval a restart
quicker than one interval is the same case, only as a race)."""

from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
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
HOME = ROOT / ".gisdata" / "test" / "restart-under-test"
LAYER = "pipelines"  # internal: every read of it writes an audit row
READS = 40
CLIENTS = 20  # more than a pool's connections, so every broken one is met
TIMEOUT = 30.0

Serve = Callable[[str], AbstractContextManager[str]]


@pytest.fixture(scope="module")
def database(registry: LayerRegistry, settings: Settings) -> Iterator[Cluster]:
    with own_cluster(HOME, registry, settings, LAYER) as cluster:
        yield cluster


def _get(base: str, path: str, token: str) -> int:
    try:
        return httpx.get(base + path, headers={"X-API-Key": token}, timeout=TIMEOUT).status_code
    except httpx.TransportError:
        return -1  # no answer within the client's bound


def _burst(base: str, paths: list[str], token: str) -> list[int]:
    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(lambda p: _get(base, p, token), paths))


def _read_rows(url: str, key_id: str) -> Counter[int]:
    """The statuses of that key's read rows in the audit log."""
    with psycopg.connect(url) as conn:
        return Counter(int(r[0]) for r in conn.execute(
            "SELECT status FROM ops.audit_log WHERE key_id = %s AND action = 'read'", (key_id,)))


def test_reads_after_a_primary_restart_get_healthy_connections_and_keep_their_audit_rows(
        database: Cluster, serve_api: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    url = database.url()
    with psycopg.connect(url) as conn:
        key, token = create_key(conn, "restart", "pipeline_app", pepper="")
        conn.commit()
        fids = [str(r[0]) for r in conn.execute("SELECT fid FROM pipeline.pipelines ORDER BY fid LIMIT 20")]
    # An item (one audited statement and its audit row) and a page: both take pooled connections.
    paths = [f"/collections/{LAYER}/items/{fids[i % len(fids)]}" if i % 2 else f"/collections/{LAYER}/items?limit=5"
             for i in range(READS)]
    monkeypatch.setenv("GIS_DB_PROBE_INTERVAL_S", "3600")  # the breaker's probe runs once, at start
    with serve_api(url) as base:
        assert _burst(base, paths, token) == [200] * READS  # the pool now holds connections the restart will break
        database.stop()
        database.start()
        assert until(lambda: _status_direct(url), 30), "the restarted primary does not answer"
        after = _burst(base, paths, token)
    assert after == [200] * READS, Counter(after)
    assert _read_rows(url, key.key_id) == {200: 2 * READS}  # every read has its row, before and after


def _status_direct(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False
