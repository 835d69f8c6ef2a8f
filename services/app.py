"""create_app(settings) -> FastAPI. Nothing is read from the environment or connected at import."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.middleware.gzip import GZipMiddleware

from gis.db.cluster import database_url
from gis.db.pool import make_pool
from gis.layers import load_registry
from gis.security.settings import AuthSettings
from gis.settings import Settings
from services import auth, features, landing, planning, processes, tiles
from services.errors import install_error_handlers
from services.state import AppState


def create_app(settings: Settings, auth_settings: AuthSettings | None = None) -> FastAPI:
    registry = load_registry(settings.layers_dir, settings.styles_dir)
    access = auth.Auth.load(auth_settings or AuthSettings(), settings.layers_dir, registry)
    pool = make_pool(database_url(settings), settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True)
        try:
            yield
        finally:
            await pool.close()

    # The OpenAPI document is served by services.landing at /openapi (OGC's service-desc), with its own HTML.
    # One auth dependency on every route: the caller (or the anonymous role) is known before any handler runs.
    app = FastAPI(title="时空信息云平台 · Spatio-temporal GIS cloud", lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None, dependencies=[Depends(auth.authenticate)])
    app.state.gis = AppState(settings=settings, registry=registry, pool=pool)
    app.state.auth = access
    install_error_handlers(app)
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)
    landing.install(app)
    app.include_router(features.router)
    app.include_router(tiles.router)
    app.include_router(planning.router)
    app.include_router(processes.router)
    app.include_router(auth.router)
    landing.add_conformance(app, *processes.CONFORMANCE)
    for link in processes.LANDING_LINKS:
        landing.add_landing_link(app, link["href"], link["rel"], link["type"], link["title"])
    landing.add_conformance(app, *tiles.CONFORMANCE)
    landing.add_landing_link(app, "/tileMatrixSets", "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes",
                             "application/json", "tile matrix sets")
    app.state.collection_links = [tiles.collection_links]
    return app
