"""Real-time sensing (实时感知) for the pipeline application: sensors post readings, applications watch warnings.

POST /api/pipeline/sensor-readings   a JSON batch {"readings": [{sensor, observed_at, value, quality?, unit?}]},
                                     all or nothing, for roles whose policy `writes` the readings layer
GET  /api/pipeline/sensor-warnings   graded warnings (layers/sensor-thresholds.yml) as GeoJSON or an HTML page
                                     with a map; filters level, sensor, datetime; `since` (a cursor) and `wait`
                                     (long poll) to watch for new ones

The readings themselves are the registry layer `sensor_readings`, served by /collections like any event layer.
"""

import asyncio
import time
from dataclasses import replace
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from gis.analysis.pipeline import to_html
from gis.analysis.place_report import PlacesResult
from gis.errors import InvalidInput, NotFound
from gis.features.temporal import parse_datetime
from gis.security import audit
from gis.security.examples import EXAMPLE_SENSOR
from gis.sensing import readings as readings_
from gis.sensing.thresholds import READING_FIELDS, Thresholds
from gis.sensing.warnings import MAX_LIMIT, Cursor, InvalidCursor, WarningQuery, read_warnings
from gis.svg import Style
from services.auth.credentials import CREDENTIAL_PARAMETER, caller_of, forbidden, unauthorized
from services.auth.read_audit import audit_read
from services.auth.visibility import layer_view
from services.common.bodies import read_body
from services.common.parameters import route_parameters
from services.common.state import AppState, State

JSON = "application/json"
GEOJSON = "application/geo+json"
MAX_BODY_BYTES = 4 * 2**20  # 10,000 readings of about 120 bytes, with room
MAX_WAIT_S = 30
_POLL_S = 1.0
GRADED_FROM = frozenset({"sensor", "sensor_type", "utility", "value", "quality", "observed_at"})


router = APIRouter(prefix="/api/pipeline", tags=["Pipeline sensing"])


def _writer(request: Request, layer_id: str) -> None:
    """401 without credentials; a role that may read the layer but not write it 403; one that may not see
    it the layer's 404."""
    caller = caller_of(request)
    if caller.anonymous:
        raise unauthorized("posting readings needs credentials (X-API-Key, Basic or Bearer)")
    if caller.role.may_write(layer_id):
        return
    if caller.role.may_read(layer_id):
        raise forbidden(f"role '{caller.role.name}' may read '{layer_id}' but not post readings to it")
    raise NotFound("this role may not post readings")  # names no layer the caller may not know


async def _audit_write(request: Request, state: AppState, layer_id: str, count: int | None, status: int,
                       detail: dict[str, Any]) -> None:
    caller = caller_of(request)
    entry = audit.AuditEntry(caller.subject, caller.role.name, caller.method, caller.key_id, "write", layer_id,
                             request.url.path, detail, count, status)
    async with state.pool.connection() as conn:
        await audit.record_async(conn, entry)


