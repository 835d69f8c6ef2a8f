"""OGC API - Processes: `overlap-check` and `plan-conflicts`, with synchronous and asynchronous execution.

/processes and /jobs are answered by pygeoapi's process machinery (services.pygeoapi_bridge) from these
routes, so they sit under our one landing page and OpenAPI document. The processes themselves are
pygeoapi process plugins (BaseProcessor subclasses) over gis.analysis.
"""

import base64
import binascii
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
import psycopg
import pygeoapi.api.processes as processes_api
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gis.analysis import overlap, plan_conflicts, report
from gis.analysis.proposal import (
    MAX_UPLOAD_BYTES,
    InvalidProposal,
    Proposal,
    proposal_from_file,
    proposal_from_geojson,
)
from gis.analysis.rules import OverlapRules
from gis.db.cluster import database_url
from gis.db.pool import make_sync_pool
from gis.jobs.settings import JobSettings
from gis.layers import LayerRegistry
from gis.security import inference
from gis.security.examples import EXAMPLE_PROJECT
from gis.security.policy import Policy
from gis.sensing import readings
from gis.settings import Settings
from services import environment_processes, pipeline_processes, policing_processes, raster_processes
from services.common.bodies import read_body
from services.common.errors import InvalidParameter
from services.common.input_guard import nul_at
from services.common.state import AppState
from services.process_access import bind_caller, require_full_read
from services.process_inputs import input_value as _value
from services.processors import CallerBoundProcessor
from services.pygeoapi_bridge import Bridge, ProcessContext, api_request
from services.routers.planning import rules_of

OVERLAP_CHECK = "overlap-check"
PLAN_CONFLICTS = "plan-conflicts"
MAX_PATCHES = 10_000  # patches in a job's results, largest first; all of them are in ops.plan_conflict_patches
MAX_EXECUTE_BYTES = MAX_UPLOAD_BYTES * 4 // 3 + 2**20  # a base64 file input plus the rest of the request

# What this router adds to /conformance and to the landing page (their owner lists them).
CONFORMANCE = tuple(processes_api.CONFORMANCE_CLASSES)
LANDING_LINKS = (
    {"rel": "http://www.opengis.net/def/rel/ogc/1.0/processes", "href": "/processes", "type": "application/json",
     "title": "Processes: planning, pipeline, environment and policing analyses"},
    {"rel": "http://www.opengis.net/def/rel/ogc/1.0/job-list", "href": "/jobs", "type": "application/json",
     "title": "Jobs"},
)


# -- the processes -----------------------------------------------------------------------------------



class _Processor(CallerBoundProcessor):
    def _context(self) -> ProcessContext:
        if self.context is None:
            raise RuntimeError("process run without a context")
        context: ProcessContext = self.context
        return context


