"""OGC API - Tiles (vector): WebMercatorQuad tiles of every registry layer as Mapbox vector tiles.

The tile bytes come from PostgreSQL (gis.tiles); this router adds the metadata documents (tile matrix
set, tilesets, tileset metadata, TileJSON), the ETag (layer, change version, `datetime`, tile) with
If-None-Match, Cache-Control, and a per-process cache of built tiles that the database confirms is
current in the same statement that would otherwise build the tile. A layer under a row rule is tiled with
the caller's rule in the statement, and its tiles are cached and tagged per set of rows the rule leaves.
"""

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime as DateTime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response

from gis import tiles as mvt
from gis.errors import NotFound
from gis.features.cql2 import Filter
from gis.features.temporal import CITY_TIME, TimeRange, parse_datetime
from gis.layers import AccessClass, FieldType, LayerSpec
from gis.security.policy import LayerView
from services.auth import read_audit, visibility
from services.common.parameters import CollectionId, TileParameters
from services.common.state import AppState, State

router = APIRouter(tags=["Tiles"])

MVT_MEDIA_TYPE = "application/vnd.mapbox-vector-tile"
JSON_MEDIA_TYPE = "application/json"
TILE_MAX_AGE = 300  # seconds a client may reuse a tile before revalidating it with its ETag
TILE_PATH = "tiles/WebMercatorQuad/{tileMatrix}/{tileRow}/{tileCol}"

REL_TILING_SCHEME = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
REL_TILESETS_VECTOR = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
REL_GEODATA = "http://www.opengis.net/def/rel/ogc/1.0/geodata"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"

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
_SCHEMA_TYPES = {
    FieldType.text: {"type": "string"},
    FieldType.integer: {"type": "integer"},
    FieldType.bigint: {"type": "integer"},
    FieldType.real: {"type": "number"},
    FieldType.boolean: {"type": "boolean"},
    FieldType.date: {"type": "string", "format": "date"},
    FieldType.timestamp: {"type": "string", "format": "date-time"},
}

def collection_links(base: str, layer_id: str) -> list[dict[str, str]]:
    """Links a collection document (/collections/{id}) carries to its tilesets."""
    return [{"rel": REL_TILESETS_VECTOR, "type": JSON_MEDIA_TYPE, "title": "Vector tilesets",
             "href": f"{base}/collections/{layer_id}/tiles"}]


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def json_response(document: dict[str, Any], max_age: int | None = None) -> Response:
    headers = {"Cache-Control": f"public, max-age={max_age}"} if max_age else None
    return Response(orjson.dumps(document), media_type=JSON_MEDIA_TYPE, headers=headers)


def _layer(request: Request, collection_id: str) -> LayerSpec:
    """The layer as the caller sees it (masked fields left out); 404 as for no such layer if hidden."""
    return visibility.layer_view(request, collection_id).spec


def check_tile_matrix_set(tile_matrix_set_id: str) -> None:
    if tile_matrix_set_id != mvt.TILE_MATRIX_SET:
        raise NotFound(f"no tile matrix set '{tile_matrix_set_id}' (this service offers {mvt.TILE_MATRIX_SET})")


def _tile_matrix_set_summary(base: str) -> dict[str, Any]:
    return {
        "id": mvt.TILE_MATRIX_SET,
        "title": "Google Maps Compatible for the World",
        "uri": mvt.TILE_MATRIX_SET_URI,
        "crs": mvt.CRS_3857,
        "links": [{"rel": "self", "type": JSON_MEDIA_TYPE, "title": mvt.TILE_MATRIX_SET,
                   "href": f"{base}/tileMatrixSets/{mvt.TILE_MATRIX_SET}"}],
    }


@router.get("/tileMatrixSets", summary="The tile matrix sets this service tiles in")
async def tile_matrix_sets(request: Request) -> Response:
    base = base_url(request)
    return json_response({
        "links": [{"rel": "self", "type": JSON_MEDIA_TYPE, "href": f"{base}/tileMatrixSets"}],
        "tileMatrixSets": [_tile_matrix_set_summary(base)],
    }, max_age=86400)


