"""Asynchronous jobs run by `gis worker` processes that claim them from ops.jobs; a job whose worker (or, for a
synchronous run, whose service node) dies is resumed or failed with the reason, by heartbeat.

Real processes throughout: the service (uvicorn), `gis worker` subprocesses, SIGKILL. A job is held "running"
deterministically by a test transaction that locks a layer the job reads.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import process_client
import psycopg
import pytest
from conftest import ADMIN_HEADERS, ROOT
from local_ports import free_port
from psycopg import sql

from gis.settings import Settings

CHECK = {"check": "land_use_vs_farmland", "patches": False}
LOCKED_LAYER = ("planning", "basic_farmland")  # plan-conflicts reads it; a test's lock holds the job there
# Fast heartbeats so a lost worker is noticed in seconds, not the default 15 s.
FAST = {"GIS_JOBS_HEARTBEAT_SECONDS": "0.5", "GIS_JOBS_STALE_SECONDS": "3", "GIS_JOBS_POLL_SECONDS": "0.2"}


def _env(database_url: str, settings: Settings, extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "GIS_HTTP_RATE_PER_SECOND": "0", "GIS_DATABASE_URL": database_url,
            "GIS_LAYERS_DIR": str(settings.layers_dir), "GIS_STYLES_DIR": str(settings.styles_dir), **FAST, **extra}


@contextlib.contextmanager
def worker(database_url: str, settings: Settings, **extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """A `gis worker` process on the database; stopped (SIGTERM) afterwards unless already dead."""
    process = subprocess.Popen([str(Path(sys.executable).parent / "gis"), "worker", "--verbose"], cwd=ROOT,
                               env=_env(database_url, settings, extra))
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def service_process(database_url: str, settings: Settings,
                    **extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The service as its own process (uvicorn), so a test can kill it; yields (base URL, process)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "services.asgi:app_from_environment", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=_env(database_url, settings, extra))
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _answers(url), 60, "the service did not answer")
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/conformance", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _wait(ready: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds:g} s")
        time.sleep(0.2)


def _job(url: str, job_id: str) -> dict:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status, message, runner, attempts, execution FROM ops.jobs WHERE job_id = %s",
                           (job_id,)).fetchone()
    assert row is not None
    return dict(zip(("status", "message", "runner", "attempts", "execution"), row, strict=True))


@contextlib.contextmanager
def layer_locked(url: str) -> Iterator[None]:
    """Holds an exclusive lock on the layer plan-conflicts reads, so a job started now waits, 'running'."""
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(*LOCKED_LAYER)))
        yield
        conn.rollback()


def _submit(api: str) -> str:
    r = process_client.execute(api, "plan-conflicts", CHECK, prefer="respond-async", role="admin")
    assert r.status_code == 201, r.text
    return str(r.json()["jobID"])


def test_a_service_node_with_jobs_off_queues_the_job_and_a_gis_worker_runs_it(
        clone_db: Callable[[], str], settings: Settings) -> None:
    url = clone_db()
    with service_process(url, settings, GIS_JOBS_IN_SERVICE="false") as (api, _service):
        job_id = _submit(api)
        time.sleep(2)  # the node does not run it: it waits in the queue for a worker
        assert _job(url, job_id)["status"] == "accepted"
        with worker(url, settings) as process:
            _wait(lambda: _job(url, job_id)["status"] == "successful", 60, "the worker did not finish the job")
            done = _job(url, job_id)
            assert done["runner"].endswith(f":{process.pid}") and done["execution"] == "async"
        status = httpx.get(f"{api}/jobs/{job_id}", headers=ADMIN_HEADERS).json()
        assert status["status"] == "successful" and status["progress"] == 100
        assert httpx.get(f"{api}/jobs/{job_id}/results", headers=ADMIN_HEADERS).json()["summary"]["check"] \
            == CHECK["check"]


def test_a_job_whose_worker_is_killed_is_resumed_by_another_worker(
        clone_db: Callable[[], str], settings: Settings, serve_api: Callable[[str], AbstractContextManager[str]]
) -> None:
    url = clone_db()
    with pytest.MonkeyPatch.context() as patch, contextlib.ExitStack() as stack:
        patch.setenv("GIS_JOBS_IN_SERVICE", "false")
        api = stack.enter_context(serve_api(url))
        lock = stack.enter_context(contextlib.ExitStack())
        lock.enter_context(layer_locked(url))
        with worker(url, settings) as first:
            job_id = _submit(api)
            _wait(lambda: _job(url, job_id)["status"] == "running", 30, "the first worker did not claim the job")
            assert _job(url, job_id)["runner"].endswith(f":{first.pid}")
            first.send_signal(signal.SIGKILL)
            first.wait()
        second = stack.enter_context(worker(url, settings))
        # the first worker's heartbeat stops: the job is queued again and the second worker claims it
        _wait(lambda: (_job(url, job_id)["runner"] or "").endswith(f":{second.pid}"), 30,
              "the job was not resumed by the second worker")
        assert _job(url, job_id)["attempts"] == 2
        lock.close()  # the layer is free again: the resumed run goes on and finishes
        _wait(lambda: _job(url, job_id)["status"] == "successful", 60, "the resumed job did not finish")
        status = httpx.get(f"{api}/jobs/{job_id}", headers=ADMIN_HEADERS).json()
        assert status["status"] == "successful"
        assert httpx.get(f"{api}/jobs/{job_id}/results", headers=ADMIN_HEADERS).json()["summary"]["check"] \
            == CHECK["check"]


def test_a_job_whose_worker_dies_on_its_last_attempt_fails_with_the_reason(
        clone_db: Callable[[], str], settings: Settings, serve_api: Callable[[str], AbstractContextManager[str]]
) -> None:
    url = clone_db()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**FAST, "GIS_JOBS_IN_SERVICE": "false", "GIS_JOBS_MAX_ATTEMPTS": "1"}.items():
            patch.setenv(name, value)
        with serve_api(url) as api, layer_locked(url), worker(url, settings, GIS_JOBS_MAX_ATTEMPTS="1") as only:
            job_id = _submit(api)
            _wait(lambda: _job(url, job_id)["status"] == "running", 30, "the worker did not claim the job")
            only.send_signal(signal.SIGKILL)
            only.wait()
            # nobody runs jobs now but the service node's heartbeat thread, which reaps lost jobs too
            _wait(lambda: _job(url, job_id)["status"] == "failed", 30, "the lost job was not failed")
            status = httpx.get(f"{api}/jobs/{job_id}", headers=ADMIN_HEADERS).json()
            assert status["status"] == "failed"
            assert "worker stopped 1 time(s)" in status["message"] and "no heartbeat" in status["message"]


def test_a_synchronous_run_whose_service_node_is_killed_is_failed_with_the_reason(
        clone_db: Callable[[], str], settings: Settings) -> None:
    url = clone_db()
    with layer_locked(url), worker(url, settings):
        with service_process(url, settings, GIS_JOBS_IN_SERVICE="false") as (api, node), \
                httpx.Client(timeout=60) as http, contextlib.suppress(httpx.TransportError):
            # the synchronous run blocks on the lock; the node is killed under it
            def kill_when_running() -> None:
                _wait(lambda: _running_sync(url, "running") is not None, 30, "the synchronous run did not start")
                node.send_signal(signal.SIGKILL)

            killer = threading.Thread(target=kill_when_running)
            killer.start()
            http.post(f"{api}/processes/plan-conflicts/execution", json={"inputs": CHECK}, headers=ADMIN_HEADERS)
            killer.join()
        job_id = _running_sync(url)
        assert job_id is not None
        # the worker's heartbeat thread finds the node's job without a heartbeat and fails it
        _wait(lambda: _job(url, job_id)["status"] == "failed", 30, "the lost synchronous job was not failed")
        assert "service node running it stopped" in _job(url, job_id)["message"]


def _running_sync(url: str, status: str | None = None) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT job_id FROM ops.jobs WHERE execution = 'sync' AND process_id = 'plan-conflicts' "
                           "AND (%s::text IS NULL OR status = %s) ORDER BY created DESC LIMIT 1",
                           (status, status)).fetchone()
    return str(row[0]) if row else None
