"""The planners' product API: overlap checks of proposed projects.

POST /api/planning/overlap-checks takes the proposal as
  - JSON: {"geometry": <GeoJSON geometry | Feature | FeatureCollection>} or {"project": "<fid>"}, with
    optional "crs", "proposed_use", "datetime", "rules" (ids);
  - multipart/form-data: a `file` (GeoPackage, zipped Shapefile, GeoJSON, KML) and the same fields;
  - the file itself as the body (Content-Type of the format, ?filename=plan.gpkg), parameters in the query.
The report comes as JSON (default), GeoJSON (`f=geojson`) or a self-contained HTML page (`f=html`).
GET /api/planning/overlap-rules lists the rules and the use codes they know.
"""

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from gis.analysis import overlap
from gis.analysis.proposal import MAX_UPLOAD_BYTES
from gis.errors import InvalidInput
from gis.security.examples import EXAMPLE_PROJECT
from services.auth.read_audit import audit_read
from services.auth.visibility import layer_view
from services.common.bodies import read_body, replay
from services.common.input_guard import nul_at
from services.common.state import ProjectState, State
from services.processes.access import caller_access
from services.processes.inputs import FORMATS, Upload, parse_inputs
from services.processes.planning import REPORT, OverlapInputs

GEOJSON = "application/geo+json"
JSON = "application/json"
_FIELDS = ("crs", "proposed_use", "datetime", "rules", "project", "filename")
_FILE_TYPES = ("application/geopackage+sqlite3", "application/x-sqlite3", "application/zip",
               "application/x-zip-compressed", "application/vnd.google-earth.kml+xml", "application/octet-stream")


router = APIRouter(prefix="/api/planning", tags=["Planning"])


def _merge(name: str, first: Any, second: Any) -> Any:
    if first is not None and second is not None and first != second:
        raise InvalidInput(name, "given twice, differently (in the body and in the query)")
    return first if first is not None else second


