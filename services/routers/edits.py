"""OGC API Features Part 4: create, replace, update (JSON merge patch) and delete features.

POST   /collections/{id}/items              a GeoJSON Feature; 201 with Location and ETag
PUT    /collections/{id}/items/{fid}        the whole new version; 204 with ETag
PATCH  /collections/{id}/items/{fid}        a JSON merge patch (RFC 7396) of the Feature; 204 with ETag
DELETE /collections/{id}/items/{fid}        204

Headers: `Content-Crs` (any CRS the service serves; default CRS84), `If-Match` (the feature's ETag from
GET; 412 when stale, required where the layer says so), `X-Edit-Reason` (why, kept in the change log;
percent-encode non-ASCII text). Who may do what is the access policy's `edits` grant; the row rule holds
for what is written, and a masked field cannot be written (403). The work is gis.edits; this is HTTP.
"""

from typing import Any
from urllib.parse import quote, unquote

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gis.db.cluster import database_url
from gis.edits.feature import InvalidFeature
from gis.edits.store import Editor, EditRequest, EditResult, Operation, apply_edit, connect_primary
from gis.errors import InvalidInput
from gis.features import crs as crs_
from gis.security.policy import EditOperation
from services.auth.credentials import caller_of, forbidden, unauthorized
from services.auth.visibility import layer_view
from services.common import encoded_paths
from services.common.bodies import read_body
from services.common.parameters import CollectionId, FeatureId
from services.common.state import AppState, State

router = APIRouter(tags=["OGC API Features: editing (Part 4)"])

CONFORMANCE = (
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/update",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/optimistic-locking-etags",
)
MAX_BODY_BYTES = 8 * 2**20  # one feature: a long pipe or a detailed parcel fits with room
REASON_HEADER = "x-edit-reason"
MAX_REASON = 1000
_GRANT = {Operation.create: EditOperation.create, Operation.replace: EditOperation.update,
          Operation.update: EditOperation.update, Operation.delete: EditOperation.delete}

_FEATURE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["type", "geometry", "properties"],
    "properties": {
        "type": {"type": "string", "enum": ["Feature"]},
        "id": {"oneOf": [{"type": "string"}, {"type": "integer"}],
               "description": "optional on create: the new feature's id (else one is made); on replace, if given, "
                              "the path's"},
        "geometry": {"type": "object", "description": "GeoJSON geometry in the Content-Crs (default CRS84), of the "
                     "layer's type (single or multi; see the collection's geometryType)"},
        "properties": {"type": "object", "description": "the layer's fields (see /collections/{id}/queryables): "
                       "types, coded values and required fields as a delivery is checked; valid_from/valid_to only "
                       "for layers whose features carry their own validity"}}}
_PATCH_SCHEMA: dict[str, Any] = {
    "type": "object", "description": "JSON merge patch (RFC 7396) of the Feature: `properties` members replace the "
    "feature's (null clears one); `geometry`, if given, replaces it",
    "properties": {"properties": {"type": "object"}, "geometry": {"type": "object"}}}
_FEATURE = "/collections/{collectionId}/items/{featureId}"
_HEADERS = [
    {"name": "Content-Crs", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "CRS of the body's coordinates, as a URI in angle brackets (any CRS the service serves); "
                    "default CRS84"},
    {"name": "X-Edit-Reason", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "Why the edit is made (kept in the change log, ops.edits); percent-encoded UTF-8"},
]
_IF_MATCH = {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
             "description": "The ETag of the version being changed (from GET); 412 when it is no longer current"}
_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body breaks the layer's rules; `parameter` names the member (properties.x, geometry)"},
    401: {"description": "Editing needs credentials"},
    403: {"description": "The role may not make this edit, write this field, or put the feature outside its rows"},
    409: {"description": "A feature with this id exists (create)"},
    412: {"description": "If-Match names a version that is no longer current"},
    428: {"description": "The layer requires If-Match"},
    503: {"description": "A refresh of the layer is running; send the edit again"},
}


def _body_doc(schema: dict[str, Any], media_types: tuple[str, ...]) -> dict[str, Any]:
    return {"required": True, "content": {m: {"schema": schema} for m in media_types}}


