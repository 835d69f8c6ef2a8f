"""API key lookups (services.auth.credentials.Auth): cached per process, and looked up once however many requests
ask for an uncached key at the same moment, on a real pool against the test database."""

import asyncio

from conftest import TEST_KEYS
from fastapi import HTTPException

from gis.db.pool import GuardedPool, make_pool
from gis.layers import LayerRegistry
from gis.security.policy import load_policy, policy_path
from gis.security.settings import AuthSettings
from gis.settings import Settings
from services.auth.credentials import Auth, Caller

CONCURRENT = 20


async def _opened(url: str, settings: Settings) -> GuardedPool:
    pool = make_pool(url, settings.model_copy(update={"pool_min_size": 1, "pool_max_size": 4}))
    await pool.open(wait=True)
    await pool.probe_once()
    return pool


def _checkouts(pool: GuardedPool) -> int:
    return pool.get_stats().get("requests_num", 0)


def _auth(registry: LayerRegistry, settings: Settings) -> Auth:
    return Auth(AuthSettings(key_cache_seconds=4), load_policy(policy_path(settings.layers_dir), registry))


def test_requests_at_once_with_an_uncached_key_look_it_up_once(
        loaded_db_url: str, settings: Settings, registry: LayerRegistry) -> None:
    auth = _auth(registry, settings)

    async def run() -> tuple[list[Caller], int, int]:
        pool = await _opened(loaded_db_url, settings)
        try:
            before = _checkouts(pool)
            callers = await asyncio.gather(*(auth.key_caller(pool, TEST_KEYS["planner"], "api-key")
                                             for _ in range(CONCURRENT)))
            first = _checkouts(pool) - before
            await auth.key_caller(pool, TEST_KEYS["planner"], "api-key")  # cached now
            return list(callers), first, _checkouts(pool) - before
        finally:
            await pool.close()

    callers, first, after = asyncio.run(run())
    assert {c.role.name for c in callers} == {"planner"}
    assert first == 1  # one pooled connection for the lookup, not one per request
    assert after == 1


def test_requests_at_once_with_an_unknown_key_are_all_refused_after_one_lookup(
        loaded_db_url: str, settings: Settings, registry: LayerRegistry) -> None:
    auth = _auth(registry, settings)
    unknown = TEST_KEYS["planner"][:-4] + "zzzz"

    async def run() -> tuple[list[BaseException | Caller], int]:
        pool = await _opened(loaded_db_url, settings)
        try:
            before = _checkouts(pool)
            answers = await asyncio.gather(*(auth.key_caller(pool, unknown, "api-key") for _ in range(CONCURRENT)),
                                           return_exceptions=True)
            return list(answers), _checkouts(pool) - before
        finally:
            await pool.close()

    answers, lookups = asyncio.run(run())
    assert all(isinstance(a, HTTPException) and a.status_code == 401 for a in answers)
    assert lookups == 1


def test_without_a_cache_period_each_request_looks_its_key_up(
        loaded_db_url: str, settings: Settings, registry: LayerRegistry) -> None:
    auth = Auth(AuthSettings(key_cache_seconds=0), load_policy(policy_path(settings.layers_dir), registry))

    async def run() -> int:
        pool = await _opened(loaded_db_url, settings)
        try:
            before = _checkouts(pool)
            for _ in range(3):  # one after another: each finds the last one's entry already expired
                await auth.key_caller(pool, TEST_KEYS["planner"], "api-key")
            return _checkouts(pool) - before
        finally:
            await pool.close()

    assert asyncio.run(run()) == 3
