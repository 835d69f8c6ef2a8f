"""Request parameters, each declared once.

A route's query parameters are a frozen dataclass of `QueryParameter` fields (a `Declaration`), which the route
takes as a FastAPI dependency in titiler's manner: the dependency (`on_loop`) fills it from the query string, the
route checks the query against it (`Declaration.check`: an unknown or repeated parameter is a 400 naming it) and reads
the values.
The same declaration is
- the OpenAPI document's parameters of the operation (`document_parameters`: one component per parameter, a
  `$ref` to it from each operation that declares it),
- the unknown-parameter check's list (`Declaration.names`, also named in its 400),
- the list of parameters the audit records (`route_parameters`: the query parameters the route FastAPI matched
  declares).
So adding a query parameter to an endpoint is one field in its declaration (and the code that uses the value).

Values stay text here: the parsers in gis read them, so every refusal names the parameter and the problem as the
service always has (FastAPI's own validation would answer in its words). Path parameters the OGC documents
share (`collectionId`, `featureId`) are declared here too, so every route and the document spell them alike.
"""

import copy
import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, get_type_hints

from fastapi import Depends, Path, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from gis.features import crs as crs_
from gis.features.cql2 import LANGUAGES
from gis.features.params import DEFAULT_LIMIT, MAX_LIMIT, encode_cursor, property_parameters
from gis.layers import LayerSpec
from services.common import ogc

_CRS_LIST = [c.uri for c in crs_.SUPPORTED]
_REF = "#/components/parameters/"
_MARK = "x-declared"  # in FastAPI's schema of a declared parameter: its key, until document_parameters refers to it


@dataclass(frozen=True)
class QueryParameter:
    """One query parameter: its name in URLs, what it means, its OpenAPI schema and an example value (one every layer
    takes: tests send it). `key` names its component in the OpenAPI document (parameters of one name but another
    meaning, like the download's `f`, take their own)."""

    name: str
    description: str
    schema: dict[str, Any] = field(compare=False)
    example: Any = None
    key: str = ""
    explode: bool | None = None  # False: one value, comma-separated (an OGC list or box)

    @property
    def component(self) -> str:
        return self.key or self.name

    def openapi(self) -> dict[str, Any]:
        found: dict[str, Any] = {"name": self.name, "in": "query", "description": self.description,
                                 "required": False, "schema": copy.deepcopy(self.schema)}
        if self.explode is not None:
            found.update(style="form", explode=self.explode)
        if self.example is not None:
            found["example"] = self.example
        return found


DECLARED: dict[str, QueryParameter] = {}  # every query parameter, by its component


def declare(name: str, description: str, schema: dict[str, Any], example: Any, *, key: str = "",
            explode: bool | None = None) -> Any:
    """Declares a query parameter; what it returns (FastAPI's Query, marked with the component) annotates a field of a
    `Declaration`: `limit: Annotated[Text, LIMIT] = None`."""
    parameter = QueryParameter(name, description, schema, example, key, explode)
    if DECLARED.setdefault(parameter.component, parameter) is not parameter:
        raise ValueError(f"a query parameter '{parameter.component}' is declared already: give this one its own key")
    return Query(alias=name, description=description, json_schema_extra={_MARK: parameter.component})


def _component_of(annotation: Any) -> str | None:
    for meta in getattr(annotation, "__metadata__", ()):
        extra = getattr(meta, "json_schema_extra", None)
        component = extra.get(_MARK) if isinstance(extra, dict) else None
        if isinstance(component, str):
            return component
    return None


@dataclass(frozen=True)
class PathParameter:
    """A path parameter shared by OGC paths, one component in the OpenAPI document."""

    name: str
    description: str

    def openapi(self, values: list[str] | None = None) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", **({"enum": values} if values is not None else {})}
        return {"name": self.name, "in": "path", "description": self.description, "required": True, "schema": schema}