@router.post(
    "/sensor-readings",
    summary="Post a batch of sensor readings (all or nothing)",
    responses={200: {"description": "Stored: counts of inserted, corrected and unchanged readings, and the "
                                    "warnings among them per level"},
               400: {"description": "The batch was refused whole; `errors` lists each bad reading's index, "
                                    "parameter and problem. For a writer that may not read the sensors layer only "
                                    "problems the body alone shows: readings of unknown sensors, or out of their "
                                    "type's range or unit, are then dropped without saying which (docs/security.md)"},
               401: {"description": "No or bad credentials"}, 403: {"description": "The role may not post readings"},
               413: {"description": "Body over 4 MiB"}, 503: {"description": "A refresh of the layer is running"}},
    openapi_extra={"requestBody": {"required": True, "content": {JSON: {
        "schema": {"type": "object", "required": ["readings"], "properties": {"readings": {
            "type": "array", "minItems": 1, "maxItems": readings_.MAX_READINGS, "items": {
                "type": "object", "required": ["sensor", "observed_at", "value"], "properties": {
                    "sensor": {"type": "string", "description": "pipe_sensors fid"},
                    "observed_at": {"type": "string", "format": "date-time",
                                    "description": "RFC 3339 with its offset"},
                    "value": {"type": "number"},
                    "quality": {"type": "string", "enum": ["good", "suspect", "bad"]},
                    "unit": {"type": "string", "description": "if given, the sensor type's unit"}}}}}},
        "example": {"readings": [{"sensor": EXAMPLE_SENSOR, "observed_at": "2026-10-31T08:30:00+08:00",
                                  "value": 0.31, "quality": "good"}]}}}}},
)
async def post_readings(request: Request, state: State) -> Response:
    thresholds = state.project.thresholds
    layer_id = thresholds.readings.id
    _writer(request, layer_id)
    raw = await read_body(request, MAX_BODY_BYTES)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise readings_.InvalidReadings("body", f"body: not JSON ({str(exc)[:80]})") from None
    sight = caller_of(request).role.sight
    # A writer that may not read the sensors layer (a gateway) gets no answer that depends on it, and one that may
    # not read the readings layer no counts that tell which readings were there before (gis.security.inference).
    blind = not sight.whole(thresholds.sensors.id, readings_.SENSOR_CHECKS.fields)
    tells_counts = sight.whole(layer_id, ())
    try:
        parsed = readings_.parse_batch(body, thresholds)
        async with state.pool.connection() as conn:
            if blind:
                checked = await readings_.check_blind(conn, thresholds, parsed)
                kept, rejected = checked.kept, checked.dropped
            else:
                kept, rejected = await readings_.check_against_sensors(conn, thresholds, parsed), 0
            result = await readings_.store(conn, thresholds, kept, f"POST {request.url.path} "
                                           f"({caller_of(request).subject})", rejected)
    except readings_.InvalidReadings as exc:
        await _audit_write(request, state, layer_id, None, 400, {"refused": str(exc)[:500]})
        raise
    unique = result.received + rejected
    answer: dict[str, Any] = {"layer": layer_id, "received": len(parsed), "duplicates_in_batch": len(parsed) - unique}
    if tells_counts and not blind:
        answer |= {"refresh_id": result.refresh_id, "inserted": result.inserted, "corrected": result.updated,
                   "unchanged": result.unchanged}
    await _audit_write(request, state, layer_id, len(parsed), 200, {"refresh_id": result.refresh_id,
                                                             "inserted": result.inserted,
                                                             "corrected": result.updated, "dropped": rejected})
    return Response(orjson.dumps(answer), media_type=JSON)


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _warning_query(request: Request, thresholds: Thresholds, level: str | None, sensor: str | None,
                   datetime_: str | None, since: str | None, limit: int) -> WarningQuery:
    declared = route_parameters(request)  # the route's own FastAPI parameters
    unknown = sorted(set(request.query_params) - declared - {CREDENTIAL_PARAMETER})
    if unknown:
        raise InvalidInput(unknown[0], "unknown parameter; this endpoint takes " + ", ".join(sorted(declared)))
    levels = _csv(level)
    known = [lv.id for lv in thresholds.levels]
    bad = [lv for lv in levels if lv not in known]
    if bad:
        raise InvalidInput("level", f"'{bad[0][:20]}' is not a level; levels are {', '.join(known)}")
    try:
        cursor = Cursor.decode(since) if since else None
    except InvalidCursor as exc:
        raise InvalidInput("since", str(exc)) from None
    return WarningQuery(levels=levels, sensors=_csv(sensor),
                        time=parse_datetime(datetime_) if datetime_ else None, since=cursor, limit=limit)


def _next_link(request: Request, cursor: Cursor) -> str:
    params = dict(request.query_params)
    params.pop("wait", None)
    params["since"] = cursor.encode()
    return str(request.url.replace_query_params(**params))


