"""pygeoapi's OGC API - Processes machinery, called from our routes.

- The pygeoapi configuration is generated from the layer registry and the overlap rules (never a file
  to edit): our processes as process plugins (services.processes), our job manager.
- The job manager keeps jobs in PostgreSQL (ops.jobs, migration 002), so every worker and host of the
  stateless API sees every job. An asynchronous job is queued there with its inputs and its caller
  (migration 017) and run by whichever `gis worker` claims it (gis/jobs/; a service process runs
  queued jobs too unless GIS_JOBS_IN_SERVICE is off); jobs report progress into ops.jobs, stop between
  steps when dismissed, and carry a heartbeat, so a job whose runner died is resumed or failed.
  A synchronous execution runs in the request's service process, with a heartbeat too.
- Our routes call pygeoapi's framework-independent API functions (pygeoapi.api.processes: describe,
  execute, jobs, results, dismiss) with an APIRequest built from the Starlette request, in the
  threadpool, and return their (headers, status, content) as our responses; pygeoapi's Starlette app
  (which builds itself from the environment at import) is never imported.
- A failure the caller caused (a GisError) fails the job with its message (400 when synchronous);
  anything else fails it with "internal error" and, when synchronous, reaches our 500 handler.
"""

import contextvars
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pygeoapi.api as pygeoapi_api
import pygeoapi.process.manager.base as pygeoapi_manager_base
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pygeoapi.api import API, APIRequest
from pygeoapi.process.base import BaseProcessor, JobNotFoundError, JobResultNotFoundError
from pygeoapi.process.manager.base import BaseManager, get_manager
from pygeoapi.util import DATETIME_FORMAT, JobStatus, RequestedResponse

from gis.analysis import plan_conflicts
from gis.analysis.rules import OverlapRules
from gis.db.pool import GuardedSyncPool
from gis.errors import GisError
from gis.jobs import queue
from gis.jobs.settings import JobSettings
from gis.jobs.worker import Heartbeat, Worker
from gis.layers import LayerRegistry
from gis.project import Project
from gis.rendering import PYGEOAPI_TEMPLATES_DIR
from gis.security.disclosure import without_paths
from gis.security.policy import Policy
from gis.settings import Settings
from gis.tiles_keeper import CopyKeeper
from services.processes.access import JOB_OWNER, caller_snapshot, restore_caller
from services.processes.inputs import ProcessInputs

LOGGER = logging.getLogger(__name__)
MANAGER = "services.processes.pygeoapi_bridge.JobsManager"
JSON = "application/json"


@dataclass
class ProcessContext:
    """What our processors need: the settings, the project (registry, policy, rules), and a database to work in."""

    settings: Settings
    project: Project
    database_url: str
    pool: GuardedSyncPool
    heartbeat: Heartbeat | None = None  # stamps the jobs this process runs
    inputs: dict[str, type[ProcessInputs]] = field(default_factory=dict)  # process id -> its inputs model

    @property
    def registry(self) -> LayerRegistry:
        return self.project.registry

    @property
    def rules(self) -> OverlapRules:
        return self.project.overlap_rules

    @property
    def policy(self) -> Policy:
        """The roles a queued job's caller is restored from."""
        return self.project.policy


