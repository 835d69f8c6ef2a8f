"""Deliveries over HTTP: a department's key posts a file; it becomes an async refresh job to follow.

POST /api/deliveries/{layer}                  multipart/form-data `file` (GeoPackage, zipped Shapefile, GeoJSON,
                                              CSV; the layer's source format) and optional `cut_at`; or the file
                                              as the body with `?filename=`. 202 with the delivery and its job
GET  /api/deliveries/{layer}                  the layer's deliveries, newest first (HTML: with an upload form)
GET  /api/deliveries/{layer}/{id}             one delivery: sender, checksum, job progress, result (counts,
                                              refresh id, conflicts; HTML refreshes itself while it runs)
GET  /api/deliveries/{layer}/{id}/rejects     the rejects file (CSV) of a refused delivery

Who: roles whose policy names the layer under `deliveries` post and follow; auditors and administrators follow.
The job is a row of ops.jobs (`/jobs/{jobId}` shows it to its sender too); this process runs it in a thread.
"""

import logging
import threading
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from gis.db.cluster import database_url
from gis.deliveries import store
from gis.errors import InvalidInput, NotFound, SourceError
from gis.jobs import queue
from gis.jobs.worker import Heartbeat
from gis.layers import LayerSpec
from gis.refresh.normalise import LOCAL_TIME
from gis.security import audit
from gis.security.disclosure import scrubbed, without_paths
from services.auth.credentials import caller_of, forbidden, unauthorized
from services.common import html, ogc
from services.common.bodies import read_body, replay
from services.common.parameters import Document, route_parameters
from services.common.state import AppState, State

LOGGER = logging.getLogger(__name__)
router = APIRouter(prefix="/api/deliveries", tags=["Deliveries"])
MAX_FILE_BYTES = 27 * 2**20  # under GIS_HTTP_MAX_UPLOAD_BYTES' default, with the form around it


def _layer(request: Request, state: AppState, layer_id: str, post: bool) -> LayerSpec:
    """401 without credentials; 404 for a layer the caller may not see; 403 for one it may not deliver/follow."""
    caller = caller_of(request)
    registry = state.registry
    if caller.anonymous:
        raise unauthorized("deliveries need a department's credentials (X-API-Key, Basic or Bearer)")
    if layer_id not in registry or not (caller.role.may_read(layer_id) or caller.role.may_deliver(layer_id)):
        raise NotFound(f"no layer '{layer_id[:200]}'")
    if caller.role.may_deliver(layer_id) or (not post and (caller.role.audit or caller.role.spec.all_layers)):
        return registry[layer_id]
    raise forbidden(f"role '{caller.role.name}' may not {'post' if post else 'follow'} deliveries of '{layer_id}'")


def _cut_at(value: str | None) -> datetime | None:
    if value is None or not value.strip():
        return None
    try:
        stamp = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput("cut_at", "an ISO 8601 time, e.g. 2026-12-01T18:00+08:00") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=LOCAL_TIME)


async def _upload(request: Request) -> tuple[str, bytes, datetime | None]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, MAX_FILE_BYTES + 2**20)
    if content_type == "multipart/form-data":
        form = await replay(request, body).form(max_files=1, max_fields=5)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("file", "the form needs a file part named 'file'")
        cut = form.get("cut_at")
        if cut is not None and not isinstance(cut, str):
            raise InvalidInput("cut_at", "a text field")
        return upload.filename or "delivery", await upload.read(), _cut_at(cut)
    filename = request.query_params.get("filename")
    if not filename:
        raise InvalidInput("filename", "name the file (?filename=pipes.gpkg), or post a multipart form")
    return filename, body, _cut_at(request.query_params.get("cut_at"))


