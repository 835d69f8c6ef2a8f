"""Reads go to a standby when it has the layer's current version, else to the primary.

The rule that keeps anyone from seeing a layer go back in time: before a standby read, the primary is asked
for the layers' change versions (ops.layer_stats.changed_refresh_id, one tiny table); the standby then
serves only if the snapshot it reads in has at least those versions. Whatever a client saw before (from any
node) was committed before that question was sent, so it is never newer than what is served.

Concurrent requests of one process share that question (`PrimaryVersions`): a request joins a question
not yet sent, never one already on its way (which may have left before the client saw a newer version).
Under load this is one primary round trip per round trip, not one per request, with no staleness at all:
nothing is kept after the answer, so nothing in one process can disagree with another.

Each read comes from one snapshot, so the versions reported (the response's X-Layer-Version header) and the
body agree: `run_row` (one statement, one row: a page, an item, a tile) asks for the versions and the row
in one statement, one round trip; `run_read` (any work) runs it in one REPEATABLE READ transaction.

Failures: a standby whose breaker is open, that lags past `read_max_lag_s`, or whose connection breaks
mid-read is left for the primary (one retry there, so a stopped standby costs no request). With the
primary unreachable, a standby serves what it has replayed: public reads go on; writes (audit rows
included, so restricted reads) fail with DatabaseUnavailable -> 503.
"""

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import PoolTimeout, TooManyRequests

from gis.db.pool import DatabaseUnavailable, GuardedPool

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
# One statement, one snapshot: the versions (as _VERSIONS_OF), then whether the work found a row, then the work's
# columns. The work is a subquery that refers to nothing outside it, so its plan is its own (run once, for v's row).
_ROW_WITH_VERSIONS = sql.SQL(
    "SELECT v.standby, v.names, v.versions, w.* FROM (SELECT pg_is_in_recovery() AS standby, "
    "array_agg(layer_id) AS names, array_agg(version) AS versions FROM ("
    "SELECT layer_id, changed_refresh_id AS version FROM ops.layer_stats{where} "
    "UNION ALL SELECT layer_id, max(refresh_id) FROM ops.raster_versions{where} GROUP BY layer_id) AS lv) AS v "
    "LEFT JOIN LATERAL (SELECT true AS found, x.* FROM ({work}) AS x) AS w ON true")
_LAYERS_PARAMETER = "gis_read_layers"
# The row of _ROW_WITH_VERSIONS as `r`, and a write that reads it (an audit row), in the same statement: one round
# trip and one commit, on the primary. A data-modifying WITH runs to completion whether or not it is read.
_ROW_THEN = sql.SQL("WITH r AS ({row}), then_write AS ({then}) SELECT * FROM r")


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


def _broken(exc: psycopg.Error) -> bool:
    """A server or connection failure (try elsewhere), not the query's own fault, nor a busy pool: a request
    shed or timed out in the queue for a connection (TooManyRequests, PoolTimeout) is answered 503 busy at once.
    Retried, it waited its bound twice and had the busy pool check every idle connection (p99 3.8 s at 64
    connections, load 20, with the 1.5 s bound of then)."""
    if isinstance(exc, TooManyRequests) or (isinstance(exc, PoolTimeout) and not isinstance(exc, DatabaseUnavailable)):
        return False
    return isinstance(exc, psycopg.OperationalError) and not isinstance(exc, psycopg.errors.QueryCanceled)