def _stamp(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime(DATETIME_FORMAT) if value is not None else None


def _parse_stamp(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value
    return datetime.strptime(str(value), DATETIME_FORMAT).replace(tzinfo=UTC)


# A job is its owner's: status, results and dismissal answer as for a missing job to anyone else.
_MINE = sql.SQL("(owner IS NOT DISTINCT FROM %s OR %s)")


def _mine() -> tuple[str | None, bool]:
    owner = JOB_OWNER.get()
    return (owner.subject, owner.sees_all) if owner else (None, True)


def _lists() -> bool:
    """Whether the caller may list jobs: not anonymous ones, who reach a job only by its (random) id."""
    owner = JOB_OWNER.get()
    return owner is None or owner.lists


class _RandomJobIds:
    """pygeoapi names a job uuid1(): the time and the host's node, so one job's id tells its neighbours'. A job's id
    is an anonymous caller's only claim to it, so every job is named by a random uuid4 (122 random bits)."""

    uuid1 = staticmethod(uuid.uuid4)

    def __getattr__(self, name: str) -> Any:
        return getattr(uuid, name)


pygeoapi_manager_base.uuid = _RandomJobIds()  # type: ignore[assignment]


_COLUMNS = ("status", "message", "progress", "started", "finished", "updated", "mimetype")


class JobsManager(BaseManager):
    """pygeoapi job manager over ops.jobs; results are stored with the job."""

    def __init__(self, manager_def: dict[str, Any]) -> None:
        super().__init__(manager_def)
        self.is_async = True
        self.supports_subscribing = False  # no callbacks to caller-given URLs from inside the network
        self.output_dir = None
        self.context: ProcessContext | None = None

    # -- processors ----------------------------------------------------------------------------------
    def get_processor(self, process_id: str) -> BaseProcessor:
        processor = super().get_processor(process_id)
        bind = getattr(processor, "bind", None)
        if bind is not None:
            bind(self.context, self)
        return processor

    # -- storage -------------------------------------------------------------------------------------
    def _pool(self) -> GuardedSyncPool:
        if self.context is None:
            raise RuntimeError("the job manager is not bound to a database")
        return self.context.pool

    def add_job(self, job_metadata: dict[str, Any]) -> str:
        job_id = str(job_metadata["identifier"])
        with self._pool().connection() as conn:
            conn.execute(
                "INSERT INTO ops.jobs (job_id, process_id, status, message, progress, parameters, created, started, "
                "updated, mimetype, owner, runner) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (job_id, job_metadata["process_id"], job_metadata["status"], job_metadata.get("message"),
                 int(job_metadata.get("progress") or 0), Jsonb(job_metadata.get("parameters")),
                 _parse_stamp(job_metadata.get("created")) or datetime.now(UTC), None,
                 _parse_stamp(job_metadata.get("updated")) or datetime.now(UTC), job_metadata.get("mimetype"),
                 _mine()[0], queue.runner_name()))
        return job_id

    def update_job(self, job_id: str, update_dict: dict[str, Any]) -> bool:
        sets: list[sql.Composable] = []
        values: list[Any] = []
        for key in _COLUMNS:
            if key in update_dict:
                value = update_dict[key]
                if key in ("started", "finished", "updated"):
                    value = _parse_stamp(value)
                sets.append(sql.SQL("{} = %s").format(sql.Identifier(key)))
                values.append(value)
        if "result" in update_dict:
            sets.append(sql.SQL("result = %s"))
            values.append(update_dict["result"])
        if not sets:
            return True
        if "updated" not in update_dict:
            sets.append(sql.SQL("updated = clock_timestamp()"))
        # A dismissed job stays dismissed: a late progress report from its thread changes nothing.
        query = sql.SQL("UPDATE ops.jobs SET {} WHERE job_id = %s AND status <> 'dismissed'").format(
            sql.SQL(", ").join(sets))
        with self._pool().connection() as conn:
            return conn.execute(query, (*values, job_id)).rowcount == 1

    def _job(self, row: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "process", "identifier": row["job_id"], "process_id": row["process_id"],
            "status": row["status"], "message": row["message"] and without_paths(row["message"]),
            "progress": row["progress"],
            "parameters": row["parameters"], "created": _stamp(row["created"]), "started": _stamp(row["started"]),
            "updated": _stamp(row["updated"]), "finished": _stamp(row["finished"]),
            "mimetype": row["mimetype"] or JSON, "location": None,
        }

    _SELECT = sql.SQL("SELECT job_id, process_id, status, message, progress, parameters, created, "
                      "coalesce(started, created) AS started, updated, finished, mimetype FROM ops.jobs ")

    def get_job(self, job_id: str) -> dict[str, Any]:
        with self._pool().connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(self._SELECT + sql.SQL("WHERE job_id = %s AND ") + _MINE, (job_id, *_mine())).fetchone()
        if row is None:
            raise JobNotFoundError(job_id)
        return self._job(row)

    def get_jobs(self, status: JobStatus | None = None, limit: int | None = None,
                 offset: int | None = None) -> dict[str, Any]:
        where: sql.Composable = sql.SQL("WHERE ") + _MINE + sql.SQL(" ")
        params: list[Any] = list(_mine())
        if not _lists():
            where += sql.SQL("AND FALSE ")
        if status is not None:
            where, params = where + sql.SQL("AND status = %s "), [*params, status.value]
        with self._pool().connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            total = cur.execute(sql.SQL("SELECT count(*) AS n FROM ops.jobs ") + where, params).fetchone()
            rows = cur.execute(self._SELECT + where + sql.SQL("ORDER BY created DESC, job_id LIMIT %s OFFSET %s"),
                               [*params, int(limit or 10), int(offset or 0)]).fetchall()
        return {"jobs": [self._job(r) for r in rows], "numberMatched": int(total["n"]) if total else 0}

    def get_job_result(self, job_id: str) -> tuple[str, Any]:
        with self._pool().connection() as conn:
            row = conn.execute(sql.SQL("SELECT status, mimetype, result FROM ops.jobs WHERE job_id = %s AND ") + _MINE,
                               (job_id, *_mine())).fetchone()
        if row is None:
            raise JobNotFoundError(job_id)
        status, mimetype, result = row
        if status != JobStatus.successful.value or result is None:
            raise JobResultNotFoundError(job_id)
        data = bytes(result)
        if (mimetype or JSON) == JSON:
            return JSON, orjson.loads(data)
        return mimetype, data

    def delete_job(self, job_id: str) -> bool:
        """A running job is dismissed (it stops at its next step); a finished one is removed with its results."""
        with self._pool().connection() as conn, conn.transaction():
            row = conn.execute(sql.SQL("SELECT status FROM ops.jobs WHERE job_id = %s AND ") + _MINE
                               + sql.SQL(" FOR UPDATE"), (job_id, *_mine())).fetchone()
            if row is None:
                raise JobNotFoundError(job_id)
            if row[0] in (JobStatus.accepted.value, JobStatus.running.value):
                conn.execute("UPDATE ops.jobs SET status = 'dismissed', message = 'dismissed by request', "
                             "updated = clock_timestamp(), finished = clock_timestamp() WHERE job_id = %s", (job_id,))
            else:
                conn.execute("DELETE FROM ops.plan_conflict_patches WHERE run_id = %s", (job_id,))
                conn.execute("DELETE FROM ops.plan_conflict_runs WHERE run_id = %s", (job_id,))
                conn.execute("DELETE FROM ops.jobs WHERE job_id = %s", (job_id,))
        return True

    def is_dismissed(self, job_id: str) -> bool:
        with self._pool().connection() as conn:
            row = conn.execute("SELECT status FROM ops.jobs WHERE job_id = %s", (job_id,)).fetchone()
        return row is None or row[0] == JobStatus.dismissed.value

    # -- execution -----------------------------------------------------------------------------------
    def _execute_handler_async(self, p: BaseProcessor, job_id: str, data_dict: dict[str, Any],
                               requested_outputs: dict[str, Any] | None = None, subscriber: Any = None,
                               requested_response: str | None = RequestedResponse.raw.value
                               ) -> tuple[str, None, JobStatus]:
        """Queued for the workers with its inputs and its caller's rights; a worker claims and runs it."""
        request = {"inputs": data_dict, "outputs": requested_outputs, "response": requested_response,
                   **caller_snapshot(getattr(p, "caller", None))}
        with self._pool().connection() as conn:
            queue.enqueue(conn, job_id, request)
        return JSON, None, JobStatus.accepted

    def _execute_handler_sync(self, p: BaseProcessor, job_id: str, data_dict: dict[str, Any],
                              requested_outputs: dict[str, Any] | None = None, subscriber: Any = None,
                              requested_response: str | None = RequestedResponse.raw.value
                              ) -> tuple[str, Any, JobStatus]:
        heartbeat = self.context.heartbeat if self.context is not None else None
        if heartbeat is None:
            return self._run(p, job_id, data_dict, requested_outputs, requested_response, False)
        with self._pool().connection() as conn:
            queue.start_sync(conn, job_id, heartbeat.runner)
        with heartbeat.running(job_id):
            return self._run(p, job_id, data_dict, requested_outputs, requested_response, False)

    def run_claimed(self, job: queue.ClaimedJob) -> None:
        """Runs a job a worker claimed, as its caller, in a context of its own (nothing leaks between jobs)."""
        contextvars.Context().run(self._run_claimed, job)

    def _run_claimed(self, job: queue.ClaimedJob) -> None:
        context = self.context
        if context is None:
            raise RuntimeError("the job manager has no process context (its project restores a job's caller)")
        request = job.request
        try:
            restore_caller(request, context.policy, context.registry)
        except GisError as exc:
            self.update_job(job.job_id, {"status": JobStatus.failed.value, "message": str(exc)[:2000],
                                         "finished": datetime.now(UTC).strftime(DATETIME_FORMAT)})
            return
        if job.attempts > 1:
            self.clear_outputs(job.job_id)  # what an interrupted run may have left of its results
        processor = self.get_processor(job.process_id)
        processor.set_job_id(job.job_id)
        self._run(processor, job.job_id, request.get("inputs") or {}, request.get("outputs"),
                  request.get("response"), True)

    def clear_outputs(self, job_id: str) -> None:
        with self._pool().connection() as conn, conn.transaction():
            plan_conflicts.drop_scratch(conn, job_id)
            conn.execute("DELETE FROM ops.plan_conflict_patches WHERE run_id = %s", (job_id,))
            conn.execute("DELETE FROM ops.plan_conflict_runs WHERE run_id = %s", (job_id,))

    def _run(self, p: BaseProcessor, job_id: str, data_dict: dict[str, Any], requested_outputs: dict[str, Any] | None,
             requested_response: str | None, background: bool) -> tuple[str, Any, JobStatus]:
        now = datetime.now(UTC).strftime(DATETIME_FORMAT)
        self.update_job(job_id, {"status": JobStatus.running.value, "started": now, "message": "running",
                                 "progress": 5})
        try:
            extra = {"outputs": requested_outputs} if p.supports_outputs else {}
            mimetype, outputs = p.execute(data_dict, **extra)
            if requested_response == RequestedResponse.document.value:
                outputs = {"outputs": [outputs]}
                mimetype = JSON
            # A synchronous caller gets the result in the response: only a job's (asynchronous) result is kept.
            # The synchronous job's row (status, times) goes after GIS_SYNC_JOB_RETENTION_MINUTES (gis ops prune).
            kept = {"result": outputs if isinstance(outputs, bytes) else (
                outputs.encode("utf-8") if isinstance(outputs, str) else orjson.dumps(outputs))} if background else {}
            self.update_job(job_id, {"status": JobStatus.successful.value, "message": "job complete",
                                     "progress": 100, "finished": datetime.now(UTC).strftime(DATETIME_FORMAT),
                                     "mimetype": mimetype, **kept})
            return mimetype, outputs, JobStatus.successful
        except GisError as exc:
            description = str(exc)
            self.update_job(job_id, {"status": JobStatus.failed.value, "message": description[:2000],
                                     "finished": datetime.now(UTC).strftime(DATETIME_FORMAT)})
            code = "InvalidParameterValue"
            answer = {"type": code, "code": code, "description": description}
            parameter = getattr(exc, "parameter", None)
            if parameter:  # the input at fault, as the service's own 400s name it
                answer["parameter"] = str(parameter)
            return JSON, answer, JobStatus.failed
        except Exception:
            LOGGER.exception("job %s (%s) failed", job_id, p.metadata.get("id"))
            self.update_job(job_id, {"status": JobStatus.failed.value, "message": "internal error",
                                     "finished": datetime.now(UTC).strftime(DATETIME_FORMAT)})
            if background:
                return JSON, None, JobStatus.failed
            raise


# -- the generated configuration ---------------------------------------------------------------------

def generate_config(settings: Settings, rules: OverlapRules, base_url: str,
                    processes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A pygeoapi configuration with our processes and job manager; `processes` maps id -> processor dict."""
    lon0, lat0, lon1, lat1 = settings.city_extent
    return {
        "server": {
            "bind": {"host": settings.host, "port": settings.port},
            "url": base_url.rstrip("/"),
            "mimetype": "application/json; charset=UTF-8",
            "encoding": "utf-8",
            "languages": ["en-US", "zh-CN"],
            "pretty_print": False,
            "limits": {"default_items": 100, "max_items": 1000},  # /processes lists all (one page)
            "map": {"url": "about:blank", "attribution": ""},
            # its process and job pages from our templates: no scripts, nothing from other sites
            "templates": {"path": str(PYGEOAPI_TEMPLATES_DIR)},
            "manager": {"name": MANAGER, "connection": "ops.jobs", "output_dir": "ops.jobs"},
        },
        "logging": {"level": "ERROR"},
        "metadata": {
            "identification": {
                "title": {"en": "Spatio-temporal GIS cloud: processes", "zh": "时空信息云平台：处理服务"},
                "description": {"en": f"Overlap checks and plan-against-plan conflicts ({rules.path.name})",
                                "zh": "用地冲突检测与多规冲突分析"},
                "keywords": {"en": ["planning", "overlap", "conflict"], "zh": ["多规合一", "冲突检测"]},
                "url": base_url,
            },
            "license": {"name": "internal use"},
            "provider": {"name": "Shenyang spatio-temporal GIS cloud"},
            "contact": {"name": "GIS operations"},
        },
        "resources": {
            pid: {"type": "process", "processor": processor,
                  "extents": {"spatial": {"bbox": [lon0, lat0, lon1, lat1]}}}
            for pid, processor in processes.items()
        },
    }


@contextmanager
def _host_keeps_logging() -> Iterator[None]:
    """pygeoapi's API() calls logging.basicConfig; logging belongs to the host (uvicorn), so skip it."""
    original = pygeoapi_api.setup_logger
    pygeoapi_api.setup_logger = lambda logging_config: None
    try:
        yield
    finally:
        pygeoapi_api.setup_logger = original


class Bridge:
    """One per app: the process context, and a pygeoapi API per base URL the service is reached at."""

    def __init__(self, context: ProcessContext, processes: dict[str, dict[str, Any]]) -> None:
        # pygeoapi warns about every key of a JSON schema its translation helper takes for a locale, and about
        # every absent optional parameter; its errors still reach the log
        logging.getLogger("pygeoapi").setLevel(logging.ERROR)
        self.context = context
        self.processes = processes
        self._apis: dict[str, API] = {}
        self._lock = threading.Lock()
        self.worker: Worker | None = None
        self.keeper: CopyKeeper | None = None  # beside the worker: the layers' tile copies

    def config(self, base_url: str) -> dict[str, Any]:
        return generate_config(self.context.settings, self.context.rules, base_url, self.processes)

    def api(self, base_url: str) -> API:
        key = base_url.rstrip("/")
        with self._lock:
            found = self._apis.get(key)
            if found is None:
                with _host_keeps_logging():
                    found = API(self.config(key), openapi={})
                manager = found.manager
                if not isinstance(manager, JobsManager):
                    raise RuntimeError(f"pygeoapi loaded {type(manager).__name__}, not our job manager")
                manager.context = self.context
                if len(self._apis) > 16:  # a handful of host names reach one service; never grow without end
                    self._apis.clear()
                self._apis[key] = found
            return found

    def manager(self) -> JobsManager:
        """A job manager of our own (no base URL needed): the one queued jobs are run through."""
        with _host_keeps_logging():
            manager = get_manager(self.config("http://127.0.0.1"))
        if not isinstance(manager, JobsManager):
            raise RuntimeError(f"pygeoapi loaded {type(manager).__name__}, not our job manager")
        manager.context = self.context
        return manager

    def open(self, jobs: JobSettings, run_queued: bool) -> None:
        """The pool, the heartbeat of this process's jobs (which reaps lost ones too), and, when `run_queued`,
        a worker running queued jobs in this process."""
        self.context.pool.open(wait=False)  # the service starts without a database (/readyz says why)
        heartbeat = Heartbeat(self.context.pool, jobs)
        self.context.heartbeat = heartbeat
        heartbeat.start()
        self.worker = Worker(self.context.pool, jobs, self.manager().run_claimed, heartbeat) if run_queued else None
        if self.worker is not None:
            self.worker.start()
            self.keeper = CopyKeeper(self.context.database_url, self.context.registry,
                                     self.context.settings.tile_copy_interval_s, self.context.settings.styles_dir)
            self.keeper.start()

    def close(self) -> None:
        if self.keeper is not None:
            self.keeper.stop()
        if self.worker is not None:
            self.worker.stop()
        elif self.context.heartbeat is not None:
            self.context.heartbeat.stop()
        self.context.pool.close()


async def api_request(request: Any, api: API, body: bytes) -> APIRequest:
    """pygeoapi's request object from a Starlette request whose body we have already read (and capped)."""
    found = APIRequest(request, api.locales)
    found._data = body  # APIRequest.from_starlette does the same after awaiting the body
    if found.format is None:
        # pygeoapi answers some documents (job results) in HTML unless JSON is named; JSON is our default,
        # HTML only for clients that prefer it (browsers)
        accept = request.headers.get("accept", "")
        found._format = "html" if "text/html" in accept and "json" not in accept else "json"
    return found
