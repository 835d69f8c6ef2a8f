"""OGC API - Processes: /processes and /jobs, with synchronous and asynchronous execution.

The routes hand each request to pygeoapi's process machinery (services.processes.pygeoapi_bridge), so the
processes sit under our one landing page and OpenAPI document; the processes themselves are the package
services.processes.
"""

from collections.abc import Callable
from typing import Annotated, Any

import orjson
import pygeoapi.api.processes as processes_api
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gis.analysis.proposal import MAX_UPLOAD_BYTES
from gis.errors import InvalidInput
from gis.security.examples import EXAMPLE_PROJECT
from services.common.bodies import read_body
from services.common.input_guard import nul_at
from services.common.state import State
from services.processes.access import bind_caller
from services.processes.pygeoapi_bridge import Bridge, api_request

MAX_EXECUTE_BYTES = MAX_UPLOAD_BYTES * 4 // 3 + 2**20  # a base64 file input plus the rest of the request

# What this router adds to /conformance and to the landing page (their owner lists them).
CONFORMANCE = tuple(processes_api.CONFORMANCE_CLASSES)
LANDING_LINKS = (
    {"rel": "http://www.opengis.net/def/rel/ogc/1.0/processes", "href": "/processes", "type": "application/json",
     "title": "Processes: planning, pipeline, environment and policing analyses"},
    {"rel": "http://www.opengis.net/def/rel/ogc/1.0/job-list", "href": "/jobs", "type": "application/json",
     "title": "Jobs"},
)

router = APIRouter(tags=["Processes"])


async def bridge_of(state: State) -> Bridge:
    """The processes and their jobs (the routes' dependency; a coroutine function, so called on the event loop)."""
    return state.processes


async def _call(request: Request, bridge: Bridge, body: bytes, function: Callable[..., tuple[dict[str, Any], int, Any]],
                *args: str) -> Response:
    bind_caller(request)
    api = bridge.api(str(request.base_url))
    api_req = await api_request(request, api, body)
    if not api_req.is_valid():
        headers, status, content = api.get_format_exception(api_req)
    else:
        headers, status, content = await run_in_threadpool(function, api, api_req, *args)
    if isinstance(content, dict) and 400 <= int(status) < 500 and "parameter" not in content:
        # pygeoapi's own refusals name no parameter: the body's (POST) or the query's, as our 400s do
        content["parameter"] = "body" if request.method == "POST" else "query"
    if isinstance(content, dict | list):
        content = orjson.dumps(content)
    headers = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "content-encoding")}
    if content and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"  # pygeoapi's dismissal answer (JSON) names no type
    return Response(content=content if status != 204 else b"", status_code=int(status), headers=headers)


ProcessId = Annotated[str, Path(description="overlap-check or plan-conflicts", max_length=64)]
JobId = Annotated[str, Path(description="The job's id", max_length=64)]


@router.get("/processes", summary="The processes offered")
async def list_processes(request: Request, bridge: Annotated[Bridge, Depends(bridge_of)]) -> Response:
    return await _call(request, bridge, b"", processes_api.describe_processes)


@router.get("/processes/{process_id}", summary="A process's description: inputs, outputs, job control")
async def describe_process(process_id: ProcessId, request: Request,
                           bridge: Annotated[Bridge, Depends(bridge_of)]) -> Response:
    return await _call(request, bridge, b"", processes_api.describe_processes, process_id)


@router.post("/processes/{process_id}/execution", status_code=200,
             summary="Execute a process (synchronous by default; `Prefer: respond-async` for a job)",
             responses={201: {"description": "Job accepted (asynchronous); its status at the Location header"},
                        400: {"description": "Bad input: the description says which"},
                        413: {"description": "Request too large"}},
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "type": "object", "required": ["inputs"], "properties": {
                     "inputs": {"type": "object", "description": "The process's inputs, by id (GET /processes/{id})"},
                     "outputs": {"type": "object"},
                     "response": {"type": "string", "enum": ["raw", "document"], "default": "raw"}}},
                 "example": {"inputs": {"project": EXAMPLE_PROJECT, "format": "json"}}}}}})
async def execute_process(process_id: ProcessId, request: Request,
                          bridge: Annotated[Bridge, Depends(bridge_of)]) -> Response:
    body = await read_body(request, MAX_EXECUTE_BYTES)
    check_execute_request(body)
    return await _call(request, bridge, body, processes_api.execute_process, process_id)


def check_execute_request(body: bytes) -> None:
    """An execute request is a JSON object with an object of inputs: anything else (`[1]`, `"x"`, `null`,
    `true`, NaN, a number past a double, nesting past orjson's limit) is a 400 here, before pygeoapi reads it."""
    if not body.strip():
        raise InvalidInput("body", 'an execute request is needed: {"inputs": {...}}')
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("body", f"not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(parsed, dict):
        raise InvalidInput("body", f'a JSON object {{"inputs": {{...}}}}, not {type(parsed).__name__}')
    for name, kind in (("inputs", dict), ("outputs", dict), ("response", str), ("subscriber", dict)):
        if parsed.get(name) is not None and not isinstance(parsed[name], kind):
            raise InvalidInput(name, f"must be a JSON {'object' if kind is dict else 'string'}")
    where = nul_at(parsed.get("inputs"), "inputs")
    if where is not None:
        raise InvalidInput(where, "contains a NUL character (\\u0000)")


@router.get("/jobs", summary="Jobs, newest first")
async def list_jobs(request: Request, bridge: Annotated[Bridge, Depends(bridge_of)],
                    limit: Annotated[int | None, Query(ge=1, le=1000, description="Jobs per page")] = None,
                    offset: Annotated[int | None, Query(ge=0, le=2**31, description="Jobs to skip")] = None
                    ) -> Response:
    # Declared (and so checked, naming the parameter) here; pygeoapi reads them from the request itself.
    return await _call(request, bridge, b"", processes_api.get_jobs)


@router.get("/jobs/{job_id}", summary="A job's status and progress")
async def job_status(job_id: JobId, request: Request, bridge: Annotated[Bridge, Depends(bridge_of)]) -> Response:
    return await _call(request, bridge, b"", processes_api.get_jobs, job_id)


@router.delete("/jobs/{job_id}", summary="Dismiss a running job, or delete a finished one and its results")
async def dismiss_job(job_id: JobId, request: Request, bridge: Annotated[Bridge, Depends(bridge_of)]) -> Response:
    return await _call(request, bridge, b"", processes_api.delete_job, job_id)


@router.get("/jobs/{job_id}/results", summary="A finished job's results")
async def job_results(job_id: JobId, request: Request, bridge: Annotated[Bridge, Depends(bridge_of)]) -> Response:
    return await _call(request, bridge, b"", processes_api.get_job_result, job_id)