def _run(state: AppState, spec: LayerSpec, delivery_id: int, job_id: str) -> None:
    """The job, in a thread of this process; a failure nobody foresaw fails the job, never silently."""
    url = database_url(state.settings)
    try:
        store.run_delivery(url, spec, delivery_id, state.settings.city_extent, state.settings.rejects_dir,
                           state.settings.temp_dir)
    except Exception:
        LOGGER.exception("delivery %s of %s failed", delivery_id, spec.id)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE ops.deliveries SET status = 'failed' WHERE delivery_id = %s", (delivery_id,))
            conn.execute("UPDATE ops.jobs SET status = 'failed', message = 'internal error', finished = "
                         "clock_timestamp(), updated = clock_timestamp() WHERE job_id = %s", (job_id,))


def _run_alive(heartbeat: Heartbeat | None, state: AppState, spec: LayerSpec, delivery_id: int, job_id: str) -> None:
    """_run with the job's heartbeat stamped (gis/jobs/): if this process dies, the job is failed with the reason."""
    if heartbeat is None:
        _run(state, spec, delivery_id, job_id)
        return
    with heartbeat.running(job_id):
        with heartbeat.pool.connection() as conn:
            queue.start_sync(conn, job_id, heartbeat.runner)
        _run(state, spec, delivery_id, job_id)


def _receive(state: AppState, spec: LayerSpec, sender: store.Sender, filename: str, content: bytes,
             cut_at: datetime | None, path: str) -> store.Received:
    with psycopg.connect(database_url(state.settings)) as conn:  # the primary: the one write path for deliveries
        received = store.receive(conn, spec, sender, filename, content, cut_at, queue.runner_name())
        audit.record(conn, audit.AuditEntry(sender.subject, sender.role, sender.method, sender.key_id,
                                            "delivery:post", spec.id, path,
                                            {"delivery": received.delivery_id, "checksum": received.checksum},
                                            None, 202))
        conn.commit()
    return received


@router.post("/{layer_id}", status_code=202, summary="Post a department's delivery of a layer (an async refresh job)",
             responses={202: {"description": "Received; follow `links` (the delivery, its job)"},
                        400: {"description": "No file, a file of another format than the layer's, a bad cut_at"},
                        401: {"description": "No credentials"}, 403: {"description": "The role may not deliver it"}},
             openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["file"], "properties": {
                     "file": {"type": "string", "format": "binary",
                              "description": "GeoPackage, zipped Shapefile, GeoJSON or CSV (the layer's format)"},
                     "cut_at": {"type": "string", "format": "date-time",
                                "description": "when the department cut it (default: when it arrives)"}}}}}}})
async def post_delivery(layer_id: str, request: Request, state: State) -> Response:
    spec = _layer(request, state, layer_id, post=True)
    filename, content, cut_at = await _upload(request)
    caller = caller_of(request)
    sender = store.Sender(caller.subject, caller.role.name, caller.method, caller.key_id)
    try:
        received = await run_in_threadpool(_receive, state, spec, sender, filename, content,
                                           cut_at or datetime.now(LOCAL_TIME), request.url.path)
    except SourceError as exc:
        raise InvalidInput("file", without_paths(str(exc).removeprefix("file: "))) from None
    heartbeat = state.processes.context.heartbeat
    threading.Thread(target=_run_alive, args=(heartbeat, state, spec, received.delivery_id, received.job_id),
                     daemon=True, name=f"delivery-{received.delivery_id}").start()
    path = f"/api/deliveries/{spec.id}/{received.delivery_id}"
    if ogc.wants_html(request, {}):
        return RedirectResponse(ogc.url(request, path, [("f", "html")]), status_code=303)
    answer = ogc.json_response({
        "delivery_id": received.delivery_id, "job_id": received.job_id, "checksum": received.checksum,
        "status": "accepted", "links": [
            ogc.link(ogc.url(request, path), "monitor", ogc.JSON, "the delivery and its result"),
            ogc.link(ogc.url(request, f"/jobs/{received.job_id}"), "http://www.opengis.net/def/rel/ogc/1.0/job",
                     ogc.JSON, "its job")]}, headers={"Location": ogc.url(request, path)})
    answer.status_code = 202
    return answer


