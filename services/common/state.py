"""What every router needs, built once by create_app and reached through a dependency."""

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from gis.db.pool import GuardedPool
from gis.db.routing import Served, Work, run_read, run_row
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

    async def read_row(self, layers: Sequence[str], query: Any, params: Mapping[str, object],
                       binary: bool = False) -> tuple[Any, ...] | None:
        """One statement's one row (None: it found none), read as `read` reads, in one round trip."""
        row, served = await run_row(self.pool, self.read_pool, layers, query, params, self.settings.read_max_lag_s,
                                    binary)
        _report(served, layers)
        return row


def _report(served: Served, layers: Sequence[str]) -> None:
    holder = SERVED.get()
    if holder is not None:
        holder.server = served.server
        holder.versions.update(served.versions if layers else {})


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.gis
    return state