@router.get(
    "/sensor-warnings",
    summary="Graded warnings from sensor readings; watch them with `since` (and `wait`)",
    responses={200: {"content": {GEOJSON: {}, "text/html": {}},
                     "description": "GeoJSON FeatureCollection in write order, with `cursor` to pass as `since`"},
               400: {"description": "A bad parameter: the body names it"},
               404: {"description": "The caller may not read the readings layer"}},
)
async def sensor_warnings(
    request: Request,
    state: State,
    level: Annotated[str | None, Query(description="comma-separated levels: blue, yellow, orange, red")] = None,
    sensor: Annotated[str | None, Query(description="comma-separated sensor ids")] = None,
    datetime: Annotated[str | None, Query(description="instant or interval on observed_at (as /items)")] = None,
    since: Annotated[str | None, Query(description="the `cursor` of an earlier answer: only warnings newer")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    wait: Annotated[int, Query(ge=0, le=MAX_WAIT_S, description="seconds to hold the answer open until a "
                                                                 "warning arrives (long poll)")] = 0,
    f: Annotated[str | None, Query(description="geojson (default) or html")] = None,
) -> Response:
    thresholds = state.project.thresholds
    view = layer_view(request, thresholds.readings.id)
    if view.rows is not None:
        raise forbidden(f"warnings of '{view.source.id}' are not yet filtered by row rules; this role has one")
    if set(view.masked) & GRADED_FROM:  # a warning's level would tell the masked value
        raise forbidden(f"warnings are graded from fields of '{view.source.id}' this role may not read")
    if f not in (None, "geojson", "json", "html"):
        raise InvalidInput("f", f"'{f[:20]}' is not geojson or html")
    q = _warning_query(request, thresholds, level, sensor, datetime, since, limit)
    if not all(readings_.is_sensor_id(s) for s in q.sensors):
        raise InvalidInput("sensor", f"sensor ids are 1 to {readings_.MAX_SENSOR_ID} characters, no control characters")
    inspections = thresholds.inspections
    if inspections is not None and caller_of(request).role.may_read(inspections.id):
        q = replace(q, inspections=True)  # field inspections' severities join, for roles that may read them
    shown = tuple(name for name in READING_FIELDS if name not in view.masked)
    if q.sensors and "sensor" not in shown:
        raise InvalidInput("sensor", "unknown parameter for this role")
    deadline = time.monotonic() + wait
    while True:
        async with state.pool.connection() as conn:
            page = await read_warnings(conn, thresholds, q, shown)
        if page.features or time.monotonic() >= deadline:
            break
        await asyncio.sleep(_POLL_S)
    await audit_read(request, view, len(page.features))
    if q.inspections and inspections is not None:
        await audit_read(request, layer_view(request, inspections.id),
                         sum(1 for x in page.features if str(x["properties"]["threshold"]).startswith("inspection:")))
    if f == "html":
        return HTMLResponse(to_html(_as_result(thresholds, q, page.features)))
    body: dict[str, Any] = {
        "type": "FeatureCollection", "features": page.features, "numberReturned": len(page.features),
        "cursor": page.cursor.encode() if page.cursor else None,
        "levels": [lv.model_dump() for lv in thresholds.levels],
        "links": [{"rel": "self", "href": str(request.url), "type": GEOJSON}],
    }
    if page.cursor is not None:
        body["links"].append({"rel": "next" if page.more else "watch", "href": _next_link(request, page.cursor),
                              "type": GEOJSON})
    return Response(orjson.dumps(body), media_type=GEOJSON)


def _as_result(thresholds: Thresholds, q: WarningQuery, features: list[dict[str, Any]]) -> PlacesResult:
    per_level = {lv.id: sum(1 for x in features if x["properties"]["level"] == lv.id) for lv in thresholds.levels}
    places = [{**x, "properties": {"role": f"warning_{x['properties']['level']}", **x["properties"]}}
              for x in features]
    styles: dict[str, Style] = {f"warning_{lv.id}": (lv.colour, lv.colour, 1.0, 4 + i)
                                for i, lv in enumerate(thresholds.levels)}
    return PlacesResult("sensor-warnings", "管网传感器预警 · Sensor warnings",
                          {"level": list(q.levels), "sensor": list(q.sensors),
                           "since": q.since.encode() if q.since else None},
                          {"warnings": len(features), **per_level}, {"warnings": places},
                          thresholds.path.name, styles=styles)