class PrimaryVersions:
    """The primary's current layer versions, asked once for every request waiting at the time.

    A request joins the question that has not been sent yet, or sends one when none is on its way; it never
    takes the answer of a question sent before it arrived. So the answer is at least as new as anything any
    client had seen when the request arrived, as if the request had asked itself, and concurrent requests
    share one round trip. Nothing outlives the answer.
    """

    def __init__(self) -> None:
        self._sent: asyncio.Task[dict[str, int]] | None = None  # on its way to the primary
        self._waiting: asyncio.Task[dict[str, int]] | None = None  # to be sent when the one on its way is back

    async def ask(self, pool: GuardedPool) -> dict[str, int]:
        if self._sent is None or self._sent.done():
            self._sent = asyncio.ensure_future(self._question(pool))
            task = self._sent
        else:
            if self._waiting is None:
                self._waiting = asyncio.ensure_future(self._after(self._sent, pool))
            task = self._waiting
        # shielded: a request that gives up (a client gone) does not cancel the others' question
        return await asyncio.shield(task)

    async def _after(self, previous: asyncio.Task[dict[str, int]], pool: GuardedPool) -> dict[str, int]:
        await asyncio.wait([previous])
        self._sent, self._waiting = self._waiting, None  # from here on, new requests wait for the next one
        return await self._question(pool)

    @staticmethod
    async def _question(pool: GuardedPool) -> dict[str, int]:
        async with pool.connection() as conn:
            return (await _versions(conn, ()))[1]


_PRIMARY_VERSIONS: "weakref.WeakKeyDictionary[GuardedPool, PrimaryVersions]" = weakref.WeakKeyDictionary()


async def _needed(primary: GuardedPool) -> dict[str, int] | None:
    """The primary's versions (None when it cannot be asked: the standby then serves what it has)."""
    if not primary.available:
        return None
    asked = _PRIMARY_VERSIONS.get(primary)
    if asked is None:
        asked = _PRIMARY_VERSIONS[primary] = PrimaryVersions()
    try:
        return await asked.ask(primary)
    except psycopg.Error as exc:
        if not _broken(exc):
            raise
        return None


def _too_old(seen: dict[str, int], needed: dict[str, int] | None, layers: Sequence[str]) -> bool:
    if not needed:
        return False
    asked = layers or needed.keys()
    return any(seen.get(layer, -1) < needed[layer] for layer in asked if layer in needed)


async def _on_servers[T](primary: GuardedPool, standby: GuardedPool | None, max_lag_s: float,
                         attempt_on: Callable[[GuardedPool, dict[str, int] | None], Awaitable[tuple[T, Served] | None]],
                         ) -> tuple[T, Served]:
    """attempt_on(standby, needed) when a standby may serve, else (or when it is too old) attempt_on(primary,
    None); a broken connection is retried once (the pool drops it; its next one is new)."""
    if standby is not None and standby.available and (standby.lag_seconds or 0.0) <= max_lag_s:
        needed = await _needed(primary)
        for attempt in (1, 2):
            try:
                found = await attempt_on(standby, needed)
                if found is not None:
                    return found
                break
            except psycopg.Error as exc:
                if not _broken(exc) or (attempt == 2 and not primary.available):
                    raise
                await _drop_broken(standby)
    for attempt in (1, 2):
        try:
            found = await attempt_on(primary, None)
            assert found is not None
            return found
        except psycopg.Error as exc:
            if not _broken(exc) or attempt == 2:
                raise
            await _drop_broken(primary)
    raise AssertionError("unreachable")


async def run_read[T](primary: GuardedPool, standby: GuardedPool | None, layers: Sequence[str], work: Work[T],
                      max_lag_s: float) -> tuple[T, Served]:
    """Run `work` on a connection that sees at least the primary's current versions of `layers` (every layer
    when empty); returns its result and what served it. Errors of the query itself propagate unchanged."""
    async def attempt(pool: GuardedPool, needed: dict[str, int] | None) -> tuple[T, Served] | None:
        async with AsyncExitStack() as stack:
            found = await _open(stack, pool, layers, needed)
            if found is None:
                return None
            conn, served = found
            return await work(conn), served

    return await _on_servers(primary, standby, max_lag_s, attempt)


async def _open(stack: AsyncExitStack, pool: GuardedPool, layers: Sequence[str], needed: dict[str, int] | None
                ) -> tuple[psycopg.AsyncConnection[Any], Served] | None:
    """A connection of `pool` in its snapshot (held by `stack`); None if its versions are older than needed."""
    conn = await stack.enter_async_context(pool.connection())
    await stack.enter_async_context(conn.transaction())
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    standby, seen = await _versions(conn, layers)
    if _too_old(seen, needed, layers):
        return None
    return conn, Served("standby" if standby else "primary", seen)