def _feature_change(done: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """The route arguments of a change to one feature (PUT, PATCH, DELETE): 204 (`done`), 404 for a feature the
    caller cannot see, If-Match, and the body the change takes (DELETE takes none, nor its Content-Crs)."""
    extra: dict[str, Any] = {"parameters": [*(_HEADERS if body else _HEADERS[1:]), _IF_MATCH]}
    if body:
        extra["requestBody"] = body
    return {"status_code": 204, "responses": {204: {"description": done}, 404: {
        "description": "No such feature (or one outside the caller's rows)"}, **_ANSWERS}, "openapi_extra": extra}


def _editor(request: Request, layer_id: str, operation: Operation) -> Editor:
    """401 without credentials; the layer's 404 if the caller may not see it; 403 without the grant."""
    caller = caller_of(request)
    view = layer_view(request, layer_id)
    if caller.anonymous:
        raise unauthorized("editing needs credentials (X-API-Key, Basic or Bearer)")
    if not caller.role.may_edit(layer_id, _GRANT[operation]):
        raise forbidden(f"role '{caller.role.name}' may not {_GRANT[operation].value} features of '{layer_id}'")
    return Editor(caller.subject, caller.role.name, caller.method, caller.key_id, caller.claims, view.rows,
                  view.masked)


def _content_crs(request: Request) -> crs_.Crs:
    value = request.headers.get("content-crs")
    if value is None:
        return crs_.CRS84
    return crs_.parse_crs(value.strip().removeprefix("<").removesuffix(">"), "Content-Crs")


def _reason(request: Request) -> str | None:
    value = request.headers.get(REASON_HEADER)
    if value is None or not value.strip():
        return None
    try:
        text = unquote(value.strip(), errors="strict") if "%" in value else value.strip()
    except UnicodeDecodeError:
        raise InvalidInput("X-Edit-Reason", "percent-encode UTF-8 text") from None
    if len(text) > MAX_REASON:
        raise InvalidInput("X-Edit-Reason", f"at most {MAX_REASON} characters")
    return text


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await read_body(request, MAX_BODY_BYTES)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("body", f"not JSON ({str(exc)[:80]})") from None
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object (a GeoJSON Feature, or a merge patch for PATCH)")
    return body


def _apply(state: AppState, edit: EditRequest) -> EditResult:
    with connect_primary(database_url(state.settings), edit.editor) as conn:
        return apply_edit(conn, state.registry, state.settings.city_extent, edit)


async def _edit(request: Request, state: AppState, collection_id: str, operation: Operation,
                feature_id: str | None) -> EditResult:
    if feature_id is not None:
        feature_id = encoded_paths.original(request, feature_id)
    editor = _editor(request, collection_id, operation)
    spec = state.registry[collection_id]
    body = None if operation is Operation.delete else await _json_body(request)
    edit = EditRequest(spec, operation, editor, feature_id, body, _content_crs(request),
                       request.headers.get("if-match"), _reason(request), request.url.path)
    try:
        return await run_in_threadpool(_apply, state, edit)
    except InvalidFeature as exc:
        raise InvalidInput(exc.parameter, str(exc).partition(": ")[2]) from None


def _location(request: Request, collection_id: str, fid: str) -> str:
    return str(request.base_url).rstrip("/") + f"/collections/{collection_id}/items/{quote(fid, safe='')}"


def _answer(result: EditResult, status: int, extra: dict[str, str] | None = None) -> Response:
    headers = dict(extra or {})
    if result.etag:
        headers["ETag"] = result.etag
    return Response(status_code=status, headers=headers)


@router.post("/collections/{collectionId}/items", summary="Add a feature (OGC API Features Part 4)",
             status_code=201, responses={201: {"description": "Created; Location names it, ETag its version"},
                                         **_ANSWERS},
             openapi_extra={"parameters": _HEADERS, "requestBody": _body_doc(
                 _FEATURE_SCHEMA, ("application/geo+json", "application/json"))})
async def create(collectionId: CollectionId, request: Request, state: State) -> Response:
    result = await _edit(request, state, collectionId, Operation.create, None)
    return _answer(result, 201, {"Location": _location(request, collectionId, result.fid)})


@router.put(_FEATURE, summary="Replace a feature (Part 4)", **_feature_change(
    "Replaced; ETag is the new version's", _body_doc(_FEATURE_SCHEMA, ("application/geo+json", "application/json"))))
async def replace(collectionId: CollectionId, featureId: FeatureId, request: Request, state: State) -> Response:
    return _answer(await _edit(request, state, collectionId, Operation.replace, featureId), 204)


@router.patch(_FEATURE, summary="Update a feature (Part 4, merge patch)", **_feature_change(
    "Updated; ETag is the new version's",
    _body_doc(_PATCH_SCHEMA, ("application/merge-patch+json", "application/json"))))
async def update(collectionId: CollectionId, featureId: FeatureId, request: Request, state: State) -> Response:
    return _answer(await _edit(request, state, collectionId, Operation.update, featureId), 204)


@router.delete(_FEATURE, summary="Delete a feature (Part 4)",
               **_feature_change("Deleted; the version stays in the history"))
async def delete(collectionId: CollectionId, featureId: FeatureId, request: Request, state: State) -> Response:
    return _answer(await _edit(request, state, collectionId, Operation.delete, featureId), 204)