class OverlapCheckProcessor(_Processor):
    """A proposal (GeoJSON, an uploaded file, or a construction project's fid) against the overlap rules."""

    def execute(self, data: dict[str, Any], outputs: dict[str, Any] | None = None) -> tuple[str, Any]:
        self.known_inputs(data)
        context = self._context()
        rules = context.rules
        fmt = _value(data, "format") or "json"
        if fmt not in ("json", "geojson", "html"):
            raise InvalidProposal("format", f"'{str(fmt)[:20]}' is not json, geojson or html")
        only = _value(data, "rules")
        if isinstance(only, str):
            only = [r.strip() for r in only.split(",") if r.strip()]
        if only is not None and not (isinstance(only, list) and all(isinstance(r, str) for r in only)):
            raise InvalidProposal("rules", "a list of rule ids")
        with context.pool.connection() as conn:
            proposal = self._proposal(data, conn, rules)
            found = overlap.check(conn, rules, proposal, as_of=_value(data, "datetime"),
                                  use=_value(data, "proposed_use"), only=only, access=self.access)
            self.audit_reads(conn, {r.layer.id: len(r.features) for r in found.results
                                    if r.status != "not_evaluated"},
                             data)
        if fmt == "geojson":
            return "application/geo+json", orjson.dumps(report.to_geojson(found))
        if fmt == "html":
            return "text/html", report.to_html(found)
        return "application/json", report.to_json(found)

    def _proposal(self, data: dict[str, Any], conn: psycopg.Connection, rules: OverlapRules) -> Proposal:
        settings = self._context().settings
        given = [k for k in ("geometry", "file", "project") if data.get(k) is not None]
        if len(given) != 1:
            raise InvalidProposal("inputs", "give exactly one of geometry, file and project"
                                  + (f" (got {', '.join(given)})" if given else ""))
        crs = _value(data, "crs")
        use = _value(data, "proposed_use")
        if given[0] == "project":
            fid = _value(data, "project")
            if not isinstance(fid, str) or not fid:
                raise InvalidProposal("project", "the fid of a construction project, as a string")
            if not overlap.project_readable(rules, self.access):
                raise overlap.no_project(fid)
            return overlap.load_project(conn, rules, fid)
        if given[0] == "geometry":
            return proposal_from_geojson(_value(data, "geometry"), crs=crs, city_extent=settings.city_extent,
                                         proposed_use=use)
        raw = data["file"]
        media_type = raw.get("mediaType") if isinstance(raw, dict) else None
        encoded = _value(data, "file")
        if not isinstance(encoded, str):
            raise InvalidProposal("file", "the file's bytes as a base64 string "
                                  "(or {\"value\": ..., \"mediaType\": ...})")
        if len(encoded) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
            raise InvalidProposal("file", f"larger than {MAX_UPLOAD_BYTES:,} bytes")
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidProposal("file", "not valid base64") from None
        filename = _value(data, "filename")
        return proposal_from_file(content, filename if isinstance(filename, str) else None, media_type=media_type,
                                  crs=crs, city_extent=settings.city_extent, proposed_use=use,
                                  scratch_dir=settings.temp_dir)


class PlanConflictsProcessor(_Processor):
    """Conflict patches of one plan layer against another, with progress; usually run asynchronously."""

    def execute(self, data: dict[str, Any], outputs: dict[str, Any] | None = None) -> tuple[str, Any]:
        self.known_inputs(data)
        context = self._context()
        check_id = _value(data, "check")
        if not isinstance(check_id, str):
            raise InvalidProposal("check", "name the check: " + ", ".join(c.id for c in context.rules.plan_conflicts))
        check = next((c for c in context.rules.plan_conflicts if c.id == check_id), None)
        if check is not None:
            require_full_read(self.access, context.registry, (check.a.layer, check.b.layer))
        min_area = _value(data, "min_area_m2")
        if min_area is not None and (isinstance(min_area, bool) or not isinstance(min_area, int | float)):
            raise InvalidProposal("min_area_m2", "a number of square metres")
        with_patches = _value(data, "patches")
        with_patches = True if with_patches is None else bool(with_patches)
        job_id = self.job_id
        manager = self.manager

        def progress(percent: int, message: str) -> None:
            if manager is not None and job_id is not None:
                manager.update_job(job_id, {"progress": max(5, min(percent, 99)), "message": message})

        def cancelled() -> bool:
            return manager is not None and job_id is not None and manager.is_dismissed(job_id)

        summary = plan_conflicts.run_plan_conflicts(
            context.database_url, context.rules, check_id, run_id=job_id, as_of=_value(data, "datetime"),
            min_area_m2=min_area, workers=2, progress=progress, cancelled=cancelled)
        result: dict[str, Any] = {"summary": summary.as_dict()}
        with context.pool.connection() as conn:
            self.audit_reads(conn, {summary.a_layer: summary.a_features, summary.b_layer: summary.b_features},
                             data)
            if with_patches:
                result["patches"] = orjson.loads(plan_conflicts.patches_geojson(conn, summary.run_id, MAX_PATCHES))
        if with_patches:
            result["patches_truncated"] = summary.patches > MAX_PATCHES
        result["patches_table"] = f"ops.plan_conflict_patches WHERE run_id = '{summary.run_id}'"
        return "application/json", result


