"""Group commit of audit rows: the rows of concurrent reads in one process written by one INSERT and one commit.

Every read of an internal or restricted layer writes its ops.audit_log row before it is answered, and a commit
costs a flush of the WAL to disk (about 4 ms here), one round trip and one statement per read. Here a request
hands its row to the process's writer and waits: the writer inserts every row waiting at that moment in one
statement (one commit, one round trip), then wakes each of their requests. Rows that arrive while a batch is being
written go in the next one, so under load a batch holds what arrived during one commit, and a read alone is
written at once: nothing waits for a timer.

A request is answered only after the commit that holds its row has returned, exactly as before: the rows waiting
are no state shared by nodes (they live for at most one commit, and their requests are still waiting). When the
commit fails, every request of that batch fails with it: with the database unreachable (the pool's breaker, a
connection that broke) each gets DatabaseUnavailable (a 503); no answer goes out without its row. A row the
database refuses (one bad value) fails only its own request: the batch is then written row by row.
"""

import asyncio
from collections.abc import Sequence

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gis.db.pool import DatabaseUnavailable
from gis.security.audit import AuditEntry

# One statement whatever the batch's size (prepared once per connection): the rows as arrays, one per column.
INSERT_MANY = ("INSERT INTO ops.audit_log (subject, role, method, key_id, action, layer_id, path, query, features, "
               "status) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
               "%s::text[], %s::jsonb[], %s::integer[], %s::integer[])")
MAX_BATCH = 1000  # rows in one statement; more waiting go in the next
# Commits in flight at once per process. PostgreSQL itself flushes the WAL of concurrent commits together, so a
# few writers cost no more fsyncs than one, and a row never waits for a whole other commit while a writer is
# free; rows beyond what they take go in their next batch.
WRITERS = 4


async def record_many(conn: psycopg.AsyncConnection, entries: Sequence[AuditEntry]) -> None:
    """The entries' rows in one statement (one transaction on an autocommit connection)."""
    columns = list(zip(*(entry.values() for entry in entries), strict=True))
    await conn.execute(INSERT_MANY, [list(column) for column in columns], prepare=True)


def _unreachable(exc: BaseException) -> bool:
    """The database could not be reached or the connection broke: whether the commit happened is unknown."""
    return isinstance(exc, PoolTimeout | psycopg.OperationalError)


class AuditWriter:
    """One per process and pool: `await writer.record(entry)` returns once the row is committed."""

    def __init__(self, pool: AsyncConnectionPool, max_batch: int = MAX_BATCH, writers: int = WRITERS) -> None:
        self.pool = pool
        self.max_batch = max_batch
        self.writers = writers
        self._waiting: list[tuple[AuditEntry, asyncio.Future[None]]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def record(self, entry: AuditEntry) -> None:
        """Wait until the row is committed; DatabaseUnavailable (or the database's own error for this row) if not."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        written.add_done_callback(_retrieved)
        self._waiting.append((entry, written))
        if len(self._running) < self.writers:
            writer = loop.create_task(self._write(), name="audit writer")
            self._running.add(writer)
            writer.add_done_callback(self._running.discard)
        # shielded: a request that gives up (its client gone) leaves its row and the others' batch alone
        await asyncio.shield(written)

    async def _write(self) -> None:
        batch: list[tuple[AuditEntry, asyncio.Future[None]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
                try:
                    await self._commit(batch)
                except Exception as exc:  # whatever it was, these rows are not known to be written
                    for _entry, written in batch:
                        _fail(written, _not_written(exc))
                batch = []
        except BaseException as exc:  # the task cancelled (the app stopping): nobody waiting is left hanging
            for _entry, written in [*batch, *self._waiting]:
                _fail(written, _not_written(exc))
            self._waiting = []
            raise
        finally:
            # at once, not in a done callback: no await since the queue was found empty, so a row added after
            # this sees a free writer slot and starts a writer (the callback would come too late for it)
            self._running.discard(asyncio.current_task())

    async def _commit(self, batch: list[tuple[AuditEntry, asyncio.Future[None]]]) -> None:
        async with self.pool.connection() as conn:
            try:
                await record_many(conn, [entry for entry, _ in batch])
            except psycopg.Error as exc:
                if _unreachable(exc):
                    raise
                # Nothing of the batch was written (one statement): each row on its own, so a row the database
                # refuses fails only its own request.
                for entry, written in batch:
                    try:
                        await record_many(conn, [entry])
                    except psycopg.Error as own:
                        if _unreachable(own):
                            raise
                        _fail(written, own)
        for _entry, written in batch:
            if not written.done():
                written.set_result(None)


def _not_written(exc: BaseException) -> DatabaseUnavailable:
    """Each request gets its own exception (one object raised in many tasks would grow one traceback): a 503."""
    text = str(exc).strip()
    found = DatabaseUnavailable(f"the audit row was not written: {text.splitlines()[0] if text else repr(exc)}")
    found.__cause__ = exc
    return found


def _fail(written: asyncio.Future[None], exc: BaseException) -> None:
    if not written.done():
        written.set_exception(exc)


def _retrieved(written: asyncio.Future[None]) -> None:
    """A request that gave up never reads its future's error: read here, so asyncio does not log it as lost."""
    if not written.cancelled():
        written.exception()