@router.get("/{layer_id}", summary="A layer's deliveries, newest first (with an upload form as HTML)")
async def list_deliveries(layer_id: str, given: Document, request: Request, state: State,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    spec = _layer(request, state, layer_id, post=False)
    params = ogc.query_params(request, route_parameters(request))
    async with state.pool.connection() as conn:
        found = await store.list_deliveries(conn, spec.id, limit)
    if ogc.wants_html(request, params):
        may_post = caller_of(request).role.may_deliver(spec.id)
        return ogc.html_response(_list_page(request, spec, found, may_post))
    return ogc.json_response({"layer": spec.id, "deliveries": scrubbed(found)})


@router.get("/{layer_id}/{delivery_id}", summary="One delivery: sender, checksum, job progress, result")
async def delivery(layer_id: str, delivery_id: int, given: Document, request: Request, state: State) -> Response:
    spec = _layer(request, state, layer_id, post=False)
    params = given.check(request)
    async with state.pool.connection() as conn:
        record = await store.get_delivery(conn, spec.id, delivery_id)
    if ogc.wants_html(request, params):
        return ogc.html_response(_delivery_page(request, spec, record))
    return ogc.json_response(scrubbed(record))


@router.get("/{layer_id}/{delivery_id}/rejects", summary="The rejects file (CSV) of a refused delivery")
async def rejects(layer_id: str, delivery_id: int, request: Request, state: State) -> Response:
    spec = _layer(request, state, layer_id, post=False)
    async with state.pool.connection() as conn:
        text = await store.rejects_of(conn, spec.id, delivery_id)
    if text is None:
        raise NotFound(f"delivery {delivery_id} of '{spec.id}' has no rejects")
    return Response(text.encode("utf-8"), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f"attachment; filename=\"{spec.id}-delivery-{delivery_id}-rejects.csv\""})


# -- HTML: an upload form and a page that follows the job (no scripts: the page reloads while the job runs) --

def _list_page(request: Request, spec: LayerSpec, found: list[dict[str, Any]], may_post: bool) -> str:
    base = f"/api/deliveries/{spec.id}"
    rows = [(ogc.url(request, f"{base}/{d['delivery_id']}", [("f", "html")]), d, _changes(d)) for d in found]
    return html.html_page("ogc/deliveries.html", f"Deliveries · {spec.title.zh} {spec.title.en}",
                          [("deliveries", ogc.url(request, base, [("f", "html")]))],
                          action=ogc.url(request, base) if may_post else None, file_format=spec.source.format.value,
                          rows=rows)


def _changes(d: dict[str, Any]) -> str:
    result = d.get("result") or {}
    if result.get("status") == "succeeded":
        return (f"{result['inserted']} inserted, {result['updated']} updated, {result['closed']} closed, "
                f"{result['conflicts']} conflicts (refresh {result['refresh_id']})")
    return without_paths(str(result.get("message", d.get("job_message") or "")))


def _delivery_page(request: Request, spec: LayerSpec, d: dict[str, Any]) -> str:
    base = f"/api/deliveries/{spec.id}"
    rows = [("status", d["status"]), ("progress", f"{d['progress'] or 0}% {d['job_message'] or ''}"),
            ("received", d["received_at"]), ("sender", f"{d['subject']} ({d['role']})"), ("file", d["filename"]),
            ("sha256", d["checksum"]), ("bytes", d["size_bytes"]), ("cut at", d["cut_at"]), ("changes", _changes(d))]
    rejects = ogc.url(request, f"{base}/{d['delivery_id']}/rejects") if d["has_rejects"] else None
    # while the job runs the page follows it, reloading every two seconds (no script)
    running = {"refresh_seconds": 2} if d["status"] in ("accepted", "running") else {}
    return html.html_page("ogc/delivery.html", f"Delivery {d['delivery_id']} · {spec.id}",
                          [("deliveries", ogc.url(request, base, [("f", "html")]))], rows=rows, rejects=rejects,
                          **running)

