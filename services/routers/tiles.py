"""OGC API - Tiles (vector): WebMercatorQuad tiles of every registry layer as Mapbox vector tiles.

The tile bytes come from PostgreSQL (gis.tiles), built per caller by services/common/vector_tiles.py (ETag, the
per-process cache the database confirms is current, row rules); this router adds the metadata documents (tile
matrix set, tilesets, tileset metadata, TileJSON), If-None-Match, Cache-Control and the audit row.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response

from gis import tiles as mvt
from gis.features.temporal import parse_datetime
from gis.layers import FieldType, LayerSpec
from services.auth import read_audit, visibility
from services.common import ogc
from services.common import vector_tiles as vt
from services.common.parameters import CollectionId, TileParameters, on_loop
from services.common.state import AppState, State

router = APIRouter(tags=["Tiles"])

TileQuery = Annotated[TileParameters, Depends(on_loop(TileParameters))]

REL_GEODATA = "http://www.opengis.net/def/rel/ogc/1.0/geodata"

# What this router adds to /conformance (the landing page's owner lists them).
CONFORMANCE = (
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/tms/2.0/conf/tilematrixset",
    "http://www.opengis.net/spec/tms/2.0/conf/json-tilematrixset",
    "http://www.opengis.net/spec/tms/2.0/conf/tilesetmetadata",
    "http://www.opengis.net/spec/tms/2.0/conf/json-tilesetmetadata",
)

_MVT_TYPES = {
    FieldType.text: "String",
    FieldType.integer: "Number",
    FieldType.bigint: "Number",
    FieldType.real: "Number",
    FieldType.boolean: "Boolean",
    FieldType.date: "String",
    FieldType.timestamp: "String",
}

def collection_links(base: str, layer_id: str) -> list[dict[str, str]]:
    """Links a collection document (/collections/{id}) carries to its tilesets."""
    return [{"rel": vt.REL_TILESETS_VECTOR, "type": ogc.JSON, "title": "Vector tilesets",
             "href": f"{base}/collections/{layer_id}/tiles"}]


def _json(document: dict[str, Any], max_age: int | None = None) -> Response:
    return ogc.json_response(document, headers={"Cache-Control": f"public, max-age={max_age}"} if max_age else None)


def _layer(request: Request, collection_id: str) -> LayerSpec:
    """The layer as the caller sees it (masked fields left out); 404 as for no such layer if hidden."""
    return visibility.layer_view(request, collection_id).spec


def _tile_matrix_set_summary(base: str) -> dict[str, Any]:
    return {
        "id": mvt.TILE_MATRIX_SET,
        "title": "Google Maps Compatible for the World",
        "uri": mvt.TILE_MATRIX_SET_URI,
        "crs": mvt.CRS_3857,
        "links": [{"rel": "self", "type": ogc.JSON, "title": mvt.TILE_MATRIX_SET,
                   "href": f"{base}/tileMatrixSets/{mvt.TILE_MATRIX_SET}"}],
    }


@router.get("/tileMatrixSets", summary="The tile matrix sets this service tiles in")
async def tile_matrix_sets(request: Request) -> Response:
    base = ogc.base_url(request)
    return _json({
        "links": [{"rel": "self", "type": ogc.JSON, "href": f"{base}/tileMatrixSets"}],
        "tileMatrixSets": [_tile_matrix_set_summary(base)],
    }, max_age=86400)


@router.get("/tileMatrixSets/{tileMatrixSetId}", summary="A tile matrix set's definition")
async def tile_matrix_set(request: Request, tileMatrixSetId: str) -> Response:
    vt.check_tile_matrix_set(tileMatrixSetId)
    base = ogc.base_url(request)
    return _json({
        "id": mvt.TILE_MATRIX_SET,
        "title": "Google Maps Compatible for the World",
        "uri": mvt.TILE_MATRIX_SET_URI,
        "crs": mvt.CRS_3857,
        "orderedAxes": ["X", "Y"],
        "wellKnownScaleSet": "http://www.opengis.net/def/wkss/OGC/1.0/GoogleMapsCompatible",
        "links": [{"rel": "self", "type": ogc.JSON,
                   "href": f"{base}/tileMatrixSets/{mvt.TILE_MATRIX_SET}"}],
        "tileMatrices": mvt.tile_matrices(),
    }, max_age=86400)


def _tileset_links(base: str, spec: LayerSpec) -> list[dict[str, Any]]:
    tileset = f"{base}/collections/{spec.id}/tiles/{mvt.TILE_MATRIX_SET}"
    return [
        {"rel": "self", "type": ogc.JSON, "title": f"{spec.title.en}: {mvt.TILE_MATRIX_SET} tileset",
         "href": tileset},
        {"rel": vt.REL_TILING_SCHEME, "type": ogc.JSON, "title": mvt.TILE_MATRIX_SET,
         "href": f"{base}/tileMatrixSets/{mvt.TILE_MATRIX_SET}"},
        {"rel": "item", "type": vt.MVT_MEDIA_TYPE, "title": "Mapbox vector tiles", "templated": True,
         "href": f"{base}/collections/{spec.id}/{vt.TILE_PATH}"},
        {"rel": "describedby", "type": ogc.JSON, "title": "TileJSON 3.0.0",
         "href": f"{tileset}/tilejson.json"},
        {"rel": REL_GEODATA, "type": ogc.JSON, "title": spec.title.en,
         "href": f"{base}/collections/{spec.id}"},
    ]


@router.get("/collections/{collectionId}/tiles", summary="The vector tilesets of a collection")
async def tilesets(request: Request, state: State, collectionId: CollectionId) -> Response:
    spec = _layer(request, collectionId)
    base = ogc.base_url(request)
    return _json({
        "links": [
            {"rel": "self", "type": ogc.JSON, "href": f"{base}/collections/{spec.id}/tiles"},
            {"rel": REL_GEODATA, "type": ogc.JSON, "href": f"{base}/collections/{spec.id}"},
        ],
        "tilesets": [{
            "title": f"{spec.title.en} ({mvt.TILE_MATRIX_SET})",
            "dataType": "vector",
            "crs": mvt.CRS_3857,
            "tileMatrixSetURI": mvt.TILE_MATRIX_SET_URI,
            "links": _tileset_links(base, spec)[:3],
        }],
    })


def _extent(state: AppState, stored: list[float] | None) -> list[float]:
    return stored if stored is not None else list(state.settings.city_extent)


async def _tileset_of(request: Request, state: AppState, collection_id: str,
                      tile_matrix_set_id: str) -> tuple[LayerSpec, list[float], str]:
    """The layer as the caller may see it, its extent and the service's base URL, for tileset documents. A caller
    who sees only some rows gets the city's extent, never the layer's (it would tell where the other rows are)."""
    spec = _layer(request, collection_id)
    vt.check_tile_matrix_set(tile_matrix_set_id)
    if not visibility.layer_view(request, collection_id).tells_layer_facts:
        return spec, _extent(state, None), ogc.base_url(request)
    _version, stored = await state.read([spec.id], lambda conn: mvt.layer_version(conn, spec))
    return spec, _extent(state, stored), ogc.base_url(request)


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}", summary="A collection's tileset metadata")
async def tileset(request: Request, state: State, collectionId: CollectionId,
                  tileMatrixSetId: str) -> Response:
    spec, extent, base = await _tileset_of(request, state, collectionId, tileMatrixSetId)
    return _json({
        "title": f"{spec.title.en} · {spec.title.zh}",
        "description": spec.description,
        "keywords": list(spec.keywords),
        **vt.tileset_frame(extent),
        "layers": [vt.tileset_layer(spec, extent)],
        "links": _tileset_links(base, spec),
    })


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}/tilejson.json", summary="TileJSON 3.0.0")
async def tilejson(request: Request, state: State, collectionId: CollectionId,
                   tileMatrixSetId: str) -> Response:
    spec, extent, base = await _tileset_of(request, state, collectionId, tileMatrixSetId)
    return _json({
        "tilejson": "3.0.0",
        "name": spec.id,
        "description": f"{spec.title.en} · {spec.title.zh}: {spec.description}",
        "scheme": "xyz",
        "tiles": [f"{base}/collections/{spec.id}/tiles/{mvt.TILE_MATRIX_SET}/{{z}}/{{y}}/{{x}}"],
        "minzoom": 0,
        "maxzoom": mvt.MAX_ZOOM,
        "bounds": extent,
        "center": [(extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2, mvt.center_zoom(extent)],
        "vector_layers": [{
            "id": spec.id,
            "description": spec.title.en,
            "minzoom": 0,
            "maxzoom": mvt.MAX_ZOOM,
            "fields": {"fid": "String", **{f.name: _MVT_TYPES[f.type] for f in spec.fields}},
        }],
    })


@router.get(
    "/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
    summary="A Mapbox vector tile",
    response_class=Response,
    responses={200: {"content": {vt.MVT_MEDIA_TYPE: {}}}, 204: {"description": "No data in this tile"},
               304: {"description": "Not modified"}},
)
async def tile(request: Request, state: State, collectionId: CollectionId, tileMatrixSetId: str,
               tileMatrix: int, tileRow: int, tileCol: int, given: TileQuery,
               if_none_match: Annotated[str | None, Header()] = None) -> Response:
    view = visibility.layer_view(request, collectionId)
    vt.check_tile_matrix_set(tileMatrixSetId)
    address = mvt.Tile(tileMatrix, tileCol, tileRow)
    time = parse_datetime(given.datetime) if given.datetime is not None else None
    tags = vt.client_tags(if_none_match)
    built = await vt.layer_tile(request, state, view, address, time, tags)
    headers = {"ETag": built.etag, "Cache-Control": vt.cache_control([view.spec])}
    if vt.not_modified(built.etag, tags):
        return Response(status_code=304, headers=headers)
    assert built.data is not None  # only the client's own version goes unbuilt, and it matched above
    await read_audit.audit_read(request, view, None, 204 if not built.data else 200,
                                {"tile": f"{address.z}/{address.y}/{address.x}"})
    if not built.data:
        return Response(status_code=204, headers=headers)
    return Response(built.data, media_type=vt.MVT_MEDIA_TYPE, headers=headers)
