"""GET /healthz (the process answers), GET /readyz (the database answers and its migrations are current),
GET /metrics (Prometheus text). None of them needs credentials; none is in the OpenAPI document.

/readyz answers from the primary pool's probe (gis.db.pool: no request waits on a dead database here either)
and one query of the applied migrations; a load balancer takes a node out while it says 503, with the reason.
"""

import asyncio
import contextlib
import logging
import os
from typing import Any

import psycopg
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response

from gis.db.migrate import migration_files
from gis.db.pool import GuardedPool
from gis.security.disclosure import without_paths
from services.common.serving import Metrics, metrics_text, pool_stats
from services.common.state import AppState, State

LOGGER = logging.getLogger("gis.health")
router = APIRouter(include_in_schema=False)
JOB_QUEUE_SQL = "SELECT status, count(*) FROM ops.jobs WHERE status IN ('accepted', 'running') GROUP BY status"


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok", "pid": os.getpid()}, headers={"Cache-Control": "no-store"})


async def _pending_migrations(pool: GuardedPool) -> list[str]:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT version FROM public.gis_schema_migrations")
        applied = {int(row[0]) for row in await cursor.fetchall()}
    return [name for version, name, _ in migration_files() if version not in applied]


def _pool_report(pool: GuardedPool | None) -> dict[str, Any] | None:
    if pool is None:
        return None
    return {"available": pool.available, **({"reason": pool.breaker.reason} if not pool.available else {}),
            "lag_seconds": pool.lag_seconds, **pool_stats(pool)}


@router.get("/readyz")
async def readyz(state: State) -> JSONResponse:
    body: dict[str, Any] = {"primary": _pool_report(state.pool), "standbys": _pool_report(state.read_pool)}
    reason = None
    if not state.pool.available:
        reason = f"the primary database cannot be reached: {state.pool.breaker.reason}"
    else:
        try:
            pending = await _pending_migrations(state.pool)
        except psycopg.errors.UndefinedTable:
            pending = ["all (the database has never been migrated)"]
        except psycopg.OperationalError as exc:
            pending, reason = [], ("the primary database cannot be reached: "
                                   + without_paths(str(exc).strip().splitlines()[0]))
        if pending:
            reason = f"migrations not applied: {', '.join(pending)} (run 'gis migrate')"
    body["status"] = "ready" if reason is None else "unavailable"
    if reason:
        body["reason"] = reason
    return JSONResponse(body, 200 if reason is None else 503, headers={"Cache-Control": "no-store"})


@router.get("/metrics")
async def metrics(state: State) -> Response:
    content, media_type = metrics_text(state.metrics)
    return Response(content, media_type=media_type, headers={"Cache-Control": "no-store"})


async def _job_queue(pool: GuardedPool) -> dict[str, int]:
    async with pool.connection() as conn:
        cursor = await conn.execute(JOB_QUEUE_SQL)
        return {str(status): int(n) for status, n in await cursor.fetchall()}


async def gauges_loop(state: AppState, metrics: Metrics, interval_s: float = 2.0) -> None:
    """Pool use, availability and standby lag every interval, the job queue every fifth."""
    tick = 0
    while True:
        for name, pool in (("primary", state.pool), ("standby", state.read_pool)):
            if pool is None:
                continue
            for kind, value in pool_stats(pool).items():
                metrics.pool.labels(name, kind).set(value)
            metrics.available.labels(name).set(1 if pool.available else 0)
            if pool.lag_seconds is not None:
                metrics.lag.labels(name).set(pool.lag_seconds)
        if tick % 5 == 0 and state.pool.available:
            with contextlib.suppress(psycopg.Error):
                queue = await _job_queue(state.pool)
                for status in ("accepted", "running"):
                    metrics.jobs.labels(status).set(queue.get(status, 0))
        tick += 1
        await asyncio.sleep(interval_s)


def install(app: FastAPI) -> None:
    app.include_router(router)