COLLECTION_ID = PathParameter("collectionId", "A layer id.")
FEATURE_ID = PathParameter("featureId", "A feature id (the source's stable id).")
CollectionId = Annotated[str, Path(description=COLLECTION_ID.description)]
FeatureId = Annotated[str, Path(description=FEATURE_ID.description)]
PATH_PARAMETERS = {p.name: p for p in (COLLECTION_ID, FEATURE_ID)}

# Sent by clients that cannot send headers (QGIS 3.22); services.auth reads it. Taken by every route, never refused
# and never recorded, so it is in no declaration: the document lists it on every operation.
CREDENTIAL = QueryParameter(ogc.CREDENTIAL, "Credential for clients that cannot send headers (QGIS 3.22); accepted "
                            "on every request and carried into `next` links.", {"type": "string"})


@dataclass(frozen=True)
class Declaration:
    """Base of the typed parameter dependencies: each field `Annotated[Text, declare(...)] = None`. A subclass knows
    its parameters from its fields (and its bases'), once, when it is made."""

    parameters: ClassVar[tuple[QueryParameter, ...]] = ()
    names: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        components = (_component_of(hint) for hint in get_type_hints(cls, include_extras=True).values())
        cls.parameters = tuple(DECLARED[key] for key in components if key is not None)
        cls.names = frozenset(p.name for p in cls.parameters)

    def check(self, request: Request, extra: frozenset[str] = frozenset()) -> dict[str, str]:
        """The query (each parameter once, in the order sent) if it names only this declaration's parameters and
        `extra` (an endpoint's own, such as a layer's queryables); else a 400 naming the first unknown one."""
        return ogc.query_params(request, self.names | extra)


# -- the parameters -------------------------------------------------------------------------------------------

_CITY_BOX = [123.2, 41.6, 123.7, 42.0]  # examples are values every layer takes (tests send them)

F = declare("f", "Response format (default: by the Accept header).",
            {"type": "string", "enum": ["json", "html"]}, "json")
LIMIT = declare("limit", f"Features per page: default {DEFAULT_LIMIT}, maximum {MAX_LIMIT} (more is served as "
                "the maximum).",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}, 10,
                explode=False)
OFFSET = declare("offset", "Features to skip (the `next` link uses a cursor instead, which is faster).",
                 {"type": "integer", "minimum": 0, "default": 0}, 0)
CURSOR = declare("cursor", "Opaque position of the next page, as written in a `next` link.",
                 {"type": "string"}, encode_cursor("0"))
BBOX = declare("bbox", "Features that intersect the box: minx,miny,maxx,maxy in `bbox-crs` axis order.",
               {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}}, _CITY_BOX,
               explode=False)
BBOX_CRS = declare("bbox-crs", "CRS of `bbox` (default CRS84).",
                   {"type": "string", "format": "uri", "enum": _CRS_LIST}, crs_.CRS84.uri)
CRS = declare("crs", "CRS of the response geometries (default CRS84); see Content-Crs.",
              {"type": "string", "format": "uri", "enum": _CRS_LIST}, crs_.CRS84.uri)
DATETIME = declare("datetime", "An instant or interval (RFC 3339, `..` for an open end). Versioned layers "
                   "answer as they were (or as a plan says they will be) then; event layers filter on their "
                   "event time. Dates without an offset are local time (UTC+8).", {"type": "string"},
                   "2026-01-01T00:00:00Z")
FILTER = declare("filter", "A CQL2 filter (text or JSON, see filter-lang).", {"type": "string"},
                 "valid_from <= TIMESTAMP('2026-01-01T00:00:00Z')")
FILTER_LANG = declare("filter-lang", "The filter's encoding.",
                      {"type": "string", "enum": list(LANGUAGES), "default": "cql2-text"}, "cql2-text")
FILTER_CRS = declare("filter-crs", "CRS of the filter's geometries (default CRS84).",
                     {"type": "string", "format": "uri", "enum": _CRS_LIST}, crs_.CRS84.uri)
PROPERTIES = declare("properties", "Only these properties in each feature (comma-separated).",
                     {"type": "array", "items": {"type": "string"}}, ["valid_from"], explode=False)
