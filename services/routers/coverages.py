"""OGC API - Coverages for the raster layers (layers/rasters/), served natively with rasterio.

Each raster is a collection of /collections with a `coverage` link (GeoTIFF subsets by bbox or subset,
as it is now or at a `datetime`), its range type (`/coverage/rangetype`, also `/schema`) and domain set,
and its map tiles (services.routers.map_tiles). Native rather than pygeoapi's rasterio provider: that provider is
configured with one fixed file, while a layer here is a sequence of versioned COGs chosen per request
(`datetime`), behind our access policy, audit and version ETags; a windowed rasterio read is all it takes.
"""

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from rasterio.warp import transform_bounds
from starlette.concurrency import run_in_threadpool

from gis.errors import InvalidInput
from gis.features import crs as crs_
from gis.features.params import check_box_range
from gis.layers import RasterSpec
from gis.rasters import read
from services.auth import read_audit, visibility
from services.common import ogc
from services.common.parameters import CollectionId, CoverageParameters, Document, RasterQuery, on_loop
from services.common.rasters import GEOTIFF, cache_scope, crs_uri, matches, parse_time, version_of
from services.common.state import State

router = APIRouter(tags=["OGC API Coverages"])

CoverageQuery = Annotated[CoverageParameters, Depends(on_loop(CoverageParameters))]

CONFORMANCE = (
    "http://www.opengis.net/spec/ogcapi-coverages-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-coverages-1/1.0/conf/geotiff",
    "http://www.opengis.net/spec/ogcapi-coverages-1/1.0/conf/subsetting",
    "http://www.opengis.net/spec/ogcapi-coverages-1/1.0/conf/bbox",
    "http://www.opengis.net/spec/ogcapi-coverages-1/1.0/conf/datetime",
)
GEOTIFF_FORMATS = frozenset({"geotiff", "tif", "tiff"})
_X_AXES = frozenset({"lon", "long", "x", "e", "easting"})
_Y_AXES = frozenset({"lat", "y", "n", "northing"})


# -- the collection document --------------------------------------------------------------------------


# -- range type and domain set ------------------------------------------------------------------------

def range_type(spec: RasterSpec) -> dict[str, Any]:
    """The bands as a JSON Schema of the cell values (OGC API Coverages' range type)."""
    number = {"uint8": "integer", "int16": "integer", "uint16": "integer", "float32": "number"}[spec.data_type]
    properties: dict[str, Any] = {}
    for index, band in enumerate(spec.bands, start=1):
        entry: dict[str, Any] = {"title": band.title or band.name, "type": number, "x-ogc-propertySeq": index,
                                 "x-ogc-nodata": spec.nodata, "x-ogc-dataType": spec.data_type.value}
        if band.unit:
            entry["x-ogc-unit"] = band.unit
        if spec.rendering.kind.value == "classes":
            entry["oneOf"] = [{"const": s.value, "title": s.label or f"{s.value:g}"} for s in spec.rendering.stops]
        properties[band.name] = entry
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "title": f"{spec.title.en}: bands", "properties": properties}


SCHEMA_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {ogc.SCHEMA_JSON: {}}}}


@router.get("/collections/{collectionId}/coverage/rangetype", summary="A raster's bands (range type)",
            response_class=Response, responses=SCHEMA_RESPONSE)
async def rangetype(collectionId: CollectionId, given: Document, request: Request) -> Response:
    spec = visibility.raster_view(request, collectionId)
    given.check(request)
    return ogc.json_response(range_type(spec), ogc.SCHEMA_JSON)


@router.get("/collections/{collectionId}/schema", summary="A raster's bands as JSON Schema",
            response_class=Response, responses=SCHEMA_RESPONSE)
async def schema(collectionId: CollectionId, given: Document, request: Request) -> Response:
    return await rangetype(collectionId, given, request)


@router.get("/collections/{collectionId}/coverage/domainset", summary="A raster's grid (domain set)")
async def domainset(collectionId: CollectionId, given: RasterQuery,
                    request: Request, state: State) -> Response:
    spec = visibility.raster_view(request, collectionId)
    given.check(request)
    version = await version_of(state, spec, parse_time(given.datetime))
    x0, y0, x1, y1 = version.bounds
    geographic = spec.crs == "EPSG:4490"
    x_label, y_label = ("Lon", "Lat") if geographic else ("E", "N")
    return ogc.json_response({
        "type": "DomainSet",
        "generalGrid": {
            "type": "GeneralGridCoverage", "srsName": crs_uri(version.crs), "axisLabels": [x_label, y_label],
            "axis": [{"type": "RegularAxis", "axisLabel": x_label, "lowerBound": x0, "upperBound": x1,
                      "resolution": version.resolution[0], "uomLabel": "deg" if geographic else "m"},
                     {"type": "RegularAxis", "axisLabel": y_label, "lowerBound": y0, "upperBound": y1,
                      "resolution": -version.resolution[1], "uomLabel": "deg" if geographic else "m"}],
            "gridLimits": {"type": "GridLimits", "srsName": "http://www.opengis.net/def/crs/OGC/0/Index2D",
                           "axisLabels": ["i", "j"],
                           "axis": [{"type": "IndexAxis", "axisLabel": "i", "lowerBound": 0,
                                     "upperBound": version.width - 1},
                                    {"type": "IndexAxis", "axisLabel": "j", "lowerBound": 0,
                                     "upperBound": version.height - 1}]},
        },
        "version": {"id": version.version_id, "validFrom": version.valid_from.isoformat()},
    })


