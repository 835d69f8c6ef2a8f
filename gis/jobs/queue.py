"""The queue's statements over ops.jobs (migrations 002, 009, 017): enqueue, claim, heartbeat, reap.

A claim is one UPDATE of the oldest queued job picked with FOR UPDATE SKIP LOCKED, so any number of
workers on any hosts share the queue without ever running a job twice at once. Liveness is a
heartbeat column stamped by whoever runs the job; reaping compares it with the database's clock, so
no host's clock matters.
"""

import os
import socket
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

RESUMED_MESSAGE = "resumed: the worker running it stopped"
LOST_SYNC_MESSAGE = "failed: the service node running it stopped (no heartbeat for {seconds:g} s); run it again"
# %s: the runs started (PostgreSQL format() fills it in)
LOST_ASYNC_MESSAGE = "failed: its worker stopped %s time(s) while running it (no heartbeat for {seconds:g} s)"


def runner_name() -> str:
    """host:pid of this process: who a job is claimed by."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class ClaimedJob:
    job_id: str
    process_id: str
    request: dict[str, Any]
    attempts: int


def enqueue(conn: psycopg.Connection, job_id: str, request: dict[str, Any]) -> None:
    """Hands an accepted job to the workers, with what its run needs."""
    conn.execute("UPDATE ops.jobs SET execution = 'async', request = %s, runner = NULL, "
                 "updated = clock_timestamp() WHERE job_id = %s", (Jsonb(request), job_id))


_CLAIM = """
UPDATE ops.jobs j SET status = 'running', runner = %(runner)s, heartbeat = clock_timestamp(),
       attempts = j.attempts + 1, started = coalesce(j.started, clock_timestamp()), updated = clock_timestamp(),
       message = CASE WHEN j.attempts > 0 THEN %(resumed)s ELSE 'running' END
WHERE j.job_id = (SELECT job_id FROM ops.jobs WHERE status = 'accepted' AND execution = 'async'
                  AND request IS NOT NULL ORDER BY created LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING j.job_id, j.process_id, j.request, j.attempts
"""


def claim(conn: psycopg.Connection, runner: str) -> ClaimedJob | None:
    """The oldest queued job, now running for `runner`; None when the queue is empty."""
    row = conn.execute(_CLAIM, {"runner": runner, "resumed": RESUMED_MESSAGE}).fetchone()
    return ClaimedJob(str(row[0]), str(row[1]), dict(row[2]), int(row[3])) if row else None


def start_sync(conn: psycopg.Connection, job_id: str, runner: str) -> None:
    """A synchronous run starting in a service process: its heartbeat starts with it."""
    conn.execute("UPDATE ops.jobs SET runner = %s, heartbeat = clock_timestamp(), attempts = attempts + 1 "
                 "WHERE job_id = %s", (runner, job_id))


def beat(conn: psycopg.Connection, runner: str, job_ids: list[str]) -> int:
    """Stamps the heartbeat of the jobs this runner is running; how many are still its own and running."""
    if not job_ids:
        return 0
    return conn.execute("UPDATE ops.jobs SET heartbeat = clock_timestamp() WHERE job_id = ANY(%s) "
                        "AND runner = %s AND status = 'running'", (job_ids, runner)).rowcount


_REAP = """
WITH lost AS (
    SELECT job_id, execution, attempts FROM ops.jobs
    -- only jobs whose runner stamps a heartbeat are judged by it (none stamped yet: nothing to go by)
    WHERE status = 'running' AND heartbeat < clock_timestamp() - make_interval(secs => %(stale)s)
    FOR UPDATE SKIP LOCKED
)
UPDATE ops.jobs j SET
    status = CASE WHEN lost.execution = 'async' AND lost.attempts < %(max_attempts)s AND j.request IS NOT NULL
                  THEN 'accepted' ELSE 'failed' END,
    message = CASE WHEN lost.execution = 'async' AND lost.attempts < %(max_attempts)s AND j.request IS NOT NULL
                   THEN %(resumed)s
                   WHEN lost.execution = 'async' THEN format(%(lost_async)s, lost.attempts)
                   ELSE %(lost_sync)s END,
    finished = CASE WHEN lost.execution = 'async' AND lost.attempts < %(max_attempts)s AND j.request IS NOT NULL
                    THEN NULL ELSE clock_timestamp() END,
    runner = NULL, updated = clock_timestamp()
FROM lost WHERE j.job_id = lost.job_id
RETURNING j.job_id, j.status
"""


def reap(conn: psycopg.Connection, stale_seconds: float, max_attempts: int) -> dict[str, str]:
    """Running jobs whose heartbeat is older than `stale_seconds`: queued again or failed. Job id -> new status."""
    seconds = float(stale_seconds)
    rows = conn.execute(_REAP, {
        "stale": seconds, "max_attempts": int(max_attempts), "resumed": RESUMED_MESSAGE,
        "lost_sync": LOST_SYNC_MESSAGE.format(seconds=seconds),
        "lost_async": LOST_ASYNC_MESSAGE.format(seconds=seconds),
    }).fetchall()
    return {str(job_id): str(status) for job_id, status in rows}


def queue_depth(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM ops.jobs WHERE status = 'accepted' AND execution = 'async'").fetchone()
    return int(row[0]) if row else 0