def process_metadata(rules: OverlapRules) -> dict[str, dict[str, Any]]:
    """Process descriptions from the rules file (ids, titles, the codes and rules it knows)."""
    rule_ids = [r.id for r in rules.rules]
    check_ids = [c.id for c in rules.plan_conflicts]
    string = {"type": "string"}
    overlap_md = {
        "version": "1.0.0", "id": OVERLAP_CHECK,
        "title": {"en": "Overlap check of a proposed project", "zh": "建设项目用地冲突检测"},
        "description": {
            "en": "Checks a proposal (GeoJSON, an uploaded GeoPackage / zipped Shapefile / GeoJSON / KML, or a "
                  "construction project's fid) against " + ", ".join(rule_ids) + ": per rule conflict or not, "
                  "overlap area (m², EPSG:4550), share, the features hit and the overlap geometries.",
            "zh": "对拟建项目检测生态保护红线、永久基本农田、城镇开发边界、控规用地性质、管线保护范围与水系冲突。"},
        "jobControlOptions": ["sync-execute", "async-execute"],
        "outputTransmission": ["value"],
        "keywords": ["overlap", "planning", "多规合一"],
        "links": [],
        "inputs": {
            "geometry": {"title": "Proposal (GeoJSON)", "description": "Polygon, MultiPolygon, Feature or "
                         "FeatureCollection; x = longitude/easting first", "minOccurs": 0, "maxOccurs": 1,
                         "schema": {"type": "object", "contentMediaType": "application/geo+json"}},
            "file": {"title": "Proposal file", "description": "GeoPackage, zipped Shapefile, GeoJSON or KML, base64 "
                     "({\"value\": ..., \"mediaType\": ...})", "minOccurs": 0, "maxOccurs": 1,
                     "schema": {"type": "string", "contentEncoding": "base64"}},
            "filename": {"title": "File name", "description": "The file's name (its extension is checked)",
                         "minOccurs": 0, "maxOccurs": 1, "schema": string},
            "project": {"title": "Construction project fid", "minOccurs": 0, "maxOccurs": 1, "schema": string},
            "crs": {"title": "CRS of the coordinates", "description": "EPSG:NNNN, its OGC URI, CRS84 or GCJ-02",
                    "minOccurs": 0, "maxOccurs": 1, "schema": {"type": "string", "default": "OGC:CRS84"}},
            "proposed_use": {"title": "Proposed use (GB 50137)", "minOccurs": 0, "maxOccurs": 1,
                             "schema": {"type": "string", "enum": list(rules.use_codes)}},
            "datetime": {"title": "Plans in force at", "description": "An instant or a date (future plans too)",
                         "minOccurs": 0, "maxOccurs": 1, "schema": {"type": "string"}},
            "rules": {"title": "Rules to check (default all)", "minOccurs": 0, "maxOccurs": 1,
                      "schema": {"type": "array", "items": {"type": "string", "enum": rule_ids}}},
            "format": {"title": "Report format", "minOccurs": 0, "maxOccurs": 1,
                       "schema": {"type": "string", "enum": ["json", "geojson", "html"], "default": "json"}},
        },
        "outputs": {"report": {"title": "Overlap report", "schema": {"type": "object",
                                                                     "contentMediaType": "application/json"}}},
        "example": {"inputs": {"geometry": {"type": "Polygon", "coordinates": [[
            [123.40, 41.75], [123.402, 41.75], [123.402, 41.752], [123.40, 41.752], [123.40, 41.75]]]},
            "proposed_use": "R"}},
    }
    conflicts_md = {
        "version": "1.0.0", "id": PLAN_CONFLICTS,
        "title": {"en": "Plan-against-plan conflict patches", "zh": "多规冲突图斑分析"},
        "description": {"en": "Conflict patches between two plan layers (" + ", ".join(check_ids) + ") with area, "
                              "class and a suggested disposal (keep / withdraw / deduct); slivers dropped and counted.",
                        "zh": "两规叠加冲突图斑：面积、类别与处置建议（保留 / 退出 / 扣除）。"},
        "jobControlOptions": ["async-execute", "sync-execute"],
        "outputTransmission": ["value"],
        "keywords": ["conflict", "planning", "冲突图斑"],
        "links": [],
        "inputs": {
            "check": {"title": "Check", "minOccurs": 1, "maxOccurs": 1,
                      "schema": {"type": "string", "enum": check_ids}},
            "datetime": {"title": "Plans in force at", "minOccurs": 0, "maxOccurs": 1, "schema": string},
            "min_area_m2": {"title": "Sliver threshold (m²)", "minOccurs": 0, "maxOccurs": 1,
                            "schema": {"type": "number", "minimum": 0}},
            "patches": {"title": "Include the patches (GeoJSON)", "minOccurs": 0, "maxOccurs": 1,
                        "schema": {"type": "boolean", "default": True}},
        },
        "outputs": {"result": {"title": "Summary and patches", "schema": {"type": "object",
                                                                          "contentMediaType": "application/json"}}},
        "example": {"inputs": {"check": check_ids[0] if check_ids else "", "min_area_m2": 50}},
    }
    return {
        OVERLAP_CHECK: {"name": f"{__name__}.OverlapCheckProcessor", "metadata": overlap_md},
        PLAN_CONFLICTS: {"name": f"{__name__}.PlanConflictsProcessor", "metadata": conflicts_md},
    }


