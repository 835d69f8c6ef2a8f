"""Vector tiles of the whole dataset (OGC API - Tiles, dataset tilesets): /tiles/WebMercatorQuad/{z}/{y}/{x}.

One tile holds one MVT layer per collection, named after it, for the collections asked (`collections`, in the
order given, which is the order a client draws them in) or every vector collection the caller may read. Each layer
is exactly the caller's tile of that collection (services/common/vector_tiles.py's `layer_tile`: the same statement,
row rules, masked fields and per-process cache), so the tile is the per-collection tiles' bytes one after another:
MVT layers are a repeated field, and protobuf messages concatenate.

Why it exists: the web map draws a dozen layers, and a map view needs a dozen tiles of each. One request per tile
instead of one per tile and layer is what makes the first view fast (a browser opens six connections to a host;
141 requests queued behind them). Each audited layer still writes its own ops.audit_log row, as its own tile would.

Unknown and hidden collections are refused alike, so the answer tells nothing about what the caller may not read.
The tileset documents give the city's extent, never a layer's (as routers/tiles.py does for a row-limited
caller).
"""

import hashlib
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response

from gis import tiles as mvt
from gis.errors import InvalidInput
from gis.features.temporal import parse_datetime
from gis.security.policy import LayerView
from services.auth import read_audit, visibility
from services.common import ogc
from services.common import vector_tiles as vt
from services.common.parameters import DatasetTileParameters, Document, on_loop
from services.common.state import State

router = APIRouter(tags=["Tiles"])

DatasetTileQuery = Annotated[DatasetTileParameters, Depends(on_loop(DatasetTileParameters))]

PATH = "/tiles"
TITLE = "时空信息云平台 · the city's vector tiles"
LANDING_LINK = {"href": PATH, "rel": vt.REL_TILESETS_VECTOR, "type": ogc.JSON,
                "title": "Vector tilesets of the whole dataset (every collection in one tile)"}


def _tileset_links(base: str) -> list[dict[str, Any]]:
    tileset = f"{base}{PATH}/{mvt.TILE_MATRIX_SET}"
    return [
        {"rel": "self", "type": ogc.JSON, "title": f"The dataset's {mvt.TILE_MATRIX_SET} tileset",
         "href": tileset},
        {"rel": vt.REL_TILING_SCHEME, "type": ogc.JSON, "title": mvt.TILE_MATRIX_SET,
         "href": f"{base}/tileMatrixSets/{mvt.TILE_MATRIX_SET}"},
        {"rel": "item", "type": vt.MVT_MEDIA_TYPE, "title": "Mapbox vector tiles", "templated": True,
         "href": f"{base}/{vt.TILE_PATH}"},
    ]


@router.get(PATH, summary="The vector tilesets of the whole dataset")
async def dataset_tilesets(given: Document, request: Request) -> Response:
    given.check(request)
    base = ogc.base_url(request)
    return ogc.json_response({
        "links": [{"rel": "self", "type": ogc.JSON, "href": f"{base}{PATH}"}],
        "tilesets": [{"title": f"{TITLE} ({mvt.TILE_MATRIX_SET})", "dataType": "vector", "crs": mvt.CRS_3857,
                      "tileMatrixSetURI": mvt.TILE_MATRIX_SET_URI, "links": _tileset_links(base)}],
    })


@router.get(PATH + "/{tileMatrixSetId}", summary="The dataset's tileset metadata: one layer per collection")
async def dataset_tileset(given: Document, request: Request, state: State, tileMatrixSetId: str) -> Response:
    given.check(request)
    vt.check_tile_matrix_set(tileMatrixSetId)
    extent = list(state.settings.city_extent)
    return ogc.json_response({
        "title": TITLE,
        "description": "Every vector collection the caller may read, one MVT layer each, named after it.",
        **vt.tileset_frame(extent),
        "layers": [vt.tileset_layer(view.spec, extent) for view in visibility.visible_layers(request).values()],
        "links": _tileset_links(ogc.base_url(request)),
    })


def selected(views: Mapping[str, LayerView], asked: str | None) -> list[LayerView]:
    """The collections a dataset tile holds, in the order asked, each once; every one the caller may read if none
    was asked. One the caller may not read is refused exactly as one that does not exist."""
    if asked is None:
        return list(views.values())
    ids = [part.strip() for part in asked.split(",")]
    if not all(ids):
        raise InvalidInput("collections", "a comma-separated list of collection ids, none empty")
    for layer_id in ids:
        if layer_id not in views:
            raise InvalidInput("collections", f"no vector collection '{layer_id[:200]}'")
    return [views[layer_id] for layer_id in dict.fromkeys(ids)]


def _etag(parts: list[str]) -> str:
    """The dataset tile's tag: its layers' own tags (each names its layer, version, variant and tile) digested."""
    return f'W/"tiles.{hashlib.sha256(chr(10).join(parts).encode()).hexdigest()[:32]}"'


@router.get(
    PATH + "/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
    summary="A Mapbox vector tile of several collections (one layer each)",
    response_class=Response,
    responses={200: {"content": {vt.MVT_MEDIA_TYPE: {}}}, 204: {"description": "No data in this tile"},
               304: {"description": "Not modified"}},
)
async def dataset_tile(request: Request, state: State, tileMatrixSetId: str, tileMatrix: int, tileRow: int,
                       tileCol: int, given: DatasetTileQuery,
                       if_none_match: Annotated[str | None, Header()] = None) -> Response:
    given.check(request)
    vt.check_tile_matrix_set(tileMatrixSetId)
    address = mvt.Tile(tileMatrix, tileCol, tileRow)
    time = parse_datetime(given.datetime) if given.datetime is not None else None
    views = selected(visibility.visible_layers(request), given.collections)
    # One layer after another, not at once: a request takes one pooled connection at a time, like any other.
    built = [await vt.layer_tile(request, state, view, address, time, []) for view in views]
    etag = _etag([part.etag for part in built])
    headers = {"ETag": etag, "Cache-Control": vt.cache_control(view.spec for view in views)}
    client = vt.client_tags(if_none_match)
    if vt.not_modified(etag, client):
        return Response(status_code=304, headers=headers)
    where = {"tile": f"{address.z}/{address.y}/{address.x}"}
    for view, part in zip(views, built, strict=True):
        await read_audit.audit_read(request, view, None, 200 if part.data else 204, where)
    data = b"".join(part.data or b"" for part in built)
    if not data:
        return Response(status_code=204, headers=headers)
    return Response(data, media_type=vt.MVT_MEDIA_TYPE, headers=headers)
