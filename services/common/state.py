"""What every router needs, built once by create_app and reached through a dependency."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import Request

from gis.db.pool import GuardedPool
from gis.db.routing import Served, Work, read_connection, run_read
from gis.layers import LayerRegistry
from gis.settings import Settings

# The served versions of the request being answered: set (to a fresh Served) by services.common.serving's middleware,
# filled by AppState.read, turned into the X-Layer-Version header. A mutable holder, so it crosses tasks.
SERVED: ContextVar[Served | None] = ContextVar("served", default=None)


@dataclass(frozen=True)
class AppState:
    settings: Settings
    registry: LayerRegistry
    pool: GuardedPool  # the primary: every write (audit rows, jobs, keys, readings) and reads that need it
    read_pool: GuardedPool | None = None  # standbys (GIS_DATABASE_READ_URL); None: reads use the primary

    async def read[T](self, layers: Sequence[str], work: Work[T]) -> T:
        """work(conn) for a read of these layers (every layer when empty), on a standby that has their current
        versions or else the primary, in one snapshot (gis.db.routing). The version served becomes the
        response's X-Layer-Version header."""
        result, served = await run_read(self.pool, self.read_pool, layers, work, self.settings.read_max_lag_s)
        _report(served, layers)
        return result

    @asynccontextmanager
    async def reading(self, layers: Sequence[str]) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """As read, for a read streamed while it is read (a CSV download): a routed connection in one snapshot,
        held until the block ends."""
        async with read_connection(self.pool, self.read_pool, layers, self.settings.read_max_lag_s) as (conn, served):
            _report(served, layers)
            yield conn


def _report(served: Served, layers: Sequence[str]) -> None:
    """What served the request, for its X-Served-By and X-Layer-Version headers."""
    holder = SERVED.get()
    if holder is not None:
        holder.server = served.server
        holder.versions.update(served.versions if layers else {})


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.gis
    return state