SORTBY = declare("sortby", "Sort keys, comma-separated, `-` for descending (default: by id).",
                 {"type": "array", "items": {"type": "string"}}, ["-valid_from"], explode=False)
SKIP_GEOMETRY = declare("skipGeometry", "Leave out geometries.", {"type": "boolean", "default": False}, True)
DOWNLOAD_FORMAT = declare("f", "File format of the download (default gpkg): GeoPackage, FlatGeobuf, zipped "
                          "Shapefile or CSV (geometry as WKT).",
                          {"type": "string", "enum": ["gpkg", "fgb", "shp", "csv"], "default": "gpkg"}, "csv",
                          key="downloadFormat")
Q = declare("q", "Catalog search: terms separated by commas; a record matches if any term is in its id, titles, "
            "description, keywords, department or domain (case-insensitive).", {"type": "string"}, "water")
TILE_DATETIME = declare("datetime", "An instant or interval (RFC 3339, '..' for an open end): the features as "
                        "they were then, as the items of this collection answer it", {"type": "string"},
                        "2026-01-01T00:00:00Z", key="tileDatetime")
TILE_COLLECTIONS = declare("collections", "The collections the tile holds, one MVT layer each, comma-separated and "
                           "bottom first (default: every vector collection the caller may read).",
                           {"type": "array", "items": {"type": "string"}}, ["roads"], key="tileCollections",
                           explode=False)
RASTER_DATETIME = declare("datetime", "An instant (or a date / interval: its end): the version of the layer in "
                          "force then", {"type": "string"}, "2026-01-01T00:00:00Z", key="rasterDatetime")
COVERAGE_BBOX = declare("bbox", "The part of the coverage within the box: minx,miny,maxx,maxy in `bbox-crs` "
                        "axis order (not with subset).",
                        {"type": "array", "minItems": 4, "maxItems": 4, "items": {"type": "number"}},
                        [123.40, 41.74, 123.42, 41.76], key="coverageBbox", explode=False)
SUBSET = declare("subset", "The part of the coverage within axis ranges: Lon(low:high),Lat(low:high) (or x/E "
                 "and y/N) in `subset-crs` (not with bbox).", {"type": "string"},
                 "Lon(123.40:123.42),Lat(41.74:41.76)")
SUBSET_CRS = declare("subset-crs", "CRS of `subset` (default CRS84).",
                     {"type": "string", "format": "uri", "enum": _CRS_LIST}, crs_.CRS84.uri)
COVERAGE_FORMAT = declare("f", "File format of the coverage: GeoTIFF (also written tif or tiff).",
                          {"type": "string", "enum": ["geotiff", "tif", "tiff"], "default": "geotiff"},
                          "geotiff", key="coverageFormat")
Text = str | None  # a parameter's value as sent; None when left out


def on_loop[D: Declaration](cls: type[D]) -> Callable[[Request], Awaitable[D]]:
    """A declaration as a dependency FastAPI calls on the event loop, made from the query string itself.

    FastAPI would validate each declared field on every request (a loop over the fields with a pydantic check of
    each: about a tenth of a page's CPU, the largest single cost after the database round trip), to no end: every
    field is text, which any value is, so FastAPI could never refuse one. The dependency reads them as FastAPI
    does (the last of repeated values; the check refuses repeats with a 400 naming the parameter) and takes only the
    request, so it runs on the event loop rather than in FastAPI's thread pool. Its parameters are in the OpenAPI
    document all the same (document_parameters, from the declaration) and in the audit (route_parameters)."""
    hints = get_type_hints(cls, include_extras=True)
    fields = tuple((f.name, DECLARED[component].name) for f in dataclasses.fields(cls)
                   if (component := _component_of(hints[f.name])) is not None)

    async def make(request: Request) -> D:
        query = request.query_params
        return cls(**{name: query.get(alias) for name, alias in fields})

    _MADE[make] = cls
    return make


