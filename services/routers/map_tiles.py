"""OGC API - Maps tiles of the raster layers: PNG map tiles in WebMercatorQuad, with TileJSON.

`/collections/{id}/map/tiles/WebMercatorQuad/{tileMatrix}/{tileRow}/{tileCol}` draws the layer's default
style (its YAML `rendering`: relief-shaded colour ramp for the DEM, true colour for imagery, the class
palette for land cover); `/collections/{id}/styles/{styleId}/map/tiles/...` names another (`ramp`: the DEM's
ramp without shading). The ETag is the version's (and the style's and tile's): a refresh changes it.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gis import tiles as mvt
from gis.errors import InvalidInput, NotFound
from gis.layers import RasterSpec
from gis.rasters import read
from services.auth import read_audit, visibility
from services.common import ogc
from services.common.parameters import CollectionId, Document, DocumentParameters, RasterParameters, RasterQuery
from services.common.rasters import MAX_ZOOM, cache_scope, matches, parse_time, version_of
from services.common.state import AppState, State

router = APIRouter(tags=["OGC API Maps (tiles)"])


PNG = "image/png"
TILE_MAX_AGE = 300
REL_TILING_SCHEME = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
CONFORMANCE = (
    "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/styled-map",
    "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/png",
    "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/png",
)


def _tileset_path(spec: RasterSpec, style: str = "default") -> str:
    prefix = f"/collections/{spec.id}" + ("" if style == "default" else f"/styles/{style}")
    return f"{prefix}/map/tiles/{mvt.TILE_MATRIX_SET}"


def _style(spec: RasterSpec, style_id: str) -> str:
    if style_id not in {s.id for s in read.styles(spec)}:
        raise NotFound(f"no style '{style_id[:60]}' for '{spec.id}' ({', '.join(s.id for s in read.styles(spec))})")
    return style_id


def _check_tms(tile_matrix_set_id: str) -> None:
    if tile_matrix_set_id != mvt.TILE_MATRIX_SET:
        raise NotFound(f"no tile matrix set '{tile_matrix_set_id[:60]}' (this service offers {mvt.TILE_MATRIX_SET})")


def tileset_document(request: Request, spec: RasterSpec, style: str) -> dict[str, Any]:
    path = _tileset_path(spec, style)
    template = ogc.base_url(request) + f"{path}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}"
    return {
        "title": f"{spec.title.en} ({style})",
        "dataType": "map",
        "crs": mvt.CRS_3857,
        "tileMatrixSetURI": mvt.TILE_MATRIX_SET_URI,
        "styleId": style,
        "links": [
            ogc.link(ogc.url(request, path), "self", ogc.JSON, "this tileset"),
            ogc.link(ogc.url(request, f"/tileMatrixSets/{mvt.TILE_MATRIX_SET}"), REL_TILING_SCHEME, ogc.JSON,
                     mvt.TILE_MATRIX_SET),
            {**ogc.link(template, "item", PNG, "PNG map tiles"), "templated": True},
            ogc.link(ogc.url(request, f"{path}/tilejson.json"), "describedby", ogc.JSON, "TileJSON 3.0.0"),
            ogc.link(ogc.url(request, f"/collections/{spec.id}"), "http://www.opengis.net/def/rel/ogc/1.0/geodata",
                     ogc.JSON, spec.title.en),
        ],
    }


@router.get("/collections/{collectionId}/map/tiles", summary="A raster's map tilesets (one per style)")
async def tilesets(collectionId: CollectionId, given: Document, request: Request) -> Response:
    spec = visibility.raster_view(request, collectionId)
    given.check(request)
    return ogc.json_response({"tilesets": [tileset_document(request, spec, s.id) for s in read.styles(spec)],
                              "links": [ogc.link(ogc.url(request, f"/collections/{spec.id}/map/tiles"), "self",
                                                 ogc.JSON)]})


@router.get("/collections/{collectionId}/map/tiles/{tileMatrixSetId}", summary="A raster's map tileset")
async def tileset(collectionId: CollectionId, tileMatrixSetId: str, given: Document, request: Request) -> Response:
    spec = visibility.raster_view(request, collectionId)
    _check_tms(tileMatrixSetId)
    given.check(request)
    return ogc.json_response(tileset_document(request, spec, "default"))


async def _tilejson(request: Request, state: AppState, spec: RasterSpec, style: str, given: DocumentParameters
                    ) -> Response:
    given.check(request)
    version = await version_of(state, spec, None)
    lon0, lat0, lon1, lat1 = version.lonlat_bounds
    credential = ogc.credential_suffix(request)
    suffix = f"?{credential[0][0]}={credential[0][1]}" if credential else ""
    return ogc.json_response({
        "tilejson": "3.0.0", "name": spec.id, "description": f"{spec.title.zh} · {spec.title.en}",
        "version": str(version.version_id), "scheme": "xyz",
        "tiles": [ogc.base_url(request) + _tileset_path(spec, style) + "/{z}/{y}/{x}" + suffix],
        "minzoom": 0, "maxzoom": MAX_ZOOM, "bounds": [lon0, lat0, lon1, lat1],
        "center": [(lon0 + lon1) / 2, (lat0 + lat1) / 2, 12], "attribution": spec.department,
    })


@router.get("/collections/{collectionId}/map/tiles/{tileMatrixSetId}/tilejson.json", summary="TileJSON 3.0.0")
async def tilejson(collectionId: CollectionId, tileMatrixSetId: str, given: Document, request: Request,
                   state: State) -> Response:
    spec = visibility.raster_view(request, collectionId)
    _check_tms(tileMatrixSetId)
    return await _tilejson(request, state, spec, "default", given)


@router.get("/collections/{collectionId}/styles/{styleId}/map/tiles/{tileMatrixSetId}/tilejson.json",
            summary="TileJSON 3.0.0 of a style")
async def styled_tilejson(collectionId: CollectionId, styleId: str, tileMatrixSetId: str, given: Document,
                          request: Request, state: State) -> Response:
    spec = visibility.raster_view(request, collectionId)
    _check_tms(tileMatrixSetId)
    return await _tilejson(request, state, spec, _style(spec, styleId), given)


async def _tile(request: Request, state: AppState, spec: RasterSpec, style: str, tms: str, z: int, row: int, col: int,
                given: RasterParameters, if_none_match: str | None) -> Response:
    _check_tms(tms)
    given.check(request)
    address = mvt.Tile(z, col, row)  # out of range: a 400 naming the parameter (gis.tiles.TileOutOfRange)
    if z > MAX_ZOOM:
        raise InvalidInput("tileMatrix", f"raster map tiles go to tile matrix {MAX_ZOOM}")
    version = await version_of(state, spec, parse_time(given.datetime))
    etag = f'"{version.etag}.{style}.{address.z}.{address.y}.{address.x}"'
    headers = {"ETag": etag, "Cache-Control": f"{cache_scope(spec)}, max-age={TILE_MAX_AGE}"}
    if matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    png = await run_in_threadpool(read.tile_png, version, spec, address.z, address.x, address.y, style)
    await read_audit.audit_raster_read(request, spec, {"tile": f"{address.z}/{address.y}/{address.x}", "style": style})
    return Response(png, media_type=PNG, headers=headers)


TileResponses: dict[int | str, dict[str, Any]] = {200: {"content": {PNG: {}}}, 304: {"description": "Not modified"}}


@router.get("/collections/{collectionId}/map/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
            summary="A PNG map tile of a raster (its default style)", response_class=Response,
            responses=TileResponses)
async def tile(collectionId: CollectionId, tileMatrixSetId: str, tileMatrix: int, tileRow: int, tileCol: int,
               given: RasterQuery, request: Request, state: State,
               if_none_match: Annotated[str | None, Header()] = None) -> Response:
    spec = visibility.raster_view(request, collectionId)
    return await _tile(request, state, spec, "default", tileMatrixSetId, tileMatrix, tileRow, tileCol, given,
                       if_none_match)


@router.get("/collections/{collectionId}/styles/{styleId}/map/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
            summary="A PNG map tile of a raster in a named style", response_class=Response, responses=TileResponses)
async def styled_tile(collectionId: CollectionId, styleId: str, tileMatrixSetId: str, tileMatrix: int, tileRow: int,
                      tileCol: int, given: RasterQuery, request: Request, state: State,
                      if_none_match: Annotated[str | None, Header()] = None) -> Response:
    spec = visibility.raster_view(request, collectionId)
    return await _tile(request, state, spec, _style(spec, styleId), tileMatrixSetId, tileMatrix, tileRow, tileCol,
                       given, if_none_match)
