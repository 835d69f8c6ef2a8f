"""Rate limits shared by every service process (budgets on the primary), priced for how clients page, per client
address as the trusted proxy reports it; API keys revoked everywhere within 5 s; real GDAL paging through a
100,000-feature layer with the default limits and never meeting a 429.
"""

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg
import pyogrio
import pytest
from conftest import TEST_KEYS
from psycopg import sql

from gis.security import keys

ADMIN = {"X-API-Key": TEST_KEYS["admin"]}
ANALYST = {"X-API-Key": TEST_KEYS["analyst"]}
BIG_LAYER = "pipe_nodes"  # internal, readable by analysts: every page read is audited too
BIG = 100_000


@contextmanager
def limited(serve_api: Callable[[str], AbstractContextManager[str]], url: str, nodes: int = 1,
            **http: str) -> Iterator[list[str]]:
    """`nodes` service processes on one database, with GIS_HTTP_* settings; their base URLs."""
    with pytest.MonkeyPatch.context() as patch, ExitStack() as stack:
        for name, value in http.items():
            patch.setenv(f"GIS_HTTP_{name.upper()}", value)
        yield [stack.enter_context(serve_api(url)) for _ in range(nodes)]


@pytest.fixture(scope="module")
def limits_db(server_url: str, template_db: str) -> Iterator[str]:
    from conftest import cloned_database

    with cloned_database(server_url, template_db, "gis_test_rate_limits") as url:
        yield url


def test_a_keys_budget_is_one_across_service_processes(
        limits_db: str, serve_api: Callable[[str], AbstractContextManager[str]]) -> None:
    with limited(serve_api, limits_db, nodes=2, rate_per_second="0.1", rate_burst="4") as (a, b):
        key = {"X-API-Key": TEST_KEYS["planner"]}
        statuses = [httpx.get(f"{node}/conformance", headers=key).status_code for node in (a, b, a, b)]
        assert statuses == [200, 200, 200, 200]
        # four requests spent the key's burst of four, wherever they went: both processes now refuse it
        for node in (a, b):
            refused = httpx.get(f"{node}/conformance", headers=key)
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


def test_following_next_links_costs_less_than_new_queries(
        limits_db: str, serve_api: Callable[[str], AbstractContextManager[str]]) -> None:
    with limited(serve_api, limits_db, rate_per_second="0.01", rate_burst="3") as (api,), \
            httpx.Client(headers=ANALYST, timeout=30) as http:
        page = http.get(f"{api}/collections/place_names/items", params={"limit": 1})
        assert page.status_code == 200
        for _ in range(15):  # 1 + 15 x 0.1 tokens: inside a burst of 3, where 16 new queries would not be
            link = next(x["href"] for x in page.json()["links"] if x["rel"] == "next")
            assert "cursor=" in link
            page = http.get(link)
            assert page.status_code == 200, page.text
        assert http.get(f"{api}/collections/place_names/items", params={"limit": 1}).status_code == 429