# -- routes ------------------------------------------------------------------------------------------

def check_derive(policy: Policy, rules: OverlapRules) -> None:
    """The policy's `derive` entries name dependencies the code has, in modes they support (else the service does
    not start, naming the role and the entry)."""
    known = overlap.dependencies(rules) | {readings.SENSOR_CHECKS.id: readings.SENSOR_CHECKS}
    inference.check_declared({name: role.spec.derive for name, role in policy.roles.items()}, known)


def make_bridge(settings: Settings, registry: LayerRegistry, rules: OverlapRules, policy: Policy,
                application_name: str = "gis-processes") -> Bridge:
    """Every process we offer, over a pool of its own (not opened): the service's and `gis worker`'s."""
    url = database_url(settings)
    pool = make_sync_pool(url, settings, application_name)
    return Bridge(ProcessContext(settings, registry, rules, url, pool, policy),
                  process_metadata(rules) | pipeline_processes.process_metadata(settings.layers_dir, registry)
                  | environment_processes.process_metadata(settings.layers_dir, registry)
                  | policing_processes.process_metadata(settings.layers_dir, registry)
                  | raster_processes.process_metadata(registry))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.gis
    rules = rules_of(app)
    check_derive(app.state.auth.policy, rules)
    bridge = make_bridge(state.settings, state.registry, rules, app.state.auth.policy)
    bridge.context.pool.follow(state.pool)  # the service's breaker: 503 at once while the database is away
    jobs: JobSettings = app.state.jobs
    await run_in_threadpool(bridge.open, jobs, jobs.in_service)
    app.state.processes = bridge
    try:
        yield
    finally:
        await run_in_threadpool(bridge.close)


router = APIRouter(tags=["Processes"], lifespan=lifespan)


def bridge_of(request: Request) -> Bridge:
    bridge: Bridge = request.app.state.processes
    return bridge


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
        raise InvalidParameter("body", 'an execute request is needed: {"inputs": {...}}')
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidParameter("body", f"not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(parsed, dict):
        raise InvalidParameter("body", f'a JSON object {{"inputs": {{...}}}}, not {type(parsed).__name__}')
    for name, kind in (("inputs", dict), ("outputs", dict), ("response", str), ("subscriber", dict)):
        if parsed.get(name) is not None and not isinstance(parsed[name], kind):
            raise InvalidParameter(name, f"must be a JSON {'object' if kind is dict else 'string'}")
    where = nul_at(parsed.get("inputs"), "inputs")
    if where is not None:
        raise InvalidParameter(where, "contains a NUL character (\\u0000)")


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
