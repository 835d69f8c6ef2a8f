"""The connection pools the service reads and writes through, made to fail fast and recover fast.

A database that is down, refused or silent must cost a request at most ~2 s, never the 30-60 s of
libpq's and the pool's defaults, and must not keep the service from starting. Three layers do it:

- libpq itself: `connect_timeout` (a connection attempt), TCP keepalives and `tcp_user_timeout` (a
  network that drops packets breaks the connection in seconds instead of the kernel's 15 minutes);
- the pool: the pool opens without waiting for the database. Under a burst, requests queue for a connection
  in arrival order (the pool's FIFO), up to `db_pool_max_waiting` of them per process: one more is shed at
  once (psycopg_pool's TooManyRequests), and one queued for `db_pool_timeout_s` gives up (PoolTimeout); both
  answer 503 "busy" with Retry-After (services/common/errors.py). Every connection busy means the service is
  loaded, not that the database is gone, so neither opens the breaker (only the probe judges that), and the
  wait is bounded by the load, never by an outage: the probe fails queued requests too;
- a circuit breaker per pool, driven by a probe (one tiny query every `db_probe_interval_s` on its own
  connection, bounded on the client side by `db_probe_timeout_s`, so a SIGSTOPped server that still
  accepts TCP is caught too). While it is open every checkout fails at once with DatabaseUnavailable
  (a PoolTimeout, so every existing 503 path handles it), and requests already waiting on the silent
  server, or queued for a connection, are cancelled into the same error. When the probe succeeds again the
  pool drops the connections the outage broke, and the breaker closes: steady answers follow within one probe
  interval.

A restart quicker than a probe interval never opens the breaker, yet breaks every pooled connection. So each
checkout is checked (psycopg_pool's `check` callback, `_checked_at_checkout`): a backend that ended (a restart, a
terminated session) sent its last message and closed, so the idle connection's socket is readable, where a healthy
idle one has nothing to read. One poll(0) per checkout (about 1 us) rather than psycopg_pool's check_connection
round trip (about 430 us measured, a quarter of a one-item request's database time): only a readable socket gets
the round trip, which judges it. A broken one is dropped and the request gets another connection (the pool's
retry, after its backoff of about 1 s), and the pool's other idle connections are checked at once (pool.check()
in the background), so the next requests do not meet them.

For a standby pool the probe also measures replay lag (seconds behind the primary's last commit it has
received), which gis.db.routing uses to leave a standby that lags past `read_max_lag_s`.
"""

import asyncio
import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from gis.settings import Settings

LOGGER = logging.getLogger("gis.db")

# On a standby: how far replay is behind what it has received, in seconds (0 when it has replayed all it has).
# A standby that has received WAL but replayed no transaction since it started has no replay timestamp: it is
# then counted as behind since its start, never as current (NULL would read as "no lag" and keep it serving).
_STANDBY_LAG_SQL = (
    "SELECT pg_is_in_recovery(), CASE WHEN NOT pg_is_in_recovery() "
    "OR pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE extract(epoch FROM now() - coalesce(pg_last_xact_replay_timestamp(), pg_postmaster_start_time())) END"
)


class DatabaseUnavailable(PoolTimeout):
    """The database is known to be unreachable just now (the breaker is open): answered as a 503 at once."""


def connection_kwargs(settings: Settings, application_name: str, statement_timeout_ms: int = 0,
                      serves_requests: bool = False) -> dict[str, Any]:
    """libpq parameters every service connection gets: bounded connect, keepalives, a bounded silent network.
    A connection that `serves_requests` runs its queries without parallel workers unless the settings say how
    many (db_request_parallel_workers)."""
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "application_name": application_name,
        "connect_timeout": int(settings.db_connect_timeout_s),
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
        # Data sent and not acknowledged for this long breaks the connection (a network dropping packets).
        "tcp_user_timeout": int(settings.db_connect_timeout_s * 1000),
    }
    options = []
    if statement_timeout_ms > 0:
        # A startup option, not SQL: a runaway query is cancelled by PostgreSQL itself, wherever it came from.
        options.append(f"-c statement_timeout={int(statement_timeout_ms)}")
    if serves_requests:
        options.append(f"-c max_parallel_workers_per_gather={int(settings.db_request_parallel_workers)}")
    if options:
        kwargs["options"] = " ".join(options)
    return kwargs


