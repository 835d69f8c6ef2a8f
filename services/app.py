"""create_app(settings) -> FastAPI. Nothing is read from the environment or connected at import."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gis.db.cluster import database_url
from gis.db.pool import make_pool
from gis.layers import load_registry
from gis.settings import Settings
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

    app = FastAPI(title="时空信息云平台 · Spatio-temporal GIS cloud", lifespan=lifespan)
    app.state.gis = AppState(settings=settings, registry=registry, pool=pool)
    install_error_handlers(app)
    return app
