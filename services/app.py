"""create_app(settings) -> FastAPI. Nothing is read from the environment or connected at import."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.middleware.gzip import GZipMiddleware

from gis.db.cluster import database_url
from gis.db.pool import make_pool
from gis.jobs.settings import JobSettings
from gis.project import load_project
from gis.security.settings import AuthSettings, HttpSettings
from gis.settings import ServeSettings, Settings
from services.auth.credentials import Auth
from services.auth.visibility import RowAreas
from services.common import input_guard, limits
from services.common.encoded_paths import EncodedSlashes
from services.common.errors import install_error_handlers
from services.common.headers import SecurityHeaders
from services.common.serving import Metrics, RequestContext, RootPathLinks, configure_logging
from services.common.state import AppState
from services.common.tile_cache import TileCache
from services.processes import check_derive, make_bridge
from services.routers import (
    audit,
    catalog,
    coverages,
    dataset_tiles,
    deliveries,
    downloads,
    edits,
    features,
    health,
    landing,
    map_tiles,
    planning,
    processes,
    sensing,
    tiles,
    web_map,
)


def create_app(settings: Settings, auth_settings: AuthSettings | None = None,
               http_settings: HttpSettings | None = None, serve_settings: ServeSettings | None = None,
               job_settings: JobSettings | None = None) -> FastAPI:
    http = http_settings or HttpSettings()
    serve = serve_settings or ServeSettings()
    auth = auth_settings or AuthSettings()
    jobs = job_settings or JobSettings()
    configure_logging(serve)
    # Every file the service runs on, read and checked once, here: a broken one stops the start, naming it.
    project = load_project(settings, auth.policy_file)
    check_derive(project.policy, project.overlap_rules)
    pool = make_pool(database_url(settings), settings, http.statement_timeout_ms)
    read_pool = (make_pool(settings.database_read_url, settings, http.statement_timeout_ms, "gis-api-read", 10.0)
                 if settings.database_read_url else None)
    pools = [p for p in (pool, read_pool) if p is not None]
    metrics = Metrics()
    bridge = make_bridge(settings, project)
    state = AppState(settings=settings, project=project, pool=pool, read_pool=read_pool,
                     auth=Auth(auth, project.policy), row_areas=RowAreas(), guard=limits.Guard.from_settings(http),
                     metrics=metrics, jobs=jobs, tile_cache=TileCache(settings.tile_cache_mib * 2**20),
                     processes=bridge,
                     map_styles=web_map.load_styles(project.registry, settings.styles_dir))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Never waits for a database: the service starts without one and /readyz says why (gis.db.pool).
        for each in pools:
            await each.open(wait=False)
        await asyncio.gather(*(each.probe_once() for each in pools))
        for each in pools:
            each.start_probe()
        gauges = asyncio.get_running_loop().create_task(health.gauges_loop(state, metrics))
        try:
            # The processes' pool follows the service's breaker (503 at once while the database is away); the
            # breaker's probe checks its followers, so it follows only now, as it is about to be opened.
            bridge.context.pool.follow(pool)
            await run_in_threadpool(bridge.open, jobs, jobs.in_service)
            try:
                yield
            finally:
                await run_in_threadpool(bridge.close)
        finally:
            gauges.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gauges
            for each in pools:
                await each.stop_probe()
                await each.close()

    # The OpenAPI document is served by services.routers.landing at /openapi (OGC's service-desc), with its own
    # HTML. One auth dependency on every route: the caller (or the anonymous role) is known before any handler
    # runs, and held to its rate limit.
    app = FastAPI(title="时空信息云平台 · Spatio-temporal GIS cloud", lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None,
                  dependencies=[Depends(limits.authenticate), Depends(input_guard.check_request)])
    app.state.gis = state  # the one attribute: everything per app is a typed field of AppState
    install_error_handlers(app)
    # Outermost last: gzip sees the final bytes.
    app.add_middleware(EncodedSlashes)  # innermost: ids with an encoded slash reach their route
    app.add_middleware(RootPathLinks)  # HTML links under the root path
    app.add_middleware(input_guard.EmptyValuesLeftOut)
    app.add_middleware(limits.BodyLimit, max_body_bytes=http.max_body_bytes, max_upload_bytes=http.max_upload_bytes)
    app.add_middleware(SecurityHeaders, cors_origins=http.cors_origins)
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)
    app.add_middleware(RequestContext, settings=serve, metrics=metrics)  # outermost: ids, logs, proxy, metrics
    health.install(app)
    landing.install(app)
    for resource in (features, edits, downloads, catalog, tiles, dataset_tiles, coverages, map_tiles, planning, sensing,
                     deliveries, processes, audit):
        app.include_router(resource.router)
    web_map.install(app)
    landing.add_landing_link(app, web_map.LANDING_LINK["href"], web_map.LANDING_LINK["rel"],
                             web_map.LANDING_LINK["type"], web_map.LANDING_LINK["title"])
    landing.add_conformance(app, *processes.CONFORMANCE)
    for link in processes.LANDING_LINKS:
        landing.add_landing_link(app, link["href"], link["rel"], link["type"], link["title"])
    landing.add_conformance(app, *tiles.CONFORMANCE)
    landing.add_conformance(app, *coverages.CONFORMANCE, *map_tiles.CONFORMANCE)
    landing.add_landing_link(app, dataset_tiles.LANDING_LINK["href"], dataset_tiles.LANDING_LINK["rel"],
                             dataset_tiles.LANDING_LINK["type"], dataset_tiles.LANDING_LINK["title"])
    landing.add_landing_link(app, "/tileMatrixSets", "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes",
                             "application/json", "tile matrix sets")
    landing.add_conformance(app, *catalog.CONFORMANCE)
    landing.add_conformance(app, *edits.CONFORMANCE)
    landing.add_landing_link(app, catalog.LANDING_LINK["href"], catalog.LANDING_LINK["rel"],
                             catalog.LANDING_LINK["type"], catalog.LANDING_LINK["title"])
    state.discovery.collection_links.extend((tiles.collection_links, downloads.collection_links))
    return app
