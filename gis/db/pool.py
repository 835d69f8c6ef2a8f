"""The connection pool the service reads through."""

from psycopg_pool import AsyncConnectionPool

from gis.settings import Settings


def make_pool(url: str, settings: Settings) -> AsyncConnectionPool:
    """Not opened: the caller opens it (the app's lifespan) and closes it."""
    return AsyncConnectionPool(
        url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        kwargs={"autocommit": True, "application_name": "gis-api"},
        open=False,
    )
