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
from gis.features.cql2 import LANGUAGES
from gis.features.params import DEFAULT_LIMIT, MAX_LIMIT
from services.auth import visibility
from services.common import html, ogc, rasters
from services.common.collections import layer_stats, view_document
from services.common.errors import document_errors
from services.common.state import app_state

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
    app.state.landing_links = []
    app.state.conformance = list(FEATURES_CONFORMANCE)
    app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]


def add_landing_link(app: FastAPI, path: str, rel: str, media_type: str, title: str) -> None:
    app.state.landing_links.append({"path": path, "rel": rel, "type": media_type, "title": title})


def add_conformance(app: FastAPI, *uris: str) -> None:
    app.state.conformance.extend(u for u in uris if u not in app.state.conformance)


@router.get("/", summary="Landing page")
async def landing(request: Request) -> Response:
    params = ogc.query_params(request, ())
    as_html = ogc.wants_html(request, params)
    links = [
        *ogc.self_links(request, "/", html=as_html),
        ogc.link(ogc.url(request, "/openapi"), "service-desc", ogc.OPENAPI, "the API definition (OpenAPI 3.0)"),
        ogc.link(ogc.url(request, "/openapi", [("f", "html")]), "service-doc", "text/html", "the API documentation"),
        ogc.link(ogc.url(request, "/conformance"), "conformance", ogc.JSON, "conformance classes"),
        ogc.link(ogc.url(request, "/collections"), "data", ogc.JSON, "the layers"),
        *(ogc.link(ogc.url(request, extra["path"]), extra["rel"], extra["type"], extra["title"])
          for extra in request.app.state.landing_links),
    ]
    document = {"title": TITLE, "description": DESCRIPTION, "links": links}
    if as_html:
        return ogc.html_response(html.landing_page(document))
    return ogc.json_response(document)


@router.get("/conformance", summary="Conformance classes implemented")
async def conformance(request: Request) -> Response:
    params = ogc.query_params(request, ())
    document = {"conformsTo": list(request.app.state.conformance)}
    if ogc.wants_html(request, params):
        return ogc.html_response(html.conformance_page(document))
    return ogc.json_response(document)


@router.get("/collections", summary="The layers")
async def collections(request: Request) -> Response:
    state = app_state(request)
    params = ogc.query_params(request, ())
    as_html = ogc.wants_html(request, params)
    stats = await layer_stats(state)
    document = {
        "links": ogc.self_links(request, "/collections", html=as_html),
        "crs": [c.uri for c in crs_.SUPPORTED],
        "collections": [view_document(request, view, stats.get(layer_id))
                        for layer_id, view in visibility.visible_layers(request).items()]
                       + await rasters.raster_documents(request),
    }
    if as_html:
        return ogc.html_response(html.collections_page(document))
    return ogc.json_response(document)


@router.get("/openapi", summary="This API's definition (OpenAPI 3.0)")
async def openapi(request: Request) -> Response:
    params = ogc.query_params(request, ())
    document = _for_caller(request.app.openapi(),
                           [*visibility.visible_layers(request), *visibility.visible_rasters(request)])
    # The paths are relative to the server's URL, which is this service's base (a proxy's /gis/ included).
    document = {**document, "servers": [{"url": ogc.base_url(request)}]}
    if ogc.wants_html(request, params):
        return ogc.html_response(html.api_page(document))
    return ogc.json_response(document, ogc.OPENAPI)


# -- the OpenAPI document ----------------------------------------------------------------------------

def _param(name: str, description: str, schema: dict[str, Any], where: str = "query",
           **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "description": description, "required": where == "path",
            "schema": schema, **extra}


