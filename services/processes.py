"""OGC API - Processes: `overlap-check` and `plan-conflicts`, with synchronous and asynchronous execution.

/processes and /jobs are answered by pygeoapi's process machinery (services.pygeoapi_bridge) from these
routes, so they sit under our one landing page and OpenAPI document. The processes themselves are
pygeoapi process plugins (services.processors.Process subclasses) over gis.analysis.
"""

from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import orjson
import pygeoapi.api.processes as processes_api
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import AfterValidator, Field, ValidationInfo, create_model, model_validator
from starlette.concurrency import run_in_threadpool

from gis.analysis import overlap, plan_conflicts, report
from gis.analysis.overlap import Access
from gis.analysis.proposal import (
    MAX_UPLOAD_BYTES,
    Proposal,
    proposal_from_file,
    proposal_from_geojson,
)
from gis.analysis.rules import OverlapRules
from gis.db.cluster import database_url
from gis.db.pool import make_sync_pool
from gis.errors import InvalidInput
from gis.project import Project
from gis.security import inference
from gis.security.examples import EXAMPLE_PROJECT
from gis.security.policy import Policy
from gis.sensing import readings
from gis.settings import Settings
from services import environment_processes, pipeline_processes, policing_processes, raster_processes
from services.common.bodies import read_body
from services.common.input_guard import nul_at
from services.common.state import app_state
from services.process_access import bind_caller
from services.process_inputs import (
    JSON_RESULT,
    Base64File,
    Format,
    GeoJSON,
    Inputs,
    Names,
    names_of,
    one_of,
)
from services.processors import Process, Report
from services.pygeoapi_bridge import Bridge, ProcessContext, api_request

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

REPORT = Report(report.to_json, report.to_geojson, report.to_html)


def _fid(value: str) -> str:
    if not value:
        raise ValueError("the fid of a construction project, as a string")
    return value


class OverlapInputs(Inputs):
    """An overlap check's input, wherever it comes from (the process's inputs, the planning API's JSON body, form
    fields or query): exactly one of geometry, file and project, and what the check is asked for."""

    qualified: ClassVar[frozenset[str]] = frozenset({"file"})

    geometry: GeoJSON | None = Field(None, title="Proposal (GeoJSON)", description="Polygon, MultiPolygon, Feature "
                                     "or FeatureCollection; x = longitude/easting first")
    file: Base64File | None = Field(None, title="Proposal file", description="GeoPackage, zipped Shapefile, GeoJSON "
                                    "or KML, base64 ({\"value\": ..., \"mediaType\": ...})")
    filename: str | None = Field(None, title="File name", description="The file's name (its extension is checked)")
    project: Annotated[str, AfterValidator(_fid)] | None = Field(None, title="Construction project fid")
    crs: str | None = Field(None, title="CRS of the coordinates", description="EPSG:NNNN, its OGC URI, CRS84 or "
                            "GCJ-02", json_schema_extra={"default": "OGC:CRS84"})
    proposed_use: str | None = Field(None, title="Proposed use (GB 50137)")
    datetime: str | None = Field(None, title="Plans in force at",
                                 description="An instant or a date (future plans too)")
    rules: Names | None = Field(None, title="Rules to check (default all)")
    format: Format = Field("json", title="Report format")

    @model_validator(mode="after")
    def _one_proposal(self, info: ValidationInfo) -> "OverlapInputs":
        given = [k for k in ("geometry", "file", "project") if getattr(self, k) is not None]
        if len(given) != 1:
            where = (info.context or {}).get("where", "inputs")
            raise InvalidInput(where, "give exactly one of geometry, file and project"
                                  + (f" (got {', '.join(given)})" if given else ""))
        return self

    def proposal(self, city_extent: tuple[float, float, float, float]) -> Proposal | None:
        """The proposal from the geometry or the file (None for a project, which the caller loads)."""
        if self.geometry is not None:
            return proposal_from_geojson(self.geometry, crs=self.crs, city_extent=city_extent,
                                         proposed_use=self.proposed_use)
        if self.file is not None:
            return proposal_from_file(self.file.content, self.filename, media_type=self.file.media_type, crs=self.crs,
                                      city_extent=city_extent, proposed_use=self.proposed_use)
        return None

    def check_project(self, rules: OverlapRules, access: Access) -> str:
        """The project's fid, if the caller may name proposals by fid (else as for a project that does not exist)."""
        fid = str(self.project)
        if not overlap.project_readable(rules, access):
            raise overlap.no_project(fid)
        return fid