@asynccontextmanager
async def read_connection(primary: GuardedPool, standby: GuardedPool | None, layers: Sequence[str],
                          max_lag_s: float) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], Served]]:
    """As run_read, for a read that outlives one call (a download streamed as it is read): the connection, in one
    snapshot with at least the primary's versions of `layers`, held until the block ends. The same choice of
    server; a standby that fails before the block starts is left for the primary, never once it has begun."""
    if standby is not None and standby.available and (standby.lag_seconds or 0.0) <= max_lag_s:
        needed = await _needed(primary)
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


_wrapped: dict[tuple[bytes, bool, bytes | None], bytes] = {}
_WRAPPED_MAX = 4096


def row_statement(query: sql.Composable | bytes | str, every_layer: bool, then: bytes | None = None) -> bytes:
    """The work's statement inside _ROW_WITH_VERSIONS (its layers as %(gis_read_layers)s unless every_layer),
    followed by the write `then` (which reads that row as `r`) when given; rendered once per statement shape."""
    if isinstance(query, str):
        query = query.encode()
    work = query if isinstance(query, bytes) else query.as_bytes(None)
    key = (work, every_layer, then)
    found = _wrapped.get(key)
    if found is None:
        where = sql.SQL("") if every_layer else sql.SQL(" WHERE layer_id = ANY({})").format(
            sql.Placeholder(_LAYERS_PARAMETER))
        row = _ROW_WITH_VERSIONS.format(where=where, work=sql.SQL(work.decode()))
        found = (row if then is None else _ROW_THEN.format(row=row, then=sql.SQL(then.decode()))).as_bytes(None)
        if len(_wrapped) >= _WRAPPED_MAX:
            _wrapped.clear()
        _wrapped[key] = found
    return found


async def run_row(primary: GuardedPool, standby: GuardedPool | None, layers: Sequence[str],
                  query: sql.Composable | bytes | str, params: Mapping[str, object], max_lag_s: float,
                  binary: bool = False, then: tuple[bytes, Mapping[str, object]] | None = None
                  ) -> tuple[tuple[Any, ...] | None, Served]:
    """One read-only statement with named parameters that returns at most one row: that row (None when it
    finds none) and what served it. The same promise as run_read in one statement and one round trip: the
    versions and the row come from the statement's one snapshot, with no transaction to open or close.

    `then` (a statement that reads the row as `r`, and its parameters) is written by the same statement, so it
    is committed before the row is returned, or neither is; the read then goes to the primary (a standby
    takes no writes)."""
    statement = row_statement(query, not layers, then[0] if then else None)
    values = {**params, _LAYERS_PARAMETER: list(layers)} if layers else dict(params)
    if then is not None:
        values.update(then[1])
        standby = None

    async def attempt(pool: GuardedPool, needed: dict[str, int] | None) -> tuple[tuple[Any, ...] | None, Served] | None:
        async with pool.connection() as conn:
            cursor = await conn.execute(statement, values, prepare=True, binary=binary)
            row = await cursor.fetchone()
        assert row is not None  # v always has its one row
        standby, names, versions = row[0], row[1], row[2]
        seen = {str(n): int(v) for n, v in zip(names or [], versions or [], strict=True)}
        if _too_old(seen, needed, layers):
            return None
        return (tuple(row[4:]) if row[3] else None), Served("standby" if standby else "primary", seen)

    return await _on_servers(primary, standby, max_lag_s, attempt)


async def _drop_broken(pool: GuardedPool) -> None:
    """After one broken connection the others of that server are likely broken too (it restarted): the pool
    tests its idle ones now, so the retry gets a working one. Never with the breaker open (a silent server)."""
    if pool.available:
        await pool.check()