# -- the coverage -------------------------------------------------------------------------------------

def _numbers(text: str, parameter: str, count: int) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise InvalidInput(parameter, f"'{text[:80]}' is not {count} comma-separated numbers") from None
    if len(values) != count:
        raise InvalidInput(parameter, f"needs {count} numbers, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise InvalidInput(parameter, "numbers must be finite")
    return values


def _to_layer_crs(spec: RasterSpec, box: list[float], crs: crs_.Crs, parameter: str) -> read.Bounds:
    """A box given in `crs` (in its axis order) as minx, miny, maxx, maxy in the layer's CRS."""
    check_box_range(box, crs, parameter)
    x0, y0, x1, y1 = (box[1], box[0], box[3], box[2]) if crs.northing_first else box
    if x0 >= x1 or y0 >= y1:
        raise InvalidInput(parameter, "the lower corner must be below and left of the upper one")
    if f"EPSG:{crs.srid}" == spec.crs:
        return x0, y0, x1, y1
    found = tuple(float(v) for v in transform_bounds(f"EPSG:{crs.srid}", spec.crs, x0, y0, x1, y1, densify_pts=21))
    if not all(math.isfinite(v) for v in found):
        raise InvalidInput(parameter, f"lies outside the area where {crs.uri} can be transformed")
    return found[0], found[1], found[2], found[3]


def _crs_param(params: dict[str, str], name: str) -> crs_.Crs:
    return crs_.parse_crs(params[name], name) if name in params else crs_.CRS84


def _subset(spec: RasterSpec, text: str, crs: crs_.Crs) -> read.Bounds:
    """`subset=Lon(a:b),Lat(c:d)` (or x/E and y/N) in `subset-crs` (default CRS84)."""
    ranges: dict[str, tuple[float, float]] = {}
    for part in filter(None, (p.strip() for p in text.replace("),", ")\n").split("\n"))):
        name, _, rest = part.partition("(")
        low, colon, high = rest.removesuffix(")").partition(":")
        axis = name.strip().lower()
        key = "x" if axis in _X_AXES else "y" if axis in _Y_AXES else None
        if key is None or not rest.endswith(")") or not colon:
            raise InvalidInput("subset", f"'{part[:60]}' is not Axis(low:high) with axis Lon/Lat, x/y or E/N")
        try:
            ranges[key] = (float(low), float(high))
        except ValueError:
            raise InvalidInput("subset", f"'{part[:60]}': the bounds are not numbers") from None
        if not all(math.isfinite(v) for v in ranges[key]):
            raise InvalidInput("subset", f"'{part[:60]}': the bounds must be finite")
    if set(ranges) != {"x", "y"}:
        raise InvalidInput("subset", "give both axes, e.g. Lon(123.40:123.42),Lat(41.74:41.76)")
    (x0, x1), (y0, y1) = ranges["x"], ranges["y"]
    box = [y0, x0, y1, x1] if crs.northing_first else [x0, y0, x1, y1]
    return _to_layer_crs(spec, box, crs, "subset")


def coverage_bounds(spec: RasterSpec, params: dict[str, str]) -> read.Bounds | None:
    if "bbox" in params and "subset" in params:
        raise InvalidInput("subset", "give bbox or subset, not both")
    if "bbox" in params:
        return _to_layer_crs(spec, _numbers(params["bbox"], "bbox", 4), _crs_param(params, "bbox-crs"), "bbox")
    if "subset" in params:
        return _subset(spec, params["subset"], _crs_param(params, "subset-crs"))
    return None


@router.get("/collections/{collectionId}/coverage", summary="A raster as GeoTIFF, whole or a subset",
            response_class=Response, responses={200: {"content": {GEOTIFF: {}}}, 304: {"description": "Not modified"}})
async def coverage(collectionId: CollectionId, given: CoverageQuery, request: Request,
                   state: State, if_none_match: str | None = Header(default=None)) -> Response:
    spec = visibility.raster_view(request, collectionId)
    params = given.check(request)
    fmt = params.get("f", "geotiff")
    if fmt not in GEOTIFF_FORMATS:
        raise InvalidInput("f", f"'{fmt[:20]}' is not offered; coverages are served as geotiff")
    bounds = coverage_bounds(spec, params)
    version = await version_of(state, spec, parse_time(params.get("datetime")))
    area = "all" if bounds is None else ",".join(f"{v:.9g}" for v in bounds)
    etag = f'"{version.etag}.{area}"'
    headers = {"ETag": etag, "Cache-Control": f"{cache_scope(spec)}, max-age=300",
               "Content-Disposition": f'inline; filename="{spec.id}-v{version.version_id}.tif"'}
    if matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    data = await run_in_threadpool(read.coverage_geotiff, version, bounds)
    await read_audit.audit_raster_read(request, spec, {"version": str(version.version_id)})
    return Response(data, media_type=GEOTIFF, headers=headers)