class OverlapCheckProcessor(Process):
    """A proposal (GeoJSON, an uploaded file, or a construction project's fid) against the overlap rules."""

    id = OVERLAP_CHECK
    title = ("Overlap check of a proposed project", "建设项目用地冲突检测")
    keywords = ("overlap", "planning", "多规合一")
    Inputs = OverlapInputs
    Outputs = create_model("OverlapOutputs", report=(JSON_RESULT, Field(title="Overlap report")))

    @classmethod
    def inputs(cls, context: ProcessContext) -> type[Inputs]:
        rules = context.rules
        return create_model("OverlapInputsDescribed", __base__=OverlapInputs, proposed_use=(
            one_of(rules.use_codes) | None, Field(None, title="Proposed use (GB 50137)")), rules=(
            names_of(r.id for r in rules.rules) | None, Field(None, title="Rules to check (default all)")))

    @classmethod
    def summary(cls, context: ProcessContext) -> dict[str, str]:
        return {"en": "Checks a proposal (GeoJSON, an uploaded GeoPackage / zipped Shapefile / GeoJSON / KML, or a "
                      "construction project's fid) against " + ", ".join(r.id for r in context.rules.rules)
                      + ": per rule conflict or not, overlap area (m², EPSG:4550), share, the features hit and the "
                      "overlap geometries.",
                "zh": "对拟建项目检测生态保护红线、永久基本农田、城镇开发边界、控规用地性质、管线保护范围与水系冲突。"}

    @classmethod
    def example(cls, context: ProcessContext) -> dict[str, Any]:
        return {"geometry": {"type": "Polygon", "coordinates": [[
            [123.40, 41.75], [123.402, 41.75], [123.402, 41.752], [123.40, 41.752], [123.40, 41.75]]]},
            "proposed_use": "R"}

    def run(self, inputs: OverlapInputs) -> tuple[str, Any]:
        rules = self.context.rules
        with self.connection() as conn:
            proposal = inputs.proposal(self.context.settings.city_extent)
            if proposal is None:
                proposal = overlap.load_project(conn, rules, inputs.check_project(rules, self.access))
            found = overlap.check(conn, rules, proposal, as_of=inputs.datetime, use=inputs.proposed_use,
                                  only=inputs.rules, access=self.access)
            self.audit_reads(conn, {r.layer.id: len(r.features) for r in found.results
                                    if r.status != "not_evaluated"})
        return REPORT.answer(found, inputs.format)


class PlanConflictsInputs(Inputs):
    check: str = Field(title="Check")
    datetime: str | None = Field(None, title="Plans in force at")
    min_area_m2: float | None = Field(None, title="Sliver threshold (m²)", ge=0)
    patches: bool = Field(True, title="Include the patches (GeoJSON)")


