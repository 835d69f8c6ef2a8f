"""Reads and the versions they report (gis.db.routing), on the real database and the service's own pools.

A read answers one statement's row together with the layer versions of that statement's snapshot; a
standby read first learns the primary's versions, and concurrent requests share that question without
ever taking the answer of one sent before they arrived.
"""

import asyncio
from collections.abc import Callable

import psycopg

from gis.db.pool import GuardedPool, make_pool
from gis.db.routing import PrimaryVersions, run_row
from gis.settings import Settings


def _versions(url: str) -> dict[str, int]:
    """Every layer's version: a vector layer's last change, a raster layer's newest refresh."""
    with psycopg.connect(url) as conn:
        return {r[0]: int(r[1]) for r in conn.execute(
            "SELECT layer_id, changed_refresh_id FROM ops.layer_stats UNION ALL "
            "SELECT layer_id, max(refresh_id) FROM ops.raster_versions GROUP BY layer_id")}


async def _opened(url: str, settings: Settings, size: int) -> GuardedPool:
    pool = make_pool(url, settings.model_copy(update={"pool_min_size": 1, "pool_max_size": size}))
    await pool.open(wait=True)
    await pool.probe_once()  # closes the breaker, as the app's lifespan does
    return pool


def test_a_read_answers_its_row_with_the_versions_of_its_snapshot(loaded_db_url: str, settings: Settings) -> None:
    with psycopg.connect(loaded_db_url) as conn:
        fid = conn.execute("SELECT fid FROM base.roads ORDER BY fid LIMIT 1").fetchone()[0]

    async def read() -> tuple[object, object]:
        pool = await _opened(loaded_db_url, settings, 2)
        try:
            return await run_row(pool, None, ["roads"], "SELECT fid, 7 AS n FROM base.roads WHERE fid = %(fid)s",
                                 {"fid": fid}, 5.0)
        finally:
            await pool.close()

    row, served = asyncio.run(read())
    assert row == (fid, 7)
    assert served.server == "primary" and served.versions == {"roads": _versions(loaded_db_url)["roads"]}


def test_a_read_that_finds_no_row_answers_none_and_still_its_versions(loaded_db_url: str, settings: Settings) -> None:
    async def read() -> tuple[object, object]:
        pool = await _opened(loaded_db_url, settings, 2)
        try:
            return await run_row(pool, None, ["roads"], "SELECT fid FROM base.roads WHERE fid = %(fid)s",
                                 {"fid": "no such road"}, 5.0)
        finally:
            await pool.close()

    row, served = asyncio.run(read())
    assert row is None and served.versions == {"roads": _versions(loaded_db_url)["roads"]}


def test_requests_never_take_the_answer_of_a_question_sent_before_they_came(
        clone_db: Callable[[], str], settings: Settings) -> None:
    url = clone_db()

    async def scenario() -> tuple[int, list[dict[str, int]]]:
        pool = await _opened(url, settings, 1)
        asked = PrimaryVersions()
        try:
            async with pool.connection():  # the pool's one connection is busy: the first question waits for it
                before = pool.get_stats().get("requests_num", 0)
                first = asyncio.ensure_future(asked.ask(pool))
                for _ in range(200):  # until the first question is on its way (waiting for the connection)
                    if pool.get_stats().get("requests_waiting", 0) == 1:
                        break
                    await asyncio.sleep(0.01)
                # A refresh commits a new version of roads after the first question was sent.
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("UPDATE ops.layer_stats SET changed_refresh_id = changed_refresh_id + 1 "
                                 "WHERE layer_id = 'roads'")
                later = [asyncio.ensure_future(asked.ask(pool)) for _ in range(5)]
                await asyncio.sleep(0.05)
            answers = await asyncio.gather(first, *later)
            return pool.get_stats().get("requests_num", 0) - before, answers
        finally:
            await pool.close()

    questions, answers = asyncio.run(scenario())
    now = _versions(url)
    # The five later requests share one question of their own, sent after the first one came back.
    assert questions == 2
    assert all(answer["roads"] == now["roads"] for answer in answers[1:])


def test_concurrent_requests_share_one_question(loaded_db_url: str, settings: Settings) -> None:
    async def scenario() -> tuple[int, list[dict[str, int]]]:
        pool = await _opened(loaded_db_url, settings, 4)
        asked = PrimaryVersions()
        try:
            before = pool.get_stats().get("requests_num", 0)
            answers = await asyncio.gather(*(asked.ask(pool) for _ in range(50)))
            return pool.get_stats().get("requests_num", 0) - before, answers
        finally:
            await pool.close()

    questions, answers = asyncio.run(scenario())
    assert questions <= 2 and all(answer == _versions(loaded_db_url) for answer in answers)