async def _inputs(request: Request) -> tuple[dict[str, Any], bytes | None, str | None, str | None]:
    """(fields, file bytes, file name, file media type) from whichever body the request has."""
    query = {k: request.query_params.get(k) for k in _FIELDS}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, MAX_UPLOAD_BYTES + 2**20)
    fields: dict[str, Any] = {}
    if content_type == JSON or (content_type == "" and body.lstrip().startswith(b"{")):
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError as exc:
            raise InvalidInput("body", f"not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise InvalidInput("body", "a JSON object: {\"geometry\": ..., \"crs\": ...} or {\"project\": ...}")
        unknown = sorted(set(parsed) - {"geometry", *_FIELDS})
        if unknown:
            raise InvalidInput(unknown[0], "unknown member; the body takes geometry, " + ", ".join(_FIELDS[:-1]))
        fields = dict(parsed)
        if (where := nul_at(parsed, "body")) is not None:
            raise InvalidInput(where, "contains a NUL character (\\u0000)")
        file_data, filename, media = None, None, None
    elif content_type == GEOJSON:
        try:
            fields["geometry"] = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput("body", f"not valid GeoJSON: {exc}") from None
        file_data, filename, media = None, None, None
    elif content_type == "multipart/form-data":
        form = await replay(request, body).form(max_files=1, max_fields=20)
        upload = form.get("file")
        if upload is not None and not isinstance(upload, UploadFile):
            raise InvalidInput("file", "the file part must be a file upload")
        for name in _FIELDS:
            value = form.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidInput(name, "a text field")
            fields[name] = value
        if form.get("geometry") is not None:
            try:
                fields["geometry"] = orjson.loads(str(form.get("geometry")))
            except orjson.JSONDecodeError as exc:
                raise InvalidInput("geometry", f"not valid GeoJSON: {exc}") from None
        if upload is not None:
            file_data = await upload.read()
            filename = fields.get("filename") or upload.filename
            media = upload.content_type
        else:
            file_data, filename, media = None, None, None
    elif content_type in _FILE_TYPES:
        file_data, filename, media = body, None, content_type
    else:
        raise InvalidInput("content-type", f"'{content_type[:60]}' is not accepted; send JSON, GeoJSON, "
                           "multipart/form-data with a file, or the file itself")
    for name in _FIELDS:
        fields[name] = _merge(name, fields.get(name), query.get(name))
    if file_data is not None and filename is None:
        filename = fields.get("filename")
    return fields, file_data, filename, media


def _format(request: Request, f: str | None) -> str:
    if f is not None:
        if f not in FORMATS:
            raise InvalidInput("f", f"'{f[:20]}' is not json, geojson or html")
        return f
    accept = request.headers.get("accept", "")
    if "text/html" in accept and JSON not in accept:
        return "html"
    if GEOJSON in accept and JSON + "," not in accept:
        return "geojson"
    return "json"


@router.post(
    "/overlap-checks",
    summary="Check a proposed project against the overlap rules",
    description=__doc__,
    responses={200: {"content": {JSON: {}, GEOJSON: {}, "text/html": {}},
                     "description": "The report: verdict, and per rule conflict, area (m²), share, features hit"},
               400: {"description": "Bad input (geometry, file, CRS, extent, parameter): the body says which"},
               404: {"description": "No such project"},
               413: {"description": "Upload over the size limit"}},
    openapi_extra={"requestBody": {"required": True, "content": {
        JSON: {"schema": {"type": "object", "properties": {
            "geometry": {"type": "object",
                         "description": "GeoJSON Polygon, MultiPolygon, Feature or FeatureCollection"},
            "project": {"type": "string", "description": "fid of a construction project (instead of geometry)"},
            "crs": {"type": "string", "description": "EPSG:NNNN, its OGC URI, CRS84 or GCJ-02 (default CRS84)"},
            "proposed_use": {"type": "string", "description": "GB 50137 code, e.g. R, B, M, R2"},
            "datetime": {"type": "string", "description": "check against the plans in force then"},
            "rules": {"type": "array", "items": {"type": "string"}}}},
            "example": {"project": EXAMPLE_PROJECT, "datetime": "2030-06-01"}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}, "crs": {"type": "string"},
            "proposed_use": {"type": "string"}, "datetime": {"type": "string"}, "rules": {"type": "string"}}}},
        GEOJSON: {"schema": {"type": "object"}},
        "application/geopackage+sqlite3": {"schema": {"type": "string", "format": "binary"}},
        "application/zip": {"schema": {"type": "string", "format": "binary"}},
        "application/vnd.google-earth.kml+xml": {"schema": {"type": "string", "format": "binary"}},
    }}},
)
async def overlap_check(request: Request, state: State,
                        f: Annotated[str | None, Query(description="json (default), geojson or html")] = None
                        ) -> Response:
    started = time.perf_counter()
    fmt = _format(request, f)
    rules = state.project.overlap_rules
    fields, file_data, filename, media = await _inputs(request)
    upload = {"file": Upload(file_data, media), "filename": filename} if file_data is not None else {}
    inputs: OverlapInputs = parse_inputs(OverlapInputs, {**fields, **upload, "format": fmt}, "body", unwrap=False)
    access = caller_access(request)
    proposal = await run_in_threadpool(inputs.proposal, state.settings.city_extent, state.settings.temp_dir)
    async with state.pool.connection() as conn:
        if proposal is None:
            proposal = await overlap.load_project_async(conn, rules, inputs.check_project(rules, access))
        found = await overlap.check_async(conn, rules, proposal, as_of=inputs.datetime, use=inputs.proposed_use,
                                          only=inputs.rules, access=access)
    asked = {k: str(v)[:2000] for k, v in fields.items() if k != "geometry" and v is not None}
    for result in found.results:
        if result.status != "not_evaluated" and result.layer.id in access:
            await audit_read(request, layer_view(request, result.layer.id), len(result.features), extra=asked)
    media_type, content = REPORT.answer(found, fmt)
    response = Response(content if isinstance(content, bytes | str) else orjson.dumps(content), media_type=media_type)
    # the server's own time for the check, input to report (for clients and the benchmark)
    response.headers["Server-Timing"] = f"check;dur={(time.perf_counter() - started) * 1000:.2f}"
    return response


@router.get("/overlap-rules", summary="The overlap rules and plan-against-plan checks in force")
async def overlap_rules(request: Request, project: ProjectState) -> Response:
    rules = project.overlap_rules
    access = caller_access(request)
    body = {
        "file": rules.path.name,  # by name: no answer shows where the server keeps its files
        "area_crs": overlap.AREA_CRS,
        "use_codes": list(rules.use_codes),
        # only the rules on layers the caller may read: the others would name layers it may not know
        "rules": [r.model_dump(mode="json", exclude_none=True) for r in rules.rules if r.layer in access],
        "plan_conflicts": [c.model_dump(mode="json", exclude_none=True) for c in rules.plan_conflicts
                           if c.a.layer in access and c.b.layer in access],
    }
    return Response(orjson.dumps(body), media_type=JSON)