class Breaker:
    """Open while the database is known to be unreachable; `reason` says why (for /readyz and the logs)."""

    def __init__(self) -> None:
        self.open = False
        self.reason = "not probed yet"
        self.opened_at: float | None = None

    def trip(self, reason: str) -> bool:
        """Open it; True if it was closed (a new outage)."""
        was_open, self.open, self.reason = self.open, True, reason
        if not was_open:
            self.opened_at = time.monotonic()
        return not was_open

    def close(self) -> bool:
        """Close it; True if it was open (the database is back)."""
        was_open, self.open, self.reason, self.opened_at = self.open, False, "", None
        return was_open


class GuardedPool(AsyncConnectionPool):
    """An AsyncConnectionPool with a circuit breaker and a probe (see the module's docstring).

    Use it as any pool (`async with pool.connection() as conn`); start_probe() after open(), stop_probe()
    before close(). `available`, `breaker.reason`, `lag_seconds` and `is_standby` are the probe's findings.
    """

    def __init__(self, conninfo: str, settings: Settings, name: str, statement_timeout_ms: int = 0,
                 max_lifetime_s: float = 3600.0) -> None:
        super().__init__(
            conninfo, min_size=settings.pool_min_size, max_size=settings.pool_max_size, max_lifetime=max_lifetime_s,
            kwargs=connection_kwargs(settings, name, statement_timeout_ms, serves_requests=True), open=False,
            # A failed attempt is given up at once (no backoff to delay recovery): the pool grows again on demand.
            timeout=settings.db_pool_timeout_s, reconnect_timeout=0, check=self._checked_at_checkout,
            max_waiting=settings.db_pool_max_waiting,
        )
        self.name = name
        self.settings = settings
        self._probe_conninfo = conninfo  # the pool's own `conninfo` may also be a callable; ours is a string
        self.breaker = Breaker()
        self.breaker.trip("not probed yet")
        self.lag_seconds: float | None = None
        self.is_standby: bool | None = None
        self._inflight: dict[asyncio.Task[Any], psycopg.AsyncConnection[Any]] = {}
        self._cancelled: set[asyncio.Task[Any]] = set()
        self._queued: set[asyncio.Task[Any]] = set()  # tasks waiting for a connection
        self._probe_task: asyncio.Task[None] | None = None
        self._probe_conn: psycopg.AsyncConnection[Any] | None = None
        self._probed = False  # the first probe's finding is the starting state, not news for the log
        self.followers: list[GuardedSyncPool] = []  # blocking pools of the same database (see GuardedSyncPool)
        self._sweep_task: asyncio.Task[None] | None = None

    async def _checked_at_checkout(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The pool's `check` callback (see the module's docstring): raises if conn is broken."""
        if not server_has_spoken(conn):
            return
        try:
            await self.check_connection(conn)
        except Exception:
            # One broken connection means the others of its time are broken too (a restart): check them all now.
            if self._sweep_task is None or self._sweep_task.done():
                self._sweep_task = asyncio.get_running_loop().create_task(self.check(), name=f"check {self.name}")
            raise

    @property
    def available(self) -> bool:
        return not self.breaker.open

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self.breaker.open:
            raise DatabaseUnavailable(f"{self.name}: the database cannot be reached ({self.breaker.reason})")
        task = asyncio.current_task()
        queued = task is not None and task not in self._queued  # (a task holding one connection may ask another)
        if task is not None and queued:
            self._queued.add(task)
        try:
            async with super().connection(timeout) as conn:
                if task is not None and queued:
                    self._queued.discard(task)
                if self.breaker.open:  # handed a connection after the database was found gone
                    raise DatabaseUnavailable(f"{self.name}: the database cannot be reached ({self.breaker.reason})")
                if task is not None:
                    self._inflight[task] = conn
                try:
                    yield conn
                finally:
                    if task is not None:
                        self._inflight.pop(task, None)
        except asyncio.CancelledError:
            if self._cancelled_by_probe(task):  # the server went silent
                raise DatabaseUnavailable(f"{self.name}: the database stopped answering") from None
            raise
        except Exception as exc:
            # Cancelled while psycopg waits on the socket the probe closed, it may raise another error than
            # CancelledError (seen: RuntimeError, the closed socket's file descriptor already reused by a new
            # connection). It is still the database going away: a 503, never a 500.
            if self._cancelled_by_probe(task):
                raise DatabaseUnavailable(f"{self.name}: the database stopped answering") from exc
            raise
        finally:
            if task is not None and queued:
                self._queued.discard(task)

    def _cancelled_by_probe(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether the probe cancelled this task (its cancellation is then taken back: it answers 503)."""
        if task is None or task not in self._cancelled:
            return False
        self._cancelled.discard(task)
        task.uncancel()
        return True

    # -- the probe -------------------------------------------------------------------------------------
    def start_probe(self) -> None:
        if self._probe_task is None:
            self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop(), name=f"probe {self.name}")

    async def stop_probe(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None
        await self._drop_probe_conn()

    async def probe_once(self) -> None:
        """One probe: close the breaker (and drop broken pooled connections) or open it and cancel waiters."""
        try:
            if self._probe_conn is None or self._probe_conn.closed:
                async with asyncio.timeout(self.settings.db_connect_timeout_s + 1):  # libpq's own bound, and ours
                    self._probe_conn = await psycopg.AsyncConnection.connect(
                        self._probe_conninfo, **connection_kwargs(self.settings, f"{self.name}-probe"))
            conn = self._probe_conn
            row = await _bounded(conn, _fetch_lag(conn), self.settings.db_probe_timeout_s)
        except (psycopg.Error, TimeoutError, OSError) as exc:
            await self._drop_probe_conn()
            reason = "no answer within the probe's time" if isinstance(exc, TimeoutError) else _first_line(exc)
            if self.breaker.trip(reason) and self._probed:
                LOGGER.warning("database %s unreachable: %s", self.name, reason)
            self._probed = True
            self._cancel_inflight()
            return
        self.is_standby = bool(row[0]) if row else None
        self.lag_seconds = float(row[1]) if row and row[1] is not None else None
        if self.breaker.open:
            await self.check()  # the connections the outage broke are dropped, not handed to requests
            for follower in self.followers:
                # a follower not open yet, or closing, must never end the probe loop (the breaker would stick)
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(follower.check)
            if self.breaker.close() and self._probed:
                LOGGER.warning("database %s reachable again", self.name)
        self._probed = True

    async def _probe_loop(self) -> None:
        while True:
            await self.probe_once()
            await asyncio.sleep(self.settings.db_probe_interval_s)

    def _cancel_inflight(self) -> None:
        """Requests waiting on a silent server: close their sockets first, so psycopg's cancellation does not
        spend 10 s asking the silent server to cancel the query, then cancel them (-> DatabaseUnavailable)."""
        for task, conn in list(self._inflight.items()):
            if not task.done() and task not in self._cancelled:
                close_socket(conn)
                self._cancelled.add(task)
                task.cancel()
        for task in list(self._queued):  # queued for a connection: no socket to close, no wait for the pool's bound
            if not task.done() and task not in self._cancelled:
                self._cancelled.add(task)
                task.cancel()
        for follower in self.followers:
            follower.abort_inflight()

    async def _drop_probe_conn(self) -> None:
        conn, self._probe_conn = self._probe_conn, None
        if conn is not None:
            close_socket(conn)  # no goodbye to a silent server: close the socket, never wait


async def _fetch_lag(conn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...] | None:
    cursor = await conn.execute(_STANDBY_LAG_SQL)
    return await cursor.fetchone()


async def _bounded[T](conn: psycopg.AsyncConnection[Any], work: Coroutine[Any, Any, T], timeout: float) -> T:
    """work on conn, at most `timeout` seconds; past that the socket is closed and TimeoutError raised (an
    asyncio timeout alone would make psycopg ask the silent server to cancel the query, for up to 10 s)."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if task in done:
        return task.result()
    close_socket(conn)
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    raise TimeoutError


def close_socket(conn: psycopg.AsyncConnection[Any]) -> None:
    """Close a connection's socket at once, without a word to the server. The event loop is told first: a
    request waiting on the socket has it registered, and a closed descriptor still registered is one the
    loop confuses with the next socket to get that number (an HTTP client's): uvloop then aborts the process
    (seen: the silent-database test, about one run in three, when reads became one statement)."""
    with contextlib.suppress(psycopg.Error, OSError, ValueError, RuntimeError):
        fd = conn.pgconn.socket
        loop = asyncio.get_running_loop()
        loop.remove_reader(fd)
        loop.remove_writer(fd)
    conn.pgconn.finish()


def server_has_spoken(conn: psycopg.BaseConnection[Any]) -> bool:
    """Whether an idle connection has something to read (or no socket at all): the server ended its session, or,
    rarely, sent a notice. Healthy idle connections have nothing to read: psycopg reads every result to the end."""
    try:
        fd = conn.pgconn.socket
    except psycopg.OperationalError:
        return True  # closed
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def make_pool(url: str, settings: Settings, statement_timeout_ms: int = 0, name: str = "gis-api",
              max_lifetime_s: float = 3600.0) -> GuardedPool:
    """Not opened: the caller opens it (the app's lifespan: open(wait=False), start_probe()) and closes it.

    statement_timeout_ms > 0 becomes each connection's statement_timeout (a startup option, not SQL): a
    runaway query is cancelled by PostgreSQL itself, wherever in the service it was sent from.
    A standbys' pool gets a short max_lifetime_s: connections that fell back to another host (a standby was
    down) are renewed, so reads spread over the standbys again once they are back.
    """
    return GuardedPool(url, settings, name, statement_timeout_ms, max_lifetime_s)


class GuardedSyncPool(ConnectionPool):
    """A blocking pool (pygeoapi's process machinery runs in threads) that follows the breaker of the service's
    GuardedPool of the same database (`follow`): while it is open a checkout fails at once with
    DatabaseUnavailable, and when it opens, the threads waiting on the silent server are woken (their sockets
    shut down: libpq then sees the connection end) and answer DatabaseUnavailable too. When the breaker closes,
    the idle connections the outage broke are dropped. Without a leader (`gis worker`) it is a plain pool."""

    def __init__(self, conninfo: str, settings: Settings, name: str, max_size: int) -> None:
        super().__init__(conninfo, min_size=1, max_size=max_size, open=False, timeout=settings.db_pool_timeout_s,
                         reconnect_timeout=0, kwargs=connection_kwargs(settings, name), check=self._checked_at_checkout)
        self.name = name
        self.leader: GuardedPool | None = None
        self._inflight_lock = threading.Lock()  # ours; the pool's own _lock is its RLock
        self._inflight: dict[int, tuple[int, psycopg.Connection[Any]]] = {}  # id(conn) -> (thread, conn)
        self._aborted: set[int] = set()  # threads whose connection the breaker shut
        self._sweep: threading.Thread | None = None

    def _checked_at_checkout(self, conn: psycopg.Connection[Any]) -> None:
        """GuardedPool._checked_at_checkout for the blocking pool: the other idle connections checked in a thread."""
        if not server_has_spoken(conn):
            return
        try:
            self.check_connection(conn)
        except Exception:
            with self._inflight_lock:
                if self._sweep is None or not self._sweep.is_alive():
                    self._sweep = threading.Thread(target=self.check, name=f"check {self.name}", daemon=True)
                    self._sweep.start()
            raise

    def follow(self, leader: GuardedPool) -> None:
        self.leader = leader
        leader.followers.append(self)

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        if self.leader is not None and self.leader.breaker.open:
            raise DatabaseUnavailable(f"{self.name}: the database cannot be reached ({self.leader.breaker.reason})")
        thread = threading.get_ident()
        try:
            with super().connection(timeout) as conn:
                with self._inflight_lock:
                    self._inflight[id(conn)] = (thread, conn)
                try:
                    yield conn
                finally:
                    with self._inflight_lock:
                        self._inflight.pop(id(conn), None)
        except Exception as exc:
            with self._inflight_lock:
                aborted = thread in self._aborted
                self._aborted.discard(thread)
            if aborted:
                raise DatabaseUnavailable(f"{self.name}: the database stopped answering") from exc
            raise

    def abort_inflight(self) -> None:
        """Called by the leader's probe (event loop thread) when the database stops answering."""
        with self._inflight_lock:
            for thread, conn in list(self._inflight.values()):
                self._aborted.add(thread)
                _shut_down(conn)


def _shut_down(conn: psycopg.Connection[Any]) -> None:
    """Wake a thread blocked on this connection's socket: shutdown() acts on the socket itself (through a
    duplicate descriptor), so the descriptor libpq holds stays valid and libpq sees the connection end."""
    with contextlib.suppress(OSError, psycopg.Error):
        duplicate = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            duplicate.shutdown(socket.SHUT_RDWR)
        finally:
            duplicate.close()


def make_sync_pool(url: str, settings: Settings, name: str, max_size: int = 8) -> GuardedSyncPool:
    """A blocking pool with the same bounded waits; not opened. `follow(pool)` gives it the service's breaker."""
    return GuardedSyncPool(url, settings, name, max_size)
