"""The application's one typed state: the project and everything else per app, built once by create_app and
reached through a dependency (`State` or `ProjectState` in a route's signature; `app_state(request)` in the
request-scoped machinery every route shares: authentication, visibility, the audit, error handlers)."""

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, Request

from gis.db.pool import GuardedPool
from gis.db.routing import Served, Work, read_connection, run_read, run_row
from gis.jobs.settings import JobSettings
from gis.layers import LayerRegistry
from gis.map_style import LayerStyle
from gis.project import Project
from gis.settings import Settings

if TYPE_CHECKING:  # each of these modules reaches the state through app_state: imported for the types only
    from services.auth.credentials import Auth
    from services.auth.visibility import RowAreas
    from services.common.limits import Guard
    from services.common.serving import Metrics
    from services.common.tile_cache import TileCache
    from services.processes.pygeoapi_bridge import Bridge

# The served versions of the request being answered: set (to a fresh Served) by services.common.serving's
# middleware, filled by AppState.read, turned into the X-Layer-Version header. A mutable holder, so it crosses
# tasks.
SERVED: ContextVar[Served | None] = ContextVar("served", default=None)

type Link = dict[str, str]


@dataclass
class Discovery:
    """What the landing page, /conformance and each collection document list beyond their own: filled in by
    create_app as it installs the routers (services.routers.landing's add_landing_link and add_conformance)."""

    landing_links: list[Link] = field(default_factory=list)
    conformance: list[str] = field(default_factory=list)
    # (service base URL, layer id) -> that collection's links to another router's resources (tiles, downloads)
    collection_links: list[Callable[[str, str], list[Link]]] = field(default_factory=list)


@dataclass(frozen=True)
class AppState:
    settings: Settings
    project: Project
    pool: GuardedPool  # the primary: every write (audit rows, jobs, keys, readings) and reads that need it
    read_pool: GuardedPool | None  # standbys (GIS_DATABASE_READ_URL); None: reads use the primary
    auth: "Auth"
    row_areas: "RowAreas"
    guard: "Guard"
    metrics: "Metrics"
    jobs: JobSettings
    tile_cache: "TileCache"
    processes: "Bridge"
    map_styles: Mapping[str, LayerStyle]  # layer id -> the web map's style layers, converted from its QML
    discovery: Discovery = field(default_factory=Discovery)

    @property
    def registry(self) -> LayerRegistry:
        return self.project.registry

    async def read[T](self, layers: Sequence[str], work: Work[T]) -> T:
        """work(conn) for a read of these layers (every layer when empty), on a standby that has their current
        versions or else the primary, in one snapshot (gis.db.routing). The version served becomes the
        response's X-Layer-Version header."""
        result, served = await run_read(self.pool, self.read_pool, layers, work, self.settings.read_max_lag_s)
        _report(served, layers)
        return result

    async def read_row(self, layers: Sequence[str], query: Any, params: Mapping[str, object],
                       binary: bool = False, then: tuple[bytes, Mapping[str, object]] | None = None
                       ) -> tuple[Any, ...] | None:
        """One statement's one row (None: it found none), read as `read` reads, in one round trip; with `then`, a
        write over that row in the same statement, on the primary (gis.db.routing.run_row)."""
        row, served = await run_row(self.pool, self.read_pool, layers, query, params, self.settings.read_max_lag_s,
                                    binary, then)
        _report(served, layers)
        return row

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


def state_of(app: FastAPI) -> AppState:
    state: AppState = app.state.gis
    return state


def app_state(request: Request) -> AppState:
    """The state, for the request-scoped machinery every route shares (a route takes `State` instead)."""
    return state_of(request.app)


# The dependencies are coroutine functions so FastAPI calls them on the event loop: a plain function it would run in
# its thread pool, two thread switches per request for an attribute read (as parameters.on_loop says).
async def _state(request: Request) -> AppState:
    return state_of(request.app)


async def _project(request: Request) -> Project:
    return state_of(request.app).project


State = Annotated[AppState, Depends(_state)]  # what a route takes to reach the application's state
ProjectState = Annotated[Project, Depends(_project)]  # ... or only the project (registry, policy, rules)