_MADE: dict[Callable[..., Any], type[Declaration]] = {}  # each on_loop dependency, with its declaration


@dataclass(frozen=True)
class DocumentParameters(Declaration):
    """A document in JSON or HTML (the landing page, /collections, a collection, queryables, the catalog...)."""

    f: Annotated[Text, F] = None


Document = Annotated[DocumentParameters, Depends(on_loop(DocumentParameters))]  # what a route serving a document takes


@dataclass(frozen=True)
class FilterParameters(Declaration):
    """The filters /items and /download share; besides these, `name=value` on the layer's queryables filters."""

    bbox: Annotated[Text, BBOX] = None
    bbox_crs: Annotated[Text, BBOX_CRS] = None
    datetime: Annotated[Text, DATETIME] = None
    filter: Annotated[Text, FILTER] = None
    filter_lang: Annotated[Text, FILTER_LANG] = None
    filter_crs: Annotated[Text, FILTER_CRS] = None

    def check_filters(self, request: Request, spec: LayerSpec) -> dict[str, str]:
        """The query, checked against these parameters and, as `name=value` filters, the layer's queryables."""
        return self.check(request, property_parameters(spec, self.names))


@dataclass(frozen=True)
class ItemsParameters(FilterParameters):
    """/collections/{collectionId}/items: the filters, paging, the response's CRS and what each feature holds."""

    limit: Annotated[Text, LIMIT] = None
    offset: Annotated[Text, OFFSET] = None
    cursor: Annotated[Text, CURSOR] = None
    crs: Annotated[Text, CRS] = None
    properties: Annotated[Text, PROPERTIES] = None
    sortby: Annotated[Text, SORTBY] = None
    skip_geometry: Annotated[Text, SKIP_GEOMETRY] = None
    f: Annotated[Text, F] = None


@dataclass(frozen=True)
class HistoryParameters(Declaration):
    """/collections/{collectionId}/items/{featureId}/history."""

    crs: Annotated[Text, CRS] = None
    f: Annotated[Text, F] = None


@dataclass(frozen=True)
class ItemParameters(HistoryParameters):
    """/collections/{collectionId}/items/{featureId}: also as it was at `datetime`, and only some properties."""

    datetime: Annotated[Text, DATETIME] = None
    properties: Annotated[Text, PROPERTIES] = None


@dataclass(frozen=True)
class DownloadParameters(FilterParameters):
    """/collections/{collectionId}/download: the filters of /items, and the file format."""

    f: Annotated[Text, DOWNLOAD_FORMAT] = None


@dataclass(frozen=True)
class CatalogParameters(Declaration):
    """/catalog/items: searching the records (OGC API Records)."""

    q: Annotated[Text, Q] = None
    bbox: Annotated[Text, BBOX] = None
    datetime: Annotated[Text, DATETIME] = None
    limit: Annotated[Text, LIMIT] = None
    offset: Annotated[Text, OFFSET] = None
    f: Annotated[Text, F] = None


@dataclass(frozen=True)
class TileParameters(Declaration):
    """A vector tile (/collections/{collectionId}/tiles/...): the features as they were at `datetime`."""

    datetime: Annotated[Text, TILE_DATETIME] = None


@dataclass(frozen=True)
class DatasetTileParameters(TileParameters):
    """A vector tile of the whole dataset (/tiles/...): some or all collections, each as it was at `datetime`."""

    collections: Annotated[Text, TILE_COLLECTIONS] = None


@dataclass(frozen=True)
class RasterParameters(Declaration):
    """A raster's domain set or one of its map tiles, as the version in force at `datetime`."""

    datetime: Annotated[Text, RASTER_DATETIME] = None
    f: Annotated[Text, F] = None


RasterQuery = Annotated[RasterParameters, Depends(on_loop(RasterParameters))]  # coverages and map tiles take it


