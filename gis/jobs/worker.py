"""Running queued jobs: a claim loop, a pool of job threads and a heartbeat thread.

`gis worker` runs a Worker in the foreground; a service process with GIS_JOBS_IN_SERVICE (the one-process
default, `make run`) runs one in the background. A Heartbeat alone keeps the synchronous runs of a service
node alive in the queue's eyes. Both survive a database outage: each loop logs the error and tries again.
"""

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from gis.jobs import queue
from gis.jobs.settings import JobSettings

LOGGER = logging.getLogger(__name__)
_DB_ERRORS = (psycopg.Error, PoolTimeout)


class Heartbeat:
    """Stamps the heartbeat of the jobs this process runs, and reaps the lost jobs of any process."""

    def __init__(self, pool: ConnectionPool, settings: JobSettings, runner: str | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self.runner = runner or queue.runner_name()
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def running(self, job_id: str) -> Iterator[None]:
        with self._lock:
            self._held.add(job_id)
        try:
            yield
        finally:
            with self._lock:
                self._held.discard(job_id)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="job-heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def tick(self) -> dict[str, str]:
        """One beat for the jobs held, one reap of the lost ones; the jobs reaped (id -> new status)."""
        with self._lock:
            held = sorted(self._held)
        with self.pool.connection() as conn:
            queue.beat(conn, self.runner, held)
            reaped = queue.reap(conn, self.settings.stale_seconds, self.settings.max_attempts)
        for job_id, status in reaped.items():
            LOGGER.warning("job %s lost its runner (no heartbeat for %g s): %s", job_id,
                           self.settings.stale_seconds, "queued again" if status == "accepted" else "failed")
        return reaped

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                self.tick()
            except _DB_ERRORS as exc:
                LOGGER.warning("job heartbeat not written: %s", str(exc).strip().splitlines()[0][:200])


class Worker:
    """Claims queued jobs and runs each with `execute` (which records the outcome in ops.jobs)."""

    def __init__(self, pool: ConnectionPool, settings: JobSettings,
                 execute: Callable[[queue.ClaimedJob], None], heartbeat: Heartbeat | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self.execute = execute
        self.heartbeat = heartbeat or Heartbeat(pool, settings)
        self._slots = threading.BoundedSemaphore(settings.concurrency)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._executor = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="job")

    def start(self) -> None:
        """In the background (a service process running jobs too)."""
        self._thread = threading.Thread(target=self.run, name="job-claims", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Claims no more jobs (safe in a signal handler); run() returns."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        # jobs running finish within the stale time; past it another worker resumes them anyway
        self._executor.shutdown(wait=False, cancel_futures=True)
        for _ in range(int(self.settings.stale_seconds * 2)):
            if self._slots_free():
                break
            self._stop.wait(0.5)
        self.heartbeat.stop()

    def run(self) -> None:
        """Claims and runs jobs until stop(); returns then (jobs still running finish in their threads)."""
        self.heartbeat.start()
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=self.settings.poll_seconds):
                continue
            try:
                with self.pool.connection() as conn:
                    job = queue.claim(conn, self.heartbeat.runner)
            except _DB_ERRORS as exc:
                self._slots.release()
                LOGGER.warning("no job claimed: %s", str(exc).strip().splitlines()[0][:200])
                self._stop.wait(self.settings.poll_seconds * 4)
                continue
            if job is None:
                self._slots.release()
                self._stop.wait(self.settings.poll_seconds)
                continue
            LOGGER.info("job %s (%s) claimed, run %d", job.job_id, job.process_id, job.attempts)
            self._executor.submit(self._run_one, job)

    def _slots_free(self) -> bool:
        taken = 0
        while self._slots.acquire(blocking=False):
            taken += 1
        for _ in range(taken):
            self._slots.release()
        return taken == self.settings.concurrency

    def _run_one(self, job: queue.ClaimedJob) -> None:
        try:
            with self.heartbeat.running(job.job_id):
                self.execute(job)
        except Exception:
            LOGGER.exception("job %s (%s) could not be run", job.job_id, job.process_id)
            try:
                with self.pool.connection() as conn:
                    conn.execute("UPDATE ops.jobs SET status = 'failed', message = 'internal error', "
                                 "finished = clock_timestamp(), updated = clock_timestamp() "
                                 "WHERE job_id = %s AND status = 'running'", (job.job_id,))
            except _DB_ERRORS:
                pass  # the heartbeat stops with this thread: the job is reaped
        finally:
            self._slots.release()
