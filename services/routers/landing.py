"""The landing page, /conformance, /collections and the OpenAPI document (`service-desc`).

Other routers add to the landing page and the conformance list through `add_landing_link` and
`add_conformance` (the tiles router does), so there is one of each for the whole service.
"""

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response

from gis.features import crs as crs_
from gis.features.cql2 import CONFORMANCE as CQL2_CONFORMANCE
from services.auth import visibility
from services.common import html, ogc, rasters
from services.common.collections import layer_stats, view_document
from services.common.errors import document_errors
from services.common.parameters import Document, document_parameters
from services.common.state import State, state_of

router = APIRouter(tags=["Service"])

TITLE = "时空信息云平台 · Spatio-temporal GIS cloud (Shenyang)"
DESCRIPTION = ("The city's vector layers with their history, served over OGC API Features (Parts 1-3) "
               "from PostGIS: every layer as it is now, as it was on a date, or as a plan says it will be.")

FEATURES_CONFORMANCE = (
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    *CQL2_CONFORMANCE,
)


def install(app: FastAPI) -> None:
    """Registers the landing routes and the OpenAPI generator; call before other routers add links."""
    state_of(app).discovery.conformance.extend(FEATURES_CONFORMANCE)
    app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]


def add_landing_link(app: FastAPI, path: str, rel: str, media_type: str, title: str) -> None:
    state_of(app).discovery.landing_links.append({"path": path, "rel": rel, "type": media_type, "title": title})


def add_conformance(app: FastAPI, *uris: str) -> None:
    conformance = state_of(app).discovery.conformance
    conformance.extend(u for u in uris if u not in conformance)


@router.get("/", summary="Landing page")
async def landing(given: Document, request: Request, state: State) -> Response:
    params = given.check(request)
    as_html = ogc.wants_html(request, params)
    links = [
        *ogc.self_links(request, "/", html=as_html),
        ogc.link(ogc.url(request, "/openapi"), "service-desc", ogc.OPENAPI, "the API definition (OpenAPI 3.0)"),
        ogc.link(ogc.url(request, "/openapi", [("f", "html")]), "service-doc", "text/html", "the API documentation"),
        ogc.link(ogc.url(request, "/conformance"), "conformance", ogc.JSON, "conformance classes"),
        ogc.link(ogc.url(request, "/collections"), "data", ogc.JSON, "the layers"),
        *(ogc.link(ogc.url(request, extra["path"]), extra["rel"], extra["type"], extra["title"])
          for extra in state.discovery.landing_links),
    ]
    document = {"title": TITLE, "description": DESCRIPTION, "links": links}
    return ogc.document_response(document, as_html, html.landing_page)


@router.get("/conformance", summary="Conformance classes implemented")
async def conformance(given: Document, request: Request, state: State) -> Response:
    params = given.check(request)
    document = {"conformsTo": list(state.discovery.conformance)}
    return ogc.document_response(document, ogc.wants_html(request, params), html.conformance_page)


@router.get("/collections", summary="The layers")
async def collections(given: Document, request: Request, state: State) -> Response:
    params = given.check(request)
    as_html = ogc.wants_html(request, params)
    stats = await layer_stats(state)
    document = {
        "links": ogc.self_links(request, "/collections", html=as_html),
        "crs": [c.uri for c in crs_.SUPPORTED],
        "collections": [view_document(request, state, view, stats.get(layer_id))
                        for layer_id, view in visibility.visible_layers(request).items()]
                       + await rasters.raster_documents(request, state),
    }
    return ogc.document_response(document, as_html, html.collections_page)


@router.get("/openapi", summary="This API's definition (OpenAPI 3.0)")
async def openapi(given: Document, request: Request) -> Response:
    params = given.check(request)
    document = _for_caller(request.app.openapi(),
                           [*visibility.visible_layers(request), *visibility.visible_rasters(request)])
    # The paths are relative to the server's URL, which is this service's base (a proxy's /gis/ included).
    document = {**document, "servers": [{"url": ogc.base_url(request)}]}
    return ogc.document_response(document, ogc.wants_html(request, params), html.api_page, ogc.OPENAPI)


# -- the OpenAPI document ----------------------------------------------------------------------------

# What these paths answer on success: their JSON type, or HTML (`f=html`, or a browser's Accept header).
_SUCCESS_MEDIA = {
    "/": ogc.JSON,
    "/conformance": ogc.JSON,
    "/collections": ogc.JSON,
    "/openapi": ogc.OPENAPI,
    "/collections/{collectionId}": ogc.JSON,
    "/collections/{collectionId}/queryables": ogc.SCHEMA_JSON,
    "/collections/{collectionId}/items": ogc.GEOJSON,
    "/collections/{collectionId}/items/{featureId}": ogc.GEOJSON,
    "/collections/{collectionId}/items/{featureId}/history": ogc.GEOJSON,
    "/catalog": ogc.JSON,
    "/catalog/items": ogc.GEOJSON,
    "/catalog/items/{record_id}": ogc.GEOJSON,
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(title=TITLE, version="1.0.0", openapi_version="3.0.3", description=DESCRIPTION,
                           routes=app.routes)
    registry = state_of(app).registry
    layer_ids = [*registry, *registry.rasters]
    document_parameters(document, layer_ids, app.routes)  # each route's parameters, from its declarations
    for path, operations in document.get("paths", {}).items():
        if path in _SUCCESS_MEDIA and "get" in operations:
            operations["get"]["responses"]["200"]["content"] = {_SUCCESS_MEDIA[path]: {}, "text/html": {}}
    _to_openapi_30(document)
    document_errors(document)
    app.openapi_schema = document
    return document


def _for_caller(document: dict[str, Any], layer_ids: list[str]) -> dict[str, Any]:
    """The document naming only the layers the caller may see (the cached one is left as it is)."""
    parameters = document["components"]["parameters"]
    collection = parameters["collectionId"]
    return {**document, "components": {**document["components"], "parameters": {
        **parameters, "collectionId": {**collection, "schema": {**collection["schema"], "enum": layer_ids}}}}}


def _to_openapi_30(node: Any) -> None:
    """FastAPI writes some 3.1 forms (`anyOf [.., {type: null}]`, `examples`); rewrite them as 3.0 does."""
    if isinstance(node, dict):
        any_of = node.get("anyOf")
        if isinstance(any_of, list) and {"type": "null"} in any_of:
            rest = [s for s in any_of if s != {"type": "null"}]
            node.pop("anyOf")
            if len(rest) == 1:
                node.update(rest[0])
            else:
                node["anyOf"] = rest
            node["nullable"] = True
        if "const" in node:
            node["enum"] = [node.pop("const")]
        if isinstance(node.get("examples"), list) and "type" in node:
            examples = node.pop("examples")
            if examples:
                node["example"] = examples[0]
        for value in node.values():
            _to_openapi_30(value)
    elif isinstance(node, list):
        for value in node:
            _to_openapi_30(value)
