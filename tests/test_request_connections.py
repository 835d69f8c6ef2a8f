"""The service's request connections (gis.db.pool.make_pool) on the real database: startup options.

A request's query runs without parallel workers unless the settings ask for them: on a service answering
many requests at once, starting workers costs more than the query (an as-of download planned with two
workers took 99 ms, without 11 ms), while the cluster's own value stays for jobs and analyses.
"""

import asyncio

import psycopg

from gis.db.pool import make_pool
from gis.settings import Settings

FORCED_PARALLEL = ("SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; "
                   "SET min_parallel_index_scan_size = 0")


def _on_a_request_connection(url: str, settings: Settings, statement_timeout_ms: int = 0) -> tuple[str, str, str]:
    """max_parallel_workers_per_gather, statement_timeout and the plan of a count over a table, as a request
    connection of the service's pool sees them (with parallel plans made as cheap as they can be)."""
    async def read() -> tuple[str, str, str]:
        pool = make_pool(url, settings.model_copy(update={"pool_min_size": 1, "pool_max_size": 1}),
                         statement_timeout_ms)
        await pool.open(wait=True)
        await pool.probe_once()  # closes the breaker, as the app's lifespan does
        try:
            async with pool.connection() as conn:
                workers = await (await conn.execute("SHOW max_parallel_workers_per_gather")).fetchone()
                timeout = await (await conn.execute("SHOW statement_timeout")).fetchone()
                await conn.execute(FORCED_PARALLEL)
                plan = await (await conn.execute("EXPLAIN SELECT count(*) FROM base.roads")).fetchall()
                await conn.execute("RESET ALL")
                return str(workers[0]), str(timeout[0]), "\n".join(r[0] for r in plan)
        finally:
            await pool.close()

    return asyncio.run(read())


def test_a_request_runs_without_parallel_workers(loaded_db_url: str, settings: Settings) -> None:
    with psycopg.connect(loaded_db_url, autocommit=True) as conn:  # a job's connection: the cluster's value
        cluster = conn.execute("SHOW max_parallel_workers_per_gather").fetchone()[0]
        conn.execute(FORCED_PARALLEL)
        job_plan = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT count(*) FROM base.roads").fetchall())
    assert cluster != "0" and "Gather" in job_plan  # else this test could not tell the two apart

    workers, timeout, plan = _on_a_request_connection(loaded_db_url, settings, statement_timeout_ms=4000)
    assert workers == "0" and "Gather" not in plan
    assert timeout == "4s"  # both startup options reach the server


def test_the_settings_may_give_requests_parallel_workers(loaded_db_url: str, settings: Settings) -> None:
    workers, _timeout, plan = _on_a_request_connection(
        loaded_db_url, settings.model_copy(update={"db_request_parallel_workers": 2}))
    assert workers == "2" and "Gather" in plan
