"""What every vector tile route shares (services/routers/tiles.py: one collection's tiles; dataset_tiles.py: several
collections' in one tile): the media types and link relations, the tile matrix set check, the tileset metadata
parts, and one layer's tile as one caller sees it (`layer_tile`), with its ETag, cache entry and Cache-Control.

A layer's tile is built in PostgreSQL (gis.tiles) in one statement that also confirms whether this process's cached
copy, or the client's, is still current. A layer under a row rule is tiled with the caller's rule in the statement,
and its tiles are cached and tagged per set of rows the rule leaves.
"""

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime as DateTime
from typing import Any

import orjson
from fastapi import Request

from gis import tiles as mvt
from gis.errors import NotFound
from gis.features.cql2 import Filter
from gis.features.temporal import CITY_TIME, TimeRange
from gis.layers import AccessClass, FieldType, LayerSpec
from gis.security.policy import LayerView
from services.auth import visibility
from services.common.state import AppState

MVT_MEDIA_TYPE = "application/vnd.mapbox-vector-tile"
TILE_MAX_AGE = 300  # seconds a client may reuse a tile before revalidating it with its ETag
TILE_PATH = "tiles/WebMercatorQuad/{tileMatrix}/{tileRow}/{tileCol}"

REL_TILING_SCHEME = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
REL_TILESETS_VECTOR = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"

_SCHEMA_TYPES = {
    FieldType.text: {"type": "string"},
    FieldType.integer: {"type": "integer"},
    FieldType.bigint: {"type": "integer"},
    FieldType.real: {"type": "number"},
    FieldType.boolean: {"type": "boolean"},
    FieldType.date: {"type": "string", "format": "date"},
    FieldType.timestamp: {"type": "string", "format": "date-time"},
}


def check_tile_matrix_set(tile_matrix_set_id: str) -> None:
    if tile_matrix_set_id != mvt.TILE_MATRIX_SET:
        raise NotFound(f"no tile matrix set '{tile_matrix_set_id}' (this service offers {mvt.TILE_MATRIX_SET})")




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


def not_modified(etag: str, tags: list[str]) -> bool:
    """Whether the client's If-None-Match (its tags, client_tags) names this tile's tag, or any."""
    return "*" in tags or etag.removeprefix("W/") in tags
