"""The connection pool the service reads through."""

from psycopg_pool import AsyncConnectionPool

from gis.settings import Settings


def make_pool(url: str, settings: Settings, statement_timeout_ms: int = 0) -> AsyncConnectionPool:
    """Not opened: the caller opens it (the app's lifespan) and closes it.

    statement_timeout_ms > 0 becomes each connection's statement_timeout (a startup option, not SQL): a
    runaway query is cancelled by PostgreSQL itself, wherever in the service it was sent from.
    """
    kwargs: dict[str, object] = {"autocommit": True, "application_name": "gis-api"}
    if statement_timeout_ms > 0:
        kwargs["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
    return AsyncConnectionPool(
        url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        kwargs=kwargs,
        open=False,
    )