@dataclass(frozen=True)
class CoverageParameters(Declaration):
    """/collections/{collectionId}/coverage: the GeoTIFF, whole or a part (bbox or subset), as it was at `datetime`."""

    bbox: Annotated[Text, COVERAGE_BBOX] = None
    bbox_crs: Annotated[Text, BBOX_CRS] = None
    subset: Annotated[Text, SUBSET] = None
    subset_crs: Annotated[Text, SUBSET_CRS] = None
    datetime: Annotated[Text, RASTER_DATETIME] = None
    f: Annotated[Text, COVERAGE_FORMAT] = None


# -- what the declarations feed: the OpenAPI document and the audit -------------------------------------------

def _query_names(dependant: Dependant) -> Iterator[str]:
    for query in dependant.query_params:
        yield query.alias
    for sub in dependant.dependencies:
        yield from _query_names(sub)
    declaration = _MADE.get(dependant.call) if dependant.call is not None else None
    if declaration is not None:
        yield from (p.name for p in declaration.parameters)


def _declared(dependant: Dependant) -> Iterator[QueryParameter]:
    """The parameters of the declarations a route's dependencies hold, in the order FastAPI would list them."""
    for sub in dependant.dependencies:
        yield from _declared(sub)
    declaration = _MADE.get(dependant.call) if dependant.call is not None else None
    if declaration is not None:
        yield from declaration.parameters


def route_parameters(request: Request) -> frozenset[str]:
    """The query parameters the request's route declares (through its declarations, or as FastAPI parameters of its
    own), never the credential: what the audit records of a request, and what a route without a declaration of its
    own checks the query against."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return frozenset()
    # Kept on the route (unhashable: no dict can key it), found once: its dependencies are fixed when the app is made.
    found: frozenset[str] | None = vars(route).get(_ROUTE_PARAMETERS)
    if found is None:
        found = vars(route)[_ROUTE_PARAMETERS] = frozenset(_query_names(route.dependant)) - {CREDENTIAL.name}
    return found


_ROUTE_PARAMETERS = "_gis_route_parameters"


def _ref(key: str) -> dict[str, str]:
    return {"$ref": f"{_REF}{key}"}


def _add_declared(document: dict[str, Any], routes: Sequence[BaseRoute]) -> None:
    """Each route's declared query parameters into its operations, where FastAPI lists query parameters (after the
    path's and the route's own, before headers): FastAPI does not see them (on_loop's dependency takes the request)."""
    for route in iter_route_contexts(routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        declared = [{"name": p.name, "in": "query", "schema": {_MARK: p.component}} for p in _declared(route.dependant)]
        operations = document.get("paths", {}).get(route.path_format, {})
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if not declared or operation is None:
                continue
            generated = operation.get("parameters", [])
            at = next((i for i, p in enumerate(generated) if p.get("in") not in ("path", "query")), len(generated))
            operation["parameters"] = [*generated[:at], *declared, *generated[at:]]


def document_parameters(document: dict[str, Any], layer_ids: list[str], routes: Sequence[BaseRoute]) -> None:
    """Every operation's parameters in an OpenAPI document (as FastAPI wrote it from the routes) as the declarations
    say: each declared query parameter and shared path parameter a component the operations refer to, and the
    credential on every operation."""
    _add_declared(document, routes)
    components: dict[str, Any] = {COLLECTION_ID.name: COLLECTION_ID.openapi(layer_ids),
                                  FEATURE_ID.name: FEATURE_ID.openapi()}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            parameters = []
            for generated in operation.get("parameters", []):
                key = generated.get("schema", {}).get(_MARK) if generated.get("in") == "query" else None
                if key is not None:
                    components[key] = DECLARED[key].openapi()
                    parameters.append(_ref(key))
                elif generated.get("in") == "path" and generated.get("name") in PATH_PARAMETERS:
                    parameters.append(_ref(generated["name"]))
                else:
                    parameters.append(generated)
            operation["parameters"] = [*parameters, _ref(CREDENTIAL.component)]
    components[CREDENTIAL.component] = CREDENTIAL.openapi()
    document.setdefault("components", {})["parameters"] = components
