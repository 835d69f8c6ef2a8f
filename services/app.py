"""create_app(settings) -> FastAPI. Nothing is read from the environment or connected at import."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware

from gis.db.cluster import database_url
from gis.db.pool import make_pool
from gis.layers import load_registry
from gis.settings import Settings
from services import features, landing, planning, processes, tiles
from services.errors import install_error_handlers
from services.state import AppState


def create_app(settings: Settings) -> FastAPI:
    registry = load_registry(settings.layers_dir, settings.styles_dir)
    pool = make_pool(database_url(settings), settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True)
        try:
            yield
        finally:
            await pool.close()

    # The OpenAPI document is served by services.landing at /openapi (OGC's service-desc), with its own HTML.
    app = FastAPI(title="时空信息云平台 · Spatio-temporal GIS cloud", lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.gis = AppState(settings=settings, registry=registry, pool=pool)
    install_error_handlers(app)
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)
    landing.install(app)
    app.include_router(features.router)
    app.include_router(tiles.router)
    app.include_router(planning.router)
    app.include_router(processes.router)
    landing.add_conformance(app, *processes.CONFORMANCE)
    for link in processes.LANDING_LINKS:
        landing.add_landing_link(app, link["href"], link["rel"], link["type"], link["title"])
    landing.add_conformance(app, *tiles.CONFORMANCE)
    landing.add_landing_link(app, "/tileMatrixSets", "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes",
                             "application/json", "tile matrix sets")
    app.state.collection_links = [tiles.collection_links]
    return app