def _components(layer_ids: list[str]) -> dict[str, dict[str, Any]]:
    crs_list = [c.uri for c in crs_.SUPPORTED]
    return {
        "collectionId": _param("collectionId", "A layer id.", {"type": "string", "enum": layer_ids}, "path"),
        "featureId": _param("featureId", "A feature id (the source's stable id).", {"type": "string"}, "path"),
        "limit": _param("limit", f"Features per page: default {DEFAULT_LIMIT}, maximum {MAX_LIMIT} (more is "
                        "served as the maximum).",
                        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                        style="form", explode=False),
        "offset": _param("offset", "Features to skip (the `next` link uses a cursor instead, which is faster).",
                         {"type": "integer", "minimum": 0, "default": 0}),
        "cursor": _param("cursor", "Opaque position of the next page, as written in a `next` link.",
                         {"type": "string"}),
        "bbox": _param("bbox", "Features that intersect the box: minx,miny,maxx,maxy in `bbox-crs` axis order.",
                       {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}},
                       style="form", explode=False),
        "bbox-crs": _param("bbox-crs", "CRS of `bbox` (default CRS84).",
                           {"type": "string", "format": "uri", "enum": crs_list}),
        "crs": _param("crs", "CRS of the response geometries (default CRS84); see Content-Crs.",
                      {"type": "string", "format": "uri", "enum": crs_list}),
        "datetime": _param("datetime", "An instant or interval (RFC 3339, `..` for an open end). Versioned "
                           "layers answer as they were (or as a plan says they will be) then; event layers "
                           "filter on their event time. Dates without an offset are local time (UTC+8).",
                           {"type": "string"}),
        "filter": _param("filter", "A CQL2 filter (text or JSON, see filter-lang).", {"type": "string"}),
        "filter-lang": _param("filter-lang", "The filter's encoding.",
                              {"type": "string", "enum": list(LANGUAGES), "default": "cql2-text"}),
        "filter-crs": _param("filter-crs", "CRS of the filter's geometries (default CRS84).",
                             {"type": "string", "format": "uri", "enum": crs_list}),
        "properties": _param("properties", "Only these properties in each feature (comma-separated).",
                             {"type": "array", "items": {"type": "string"}}, style="form", explode=False),
        "sortby": _param("sortby", "Sort keys, comma-separated, `-` for descending (default: by id).",
                         {"type": "array", "items": {"type": "string"}}, style="form", explode=False),
        "skipGeometry": _param("skipGeometry", "Leave out geometries.", {"type": "boolean", "default": False}),
        "f": _param("f", "Response format (default: by the Accept header).",
                    {"type": "string", "enum": ["json", "html"]}),
        "downloadFormat": _param("f", "File format of the download (default gpkg): GeoPackage, FlatGeobuf, "
                                 "zipped Shapefile or CSV (geometry as WKT).",
                                 {"type": "string", "enum": ["gpkg", "fgb", "shp", "csv"], "default": "gpkg"}),
        "q": _param("q", "Catalog search: terms separated by commas; a record matches if any term is in its "
                    "id, titles, description, keywords, department or domain (case-insensitive).",
                    {"type": "string"}),
        "api_key": _param("api_key", "Credential for clients that cannot send headers (QGIS 3.22); accepted "
                          "on every request and carried into `next` links.", {"type": "string"}),
    }


_FEATURE_PATHS = {
    "/": ["f"],
    "/conformance": ["f"],
    "/collections": ["f"],
    "/openapi": ["f"],
    "/collections/{collectionId}": ["collectionId", "f"],
    "/collections/{collectionId}/queryables": ["collectionId", "f"],
    "/collections/{collectionId}/items": ["collectionId", "limit", "offset", "cursor", "bbox", "bbox-crs", "crs",
                                          "datetime", "filter", "filter-lang", "filter-crs", "properties",
                                          "sortby", "skipGeometry", "f"],
    "/collections/{collectionId}/items/{featureId}": ["collectionId", "featureId", "crs", "datetime",
                                                      "properties", "f"],
    "/collections/{collectionId}/items/{featureId}/history": ["collectionId", "featureId", "crs", "f"],
    "/collections/{collectionId}/download": ["collectionId", "bbox", "bbox-crs", "datetime", "filter", "filter-lang",
                                             "filter-crs", "downloadFormat"],
    "/catalog": ["f"],
    "/catalog/items": ["q", "bbox", "datetime", "limit", "offset", "f"],
}

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
    layer_ids = [*app.state.gis.registry, *app.state.gis.registry.rasters]
    document.setdefault("components", {})["parameters"] = _components(layer_ids)
    paths: dict[str, Any] = {}
    for path, operations in document.get("paths", {}).items():
        ogc_path = path
        for route_name, document_name in ogc.DOCUMENT_NAMES.items():
            ogc_path = ogc_path.replace(f"{{{route_name}}}", f"{{{document_name}}}")
        if ogc_path not in _FEATURE_PATHS:
            ogc_path = path  # another router's path keeps its own parameter names
        for method, operation in operations.items():
            if ogc_path in _FEATURE_PATHS and method != "get":  # edits (Part 4): the path's ids, their own headers
                own = [p for p in operation.get("parameters", []) if p.get("in") == "header"]
                ids = [n for n in _FEATURE_PATHS[ogc_path] if n in ("collectionId", "featureId")]
                operation["parameters"] = [*({"$ref": f"#/components/parameters/{n}"} for n in ids), *own]
                operation.setdefault("parameters", []).append({"$ref": "#/components/parameters/api_key"})
                continue
            if ogc_path in _FEATURE_PATHS:
                operation["parameters"] = [{"$ref": f"#/components/parameters/{n}"} for n in _FEATURE_PATHS[ogc_path]]
            if ogc_path in _SUCCESS_MEDIA:
                operation["responses"]["200"]["content"] = {_SUCCESS_MEDIA[ogc_path]: {}, "text/html": {}}
            operation.setdefault("parameters", []).append({"$ref": "#/components/parameters/api_key"})
        paths[ogc_path] = operations
    document["paths"] = paths
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
