"""Reads go to a standby when it has the layer's current version, else to the primary.

The rule that keeps anyone from seeing a layer go back in time: before a layer read, the primary is asked
for the layer's change version (ops.layer_stats.changed_refresh_id, a tiny indexed lookup); the standby
then serves only if the snapshot it reads in has at least that version. Whatever a client saw before
(from any node) was committed before that question, so it is never newer than what is served.

Each read runs in one REPEATABLE READ transaction: the versions reported (the response's
X-Layer-Version header) and the body come from one snapshot.

Failures: a standby whose breaker is open, that lags past `read_max_lag_s`, or whose connection breaks
mid-read is left for the primary (one retry there, so a stopped standby costs no request). With the
primary unreachable, a standby serves what it has replayed: public reads go on; writes (audit rows
included, so restricted reads) fail with DatabaseUnavailable -> 503.
"""

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from gis.db.pool import GuardedPool

type Work[T] = Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]

# One row always: is this server a standby, and the layers' versions it sees. A raster layer's version is the
# refresh that made its newest version (ops.raster_versions): coverages are routed like vector layers.
_VERSIONS_OF = ("SELECT pg_is_in_recovery(), array_agg(layer_id), array_agg(version) FROM ("
                "SELECT layer_id, changed_refresh_id AS version FROM ops.layer_stats WHERE layer_id = ANY(%(layers)s) "
                "UNION ALL SELECT layer_id, max(refresh_id) FROM ops.raster_versions WHERE layer_id = ANY(%(layers)s) "
                "GROUP BY layer_id) v")
_ALL_VERSIONS = ("SELECT pg_is_in_recovery(), array_agg(layer_id), array_agg(version) FROM ("
                 "SELECT layer_id, changed_refresh_id AS version FROM ops.layer_stats "
                 "UNION ALL SELECT layer_id, max(refresh_id) FROM ops.raster_versions GROUP BY layer_id) v")


@dataclass
class Served:
    """Which server answered ("primary" or "standby") and the layer versions in the snapshot it read."""

    server: str = ""  # what the server was, not which pool: a standbys' URL may fall back to the primary
    versions: dict[str, int] = field(default_factory=dict)


async def _versions(conn: psycopg.AsyncConnection[Any], layers: Sequence[str]) -> tuple[bool, dict[str, int]]:
    """(is this server a standby, {layer: version})."""
    if layers:
        cursor = await conn.execute(_VERSIONS_OF, {"layers": list(layers)}, prepare=True)
    else:
        cursor = await conn.execute(_ALL_VERSIONS, prepare=True)
    row = await cursor.fetchone()
    assert row is not None
    standby, names, versions = row
    return bool(standby), {str(n): int(v) for n, v in zip(names or [], versions or [], strict=True)}


async def _run[T](pool: GuardedPool, layers: Sequence[str], work: Work[T],
                  needed: dict[str, int] | None) -> tuple[T, Served] | None:
    """work(conn) in one snapshot with the versions read first; None if this server's versions are too old."""
    async with AsyncExitStack() as stack:
        found = await _open(stack, pool, layers, needed)
        if found is None:
            return None
        conn, served = found
        return await work(conn), served


def _broken(exc: psycopg.Error) -> bool:
    """A server or connection failure (try elsewhere), not the query's own fault."""
    return isinstance(exc, psycopg.OperationalError) and not isinstance(exc, psycopg.errors.QueryCanceled)


async def run_read[T](primary: GuardedPool, standby: GuardedPool | None, layers: Sequence[str], work: Work[T],
                      max_lag_s: float) -> tuple[T, Served]:
    """Run `work` on a connection that sees at least the primary's current versions of `layers` (every layer
    when empty); returns its result and what served it. Errors of the query itself propagate unchanged."""
    if standby is not None and standby.available and (standby.lag_seconds or 0.0) <= max_lag_s:
        needed: dict[str, int] | None = None
        if primary.available:
            try:
                async with primary.connection() as conn:
                    needed = (await _versions(conn, layers))[1]
            except psycopg.Error as exc:
                if not _broken(exc):
                    raise
        for attempt in (1, 2):  # a connection the server closed is dropped by the pool; its next one is new
            try:
                found = await _run(standby, layers, work, needed)
                if found is not None:
                    return found
                break
            except psycopg.Error as exc:
                if not _broken(exc) or (attempt == 2 and not primary.available):
                    raise
                await _drop_broken(standby)
    for attempt in (1, 2):
        try:
            found = await _run(primary, layers, work, None)
            assert found is not None
            return found
        except psycopg.Error as exc:
            if not _broken(exc) or attempt == 2:
                raise
            await _drop_broken(primary)
    raise AssertionError("unreachable")


async def _open(stack: AsyncExitStack, pool: GuardedPool, layers: Sequence[str], needed: dict[str, int] | None
                ) -> tuple[psycopg.AsyncConnection[Any], Served] | None:
    """A connection of `pool` in its snapshot (held by `stack`); None if its versions are older than needed."""
    conn = await stack.enter_async_context(pool.connection())
    await stack.enter_async_context(conn.transaction())
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    standby, seen = await _versions(conn, layers)
    if needed and any(seen.get(layer, -1) < version for layer, version in needed.items()):
        return None
    return conn, Served("standby" if standby else "primary", seen)


@asynccontextmanager
async def read_connection(primary: GuardedPool, standby: GuardedPool | None, layers: Sequence[str],
                          max_lag_s: float) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], Served]]:
    """As run_read, for a read that outlives one call (a download streamed as it is read): the connection, in one
    snapshot with at least the primary's versions of `layers`, held until the block ends. The same choice of
    server; a standby that fails before the block starts is left for the primary, never once it has begun."""
    if standby is not None and standby.available and (standby.lag_seconds or 0.0) <= max_lag_s:
        needed: dict[str, int] | None = None
        if primary.available:
            try:
                async with primary.connection() as conn:
                    needed = (await _versions(conn, layers))[1]
            except psycopg.Error as exc:
                if not _broken(exc):
                    raise
        stack = AsyncExitStack()
        try:
            found = await _open(stack, standby, layers, needed)
        except psycopg.Error as exc:
            await stack.aclose()
            if not _broken(exc) or not primary.available:
                raise
            await _drop_broken(standby)
            found = None
        if found is not None:
            async with stack:
                yield found
            return
        await stack.aclose()
    async with AsyncExitStack() as stack:
        found = await _open(stack, primary, layers, None)
        assert found is not None
        yield found


async def _drop_broken(pool: GuardedPool) -> None:
    """After one broken connection the others of that server are likely broken too (it restarted): the pool
    tests its idle ones now, so the retry gets a working one. Never with the breaker open (a silent server)."""
    if pool.available:
        await pool.check()