@router.get("/tileMatrixSets/{tileMatrixSetId}", summary="A tile matrix set's definition")
async def tile_matrix_set(request: Request, tileMatrixSetId: str) -> Response:
    check_tile_matrix_set(tileMatrixSetId)
    base = base_url(request)
    return json_response({
        "id": mvt.TILE_MATRIX_SET,
        "title": "Google Maps Compatible for the World",
        "uri": mvt.TILE_MATRIX_SET_URI,
        "crs": mvt.CRS_3857,
        "orderedAxes": ["X", "Y"],
        "wellKnownScaleSet": "http://www.opengis.net/def/wkss/OGC/1.0/GoogleMapsCompatible",
        "links": [{"rel": "self", "type": JSON_MEDIA_TYPE,
                   "href": f"{base}/tileMatrixSets/{mvt.TILE_MATRIX_SET}"}],
        "tileMatrices": mvt.tile_matrices(),
    }, max_age=86400)


def _tileset_links(base: str, spec: LayerSpec) -> list[dict[str, Any]]:
    tileset = f"{base}/collections/{spec.id}/tiles/{mvt.TILE_MATRIX_SET}"
    return [
        {"rel": "self", "type": JSON_MEDIA_TYPE, "title": f"{spec.title.en}: {mvt.TILE_MATRIX_SET} tileset",
         "href": tileset},
        {"rel": REL_TILING_SCHEME, "type": JSON_MEDIA_TYPE, "title": mvt.TILE_MATRIX_SET,
         "href": f"{base}/tileMatrixSets/{mvt.TILE_MATRIX_SET}"},
        {"rel": "item", "type": MVT_MEDIA_TYPE, "title": "Mapbox vector tiles", "templated": True,
         "href": f"{base}/collections/{spec.id}/{TILE_PATH}"},
        {"rel": "describedby", "type": JSON_MEDIA_TYPE, "title": "TileJSON 3.0.0",
         "href": f"{tileset}/tilejson.json"},
        {"rel": REL_GEODATA, "type": JSON_MEDIA_TYPE, "title": spec.title.en,
         "href": f"{base}/collections/{spec.id}"},
    ]