class PlanConflictsProcessor(Process):
    """Conflict patches of one plan layer against another, with progress; usually run asynchronously."""

    id = PLAN_CONFLICTS
    title = ("Plan-against-plan conflict patches", "多规冲突图斑分析")
    keywords = ("conflict", "planning", "冲突图斑")
    job_control = ("async-execute", "sync-execute")
    Inputs = PlanConflictsInputs
    Outputs = create_model("PlanConflictsOutputs", result=(JSON_RESULT, Field(title="Summary and patches")))

    @classmethod
    def inputs(cls, context: ProcessContext) -> type[Inputs]:
        return create_model("PlanConflictsInputsDescribed", __base__=PlanConflictsInputs, check=(
            one_of(c.id for c in context.rules.plan_conflicts), Field(title="Check")))

    @classmethod
    def summary(cls, context: ProcessContext) -> dict[str, str]:
        return {"en": "Conflict patches between two plan layers (" + ", ".join(
                    c.id for c in context.rules.plan_conflicts) + ") with area, class and a suggested disposal "
                      "(keep / withdraw / deduct); slivers dropped and counted.",
                "zh": "两规叠加冲突图斑：面积、类别与处置建议（保留 / 退出 / 扣除）。"}

    @classmethod
    def example(cls, context: ProcessContext) -> dict[str, Any]:
        checks = context.rules.plan_conflicts
        return {"check": checks[0].id if checks else "", "min_area_m2": 50}

    def run(self, inputs: PlanConflictsInputs) -> tuple[str, Any]:
        context = self.context
        check = next((c for c in context.rules.plan_conflicts if c.id == inputs.check), None)
        if check is not None:
            self.require_full_read((check.a.layer, check.b.layer))
        job_id = self.job_id
        manager = self.manager

        def progress(percent: int, message: str) -> None:
            if manager is not None and job_id is not None:
                manager.update_job(job_id, {"progress": max(5, min(percent, 99)), "message": message})

        def cancelled() -> bool:
            return manager is not None and job_id is not None and manager.is_dismissed(job_id)

        summary = plan_conflicts.run_plan_conflicts(
            context.database_url, context.rules, inputs.check, run_id=job_id, as_of=inputs.datetime,
            min_area_m2=inputs.min_area_m2, workers=2, progress=progress, cancelled=cancelled)
        result: dict[str, Any] = {"summary": summary.as_dict()}
        with self.connection() as conn:
            self.audit_reads(conn, {summary.a_layer: summary.a_features, summary.b_layer: summary.b_features})
            if inputs.patches:
                result["patches"] = orjson.loads(plan_conflicts.patches_geojson(conn, summary.run_id, MAX_PATCHES))
        if inputs.patches:
            result["patches_truncated"] = summary.patches > MAX_PATCHES
        result["patches_table"] = f"ops.plan_conflict_patches WHERE run_id = '{summary.run_id}'"
        return "application/json", result


PROCESSES = (OverlapCheckProcessor, PlanConflictsProcessor)


# -- routes ------------------------------------------------------------------------------------------

def check_derive(policy: Policy, rules: OverlapRules) -> None:
    """The policy's `derive` entries name dependencies the code has, in modes they support (else the service does
    not start, naming the role and the entry)."""
    known = overlap.dependencies(rules) | {readings.SENSOR_CHECKS.id: readings.SENSOR_CHECKS}
    inference.check_declared({name: role.spec.derive for name, role in policy.roles.items()}, known)


def process_classes() -> list[type[Process]]:
    """Every process we offer."""
    return [*PROCESSES, *pipeline_processes.PROCESSES, *environment_processes.PROCESSES,
            *policing_processes.PROCESSES, *raster_processes.PROCESSES]


def make_bridge(settings: Settings, project: Project, application_name: str = "gis-processes") -> Bridge:
    """Every process we offer, over a pool of its own (not opened): the service's and `gis worker`'s. Each one's
    inputs model is built here, once."""
    url = database_url(settings)
    pool = make_sync_pool(url, settings, application_name)
    context = ProcessContext(settings, project, url, pool)
    processes: dict[str, dict[str, Any]] = {}
    for cls in process_classes():
        context.inputs[cls.id] = cls.inputs(context)
        processes[cls.id] = cls.describe(context, context.inputs[cls.id])
    return Bridge(context, processes)


router = APIRouter(tags=["Processes"])


def bridge_of(request: Request) -> Bridge:
    return app_state(request).processes


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