def _from(address: str) -> httpx.Client:
    """A client whose connections come from `address` (a loopback address other than 127.0.0.1 on Linux)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def test_anonymous_budgets_are_per_client_address_as_a_trusted_proxy_reports_it(
        limits_db: str, serve_api: Callable[[str], AbstractContextManager[str]]) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GIS_SERVE_FORWARDED_ALLOW_IPS", "127.0.0.1")
        with limited(serve_api, limits_db, rate_per_second="0.01", rate_burst="2") as (api,):
            _anonymous_budgets(api)


def _anonymous_budgets(api: str) -> None:
    with _from("127.0.0.1") as proxy:
        one = {"X-Forwarded-For": "198.51.100.7"}
        assert [proxy.get(f"{api}/conformance", headers=one).status_code for _ in range(3)] == [200, 200, 429]
        # another client behind the same proxy has a budget of its own
        other = {"X-Forwarded-For": "198.51.100.8"}
        assert proxy.get(f"{api}/conformance", headers=other).status_code == 200
        # what the client itself wrote in front of the proxy's entry does not choose the budget
        forged = {"X-Forwarded-For": "203.0.113.1, 198.51.100.7"}
        assert proxy.get(f"{api}/conformance", headers=forged).status_code == 429
    with _from("127.0.0.2") as direct:
        # not a trusted proxy: its X-Forwarded-For is ignored, the budget is the peer's own
        statuses = [direct.get(f"{api}/conformance", headers={"X-Forwarded-For": f"198.51.100.{20 + i}"})
                    .status_code for i in range(3)]
        assert statuses == [200, 200, 429]


def test_a_revoked_key_stops_working_on_every_process_within_5_seconds(
        clone_db: Callable[[], str], serve_api: Callable[[str], AbstractContextManager[str]]) -> None:
    url = clone_db()
    with psycopg.connect(url) as conn:
        record, token = keys.create_key(conn, "to be revoked", "analyst", "")
        conn.commit()
    headers = {"X-API-Key": token}
    with limited(serve_api, url, nodes=2) as nodes:
        for node in nodes:  # both processes have looked the key up and keep it in their caches
            assert httpx.get(f"{node}/collections/{BIG_LAYER}", headers=headers).status_code == 200
        with psycopg.connect(url) as conn:
            keys.revoke_key(conn, record.key_id)
            conn.commit()
        time.sleep(5.0)
        for node in nodes:
            assert httpx.get(f"{node}/collections/{BIG_LAYER}", headers=headers).status_code == 401


# -- real clients page through a big layer with the default limits -----------------------------------------

def _grow(url: str, layer: tuple[str, str], rows: int) -> None:
    """The layer, copied onto itself with new fids until it holds `rows` rows (and its statistics say so)."""
    schema, table = layer
    with psycopg.connect(url) as conn:
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "AND column_name <> 'fid' ORDER BY ordinal_position", layer).fetchall()]
        have = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()
        assert have is not None and have[0] > 0
        copies = -(-rows // int(have[0]))
        cols = sql.SQL(", ").join(map(sql.Identifier, columns))
        conn.execute(sql.SQL(
            "INSERT INTO {t} (fid, {cols}) SELECT fid || '-copy' || g, {cols} FROM {t}, generate_series(1, %s) g "
            "ORDER BY g, fid LIMIT %s").format(t=sql.Identifier(schema, table), cols=cols),
            (copies, rows - int(have[0])))
        conn.execute("UPDATE ops.layer_stats SET row_count = %s WHERE layer_id = %s", (rows, table))
        conn.commit()
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, table)))


@pytest.fixture(scope="module")
def big_layer_api(server_url: str, template_db: str,
                  serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    """A clone whose pipe_nodes holds 100,000 features, served with the default rate limits."""
    from conftest import cloned_database

    with cloned_database(server_url, template_db, "gis_test_big_layer") as url:
        _grow(url, ("pipeline", BIG_LAYER), BIG)
        with limited(serve_api, url, rate_per_second="50", rate_burst="300") as (api,):
            yield api


def test_gdal_pages_through_100000_features_with_an_analyst_key_without_a_429(
        big_layer_api: str, tmp_path: Path) -> None:
    out = tmp_path / "nodes.gpkg"
    # ogr2ogr with GDAL's defaults (its OAPIF driver asks for pages of 10 and follows the next links, and does
    # not retry a 429); the key as HTTP Basic password, as QGIS's authcfg sends it
    done = subprocess.run(
        ["ogr2ogr", "-f", "GPKG", str(out), f"OAPIF:{big_layer_api}", BIG_LAYER],
        capture_output=True, text=True, timeout=900,
        env={"PATH": "/usr/bin:/bin", "GDAL_HTTP_AUTH": "BASIC", "GDAL_HTTP_USERPWD": f"gdal:{TEST_KEYS['analyst']}"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "429" not in done.stderr
    assert pyogrio.read_info(out, layer=BIG_LAYER)["features"] == BIG