@router.get("/collections/{collectionId}/tiles", summary="The vector tilesets of a collection")
async def tilesets(request: Request, state: State, collectionId: CollectionId) -> Response:
    spec = _layer(request, collectionId)
    base = base_url(request)
    return json_response({
        "links": [
            {"rel": "self", "type": JSON_MEDIA_TYPE, "href": f"{base}/collections/{spec.id}/tiles"},
            {"rel": REL_GEODATA, "type": JSON_MEDIA_TYPE, "href": f"{base}/collections/{spec.id}"},
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
    check_tile_matrix_set(tile_matrix_set_id)
    if not visibility.layer_view(request, collection_id).tells_layer_facts:
        return spec, _extent(state, None), base_url(request)
    _version, stored = await state.read([spec.id], lambda conn: mvt.layer_version(conn, spec))
    return spec, _extent(state, stored), base_url(request)


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}", summary="A collection's tileset metadata")
async def tileset(request: Request, state: State, collectionId: CollectionId,
                  tileMatrixSetId: str) -> Response:
    spec, extent, base = await _tileset_of(request, state, collectionId, tileMatrixSetId)
    return json_response({
        "title": f"{spec.title.en} · {spec.title.zh}",
        "description": spec.description,
        "keywords": list(spec.keywords),
        **tileset_frame(extent),
        "layers": [tileset_layer(spec, extent)],
        "links": _tileset_links(base, spec),
    })


def tileset_frame(extent: list[float]) -> dict[str, Any]:
    """What every vector tileset's metadata says of its tiling: WebMercatorQuad, every zoom, over `extent`."""
    return {
        "dataType": "vector",
        "crs": mvt.CRS_3857,
        "tileMatrixSetURI": mvt.TILE_MATRIX_SET_URI,
        "boundingBox": {"lowerLeft": extent[:2], "upperRight": extent[2:], "crs": CRS84},
        "centerPoint": {"coordinates": [(extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2],
                        "tileMatrix": str(mvt.center_zoom(extent)), "crs": CRS84},
        "tileMatrixSetLimits": [
            {"tileMatrix": str(z), "minTileRow": 0, "maxTileRow": (1 << z) - 1, "minTileCol": 0,
             "maxTileCol": (1 << z) - 1} for z in range(mvt.MAX_ZOOM + 1)
        ],
    }


def tileset_layer(spec: LayerSpec, extent: list[float]) -> dict[str, Any]:
    """A layer of a tileset's metadata: the MVT layer named after the collection, and its properties."""
    return {
        "id": spec.id,
        "title": spec.title.en,
        "description": spec.description,
        "dataType": "vector",
        "geometryDimension": mvt.geometry_dimension(spec.geometry),
        "minTileMatrix": "0",
        "maxTileMatrix": str(mvt.MAX_ZOOM),
        "boundingBox": {"lowerLeft": extent[:2], "upperRight": extent[2:], "crs": CRS84},
        "propertiesSchema": {
            "type": "object",
            "required": ["fid"],
            "properties": {
                "fid": {"type": "string", "title": "Feature id"},
                **{f.name: {**_SCHEMA_TYPES[f.type], **({"title": f.title} if f.title else {}),
                            **({"enum": list(f.values)} if f.values else {})} for f in spec.fields},
            },
        },
    }


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}/tilejson.json", summary="TileJSON 3.0.0")
async def tilejson(request: Request, state: State, collectionId: CollectionId,
                   tileMatrixSetId: str) -> Response:
    spec, extent, base = await _tileset_of(request, state, collectionId, tileMatrixSetId)
    return json_response({
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


def _variant(spec: LayerSpec, time: TimeRange | None) -> str:
    """What besides the layer version decides a tile's content: the `datetime` asked, or, for layers whose
    features take effect on their own dates, today (the city's day: a plan takes effect at local midnight)."""
    if time is not None:
        text = "/".join(t.isoformat() if t is not None else ".." for t in (time.start, time.end))
        digest = hashlib.sha256(f"{text}{'' if time.end_inclusive else ')'}".encode()).hexdigest()[:12]
        return f".t{digest}"
    if spec.has_valid_time:
        return f".d{DateTime.now(CITY_TIME):%Y%m%d}"
    return ""


def _rows_tag(rows: Filter) -> str:
    """A tag for the rows a caller's row rule leaves (its filter, area geometry included): the cache key and ETag
    of a filtered tile carry it, so one caller's tile is never served to a caller with other rows."""
    # orjson for speed: repr() would spend milliseconds on a detailed jurisdiction's coordinates on every tile
    return f".w{hashlib.sha256(orjson.dumps(rows, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]}"


def _etag(spec: LayerSpec, version: int | None, variant: str, tile: mvt.Tile) -> str:
    return f'W/"{spec.id}.r{version or 0}{variant}.{tile.z}.{tile.x}.{tile.y}"'


def _body_etag(spec: LayerSpec, variant: str, tile: mvt.Tile, data: bytes) -> str:
    """The tag of a row-limited caller's tile: its bytes' digest, so it changes exactly when what it sees does."""
    return f'W/"{spec.id}{variant}.{tile.z}.{tile.x}.{tile.y}.b{hashlib.sha256(data).hexdigest()[:24]}"'


def client_tags(if_none_match: str | None) -> list[str]:
    if not if_none_match:
        return []
    return [tag.strip().removeprefix("W/") for tag in if_none_match.split(",") if tag.strip()]


def _known_version(tags: list[str], spec: LayerSpec, variant: str, tile: mvt.Tile) -> int | None:
    """The layer version a client's If-None-Match says it holds for this very tile, if any."""
    pattern = re.compile(rf'^"{re.escape(spec.id)}\.r(\d+){re.escape(variant)}\.{tile.z}\.{tile.x}\.{tile.y}"$')
    for tag in tags:
        match = pattern.match(tag)
        if match:
            return int(match.group(1))
    return None


def cache_control(specs: Iterable[LayerSpec]) -> str:
    """Only open data may sit in shared caches; a tile holding any internal or restricted layer stays in the
    client's own."""
    scope = "public" if all(spec.access is AccessClass.public for spec in specs) else "private"
    return f"{scope}, max-age={TILE_MAX_AGE}"


@router.get(
    "/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
    summary="A Mapbox vector tile",
    response_class=Response,
    responses={200: {"content": {MVT_MEDIA_TYPE: {}}}, 204: {"description": "No data in this tile"},
               304: {"description": "Not modified"}},
)
async def tile(request: Request, state: State, collectionId: CollectionId, tileMatrixSetId: str,
               tileMatrix: int, tileRow: int, tileCol: int, given: Annotated[TileParameters, Depends()],
               if_none_match: Annotated[str | None, Header()] = None) -> Response:
    view = visibility.layer_view(request, collectionId)
    check_tile_matrix_set(tileMatrixSetId)
    address = mvt.Tile(tileMatrix, tileCol, tileRow)
    time = parse_datetime(given.datetime) if given.datetime is not None else None
    tags = client_tags(if_none_match)
    built = await layer_tile(request, state, view, address, time, tags)
    headers = {"ETag": built.etag, "Cache-Control": cache_control([view.spec])}
    if "*" in tags or built.etag.removeprefix("W/") in tags:
        return Response(status_code=304, headers=headers)
    assert built.data is not None  # only the client's own version goes unbuilt, and it matched above
    await read_audit.audit_read(request, view, None, 204 if not built.data else 200,
                                {"tile": f"{address.z}/{address.y}/{address.x}"})
    if not built.data:
        return Response(status_code=204, headers=headers)
    return Response(built.data, media_type=MVT_MEDIA_TYPE, headers=headers)


@dataclass(frozen=True)
class LayerTile:
    """One layer's tile as one caller sees it: its ETag, and its bytes (b"": no feature there; None: not built,
    because the database confirmed the version the client's own tag names)."""

    etag: str
    data: bytes | None


async def layer_tile(request: Request, state: AppState, view: LayerView, address: mvt.Tile,
                     time: TimeRange | None, tags: list[str]) -> LayerTile:
    """The caller's tile of one layer at `address` (as of `time`): from this process's cache when the database
    confirms it is current, else built in the database, in one statement either way."""
    spec = view.spec
    rows = await visibility.row_filter(request, view)
    variant = (_variant(spec, time) + (f".m{visibility.mask_tag(view)}" if view.masked else "")
               + (_rows_tag(rows) if rows is not None else ""))
    # A row-limited caller's tile is tagged by its bytes: the layer's version moves with rows the caller cannot
    # see, and a version tag would tell it so. Everyone else's is tagged by the version (no tile built to say 304).
    limited = rows is not None
    client_version = None if limited else _known_version(tags, spec, variant, address)
    cache, key = state.tile_cache, (spec.id, variant, address.z, address.x, address.y)
    cached = cache.get(key)
    known = {v for v in (client_version, cached[0] if cached else None) if v is not None}
    drawn = mvt.drawn_fields(spec, state.settings.styles_dir)
    known_versions = tuple(sorted(known))
    query, params = mvt.tile_statement(spec, address, known_versions, time, rows, drawn)
    row = await state.read_row([spec.id], query, params, binary=True)
    assert row is not None  # the tile statement always returns exactly one row
    result = mvt.tile_result(row, known_versions)
    data = result.data if result.data is not None or cached is None else cached[1]
    if result.data is not None and result.version is not None:
        cache.put(key, result.version, result.data)
    # else the layer is still at the cached tile's version, or at the client's (data None: nothing built)
    if limited:
        assert data is not None  # a limited caller's only known version is the cache's
        return LayerTile(_body_etag(spec, variant, address, data), data)
    return LayerTile(_etag(spec, result.version, variant, address), data)
