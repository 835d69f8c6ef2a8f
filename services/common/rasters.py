"""A raster layer's versions and its collection document: what the coverages, map tiles, features
(/collections/{id} of a raster), landing (/collections) and web map routers share.

The versions come from ops.raster_versions (gis.rasters.versions); a version's ETag changes with each refresh.
"""

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response
from psycopg import AsyncConnection

from gis.errors import NotFound
from gis.features import crs as crs_
from gis.features.temporal import parse_datetime
from gis.layers import AccessClass, RasterSpec
from gis.rasters import read, versions
from gis.rasters.versions import RasterVersion
from services.auth import visibility
from services.common import ogc
from services.common.html import html_page
from services.common.parameters import DocumentParameters
from services.common.state import AppState

GEOTIFF = "image/tiff; application=geotiff"
REL_COVERAGE = "http://www.opengis.net/def/rel/ogc/1.0/coverage"
REL_SCHEMA = "http://www.opengis.net/def/rel/ogc/1.0/schema"
REL_DOMAINSET = "http://www.opengis.net/def/rel/ogc/1.0/coverage-domainset"
REL_RANGETYPE = "http://www.opengis.net/def/rel/ogc/1.0/coverage-rangetype"
REL_TILESETS_MAP = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-map"
MAX_ZOOM = 20  # map tiles deeper than this only magnify the cells


def crs_uri(code: str) -> str:
    return f"http://www.opengis.net/def/crs/EPSG/0/{code.removeprefix('EPSG:')}"


def parse_time(value: str | None) -> datetime | None:
    """The instant whose version is wanted: an instant, or the end of a date or interval (None: now)."""
    if value is None:
        return None
    found = parse_datetime(value)
    return found.end or found.start


async def version_of(state: AppState, spec: RasterSpec, at: datetime | None) -> RasterVersion:
    """The layer's version in force at `at` (now when None); NotFound when none was (not loaded yet)."""
    async def fetch(conn: AsyncConnection[Any]) -> tuple[Any, ...] | None:
        cursor = await conn.execute(versions.AT_SQL, {"layer": spec.id, "at": at})
        return await cursor.fetchone()

    # Routed like items and tiles: a standby that has the layer's newest version, else the primary.
    row = await state.read([spec.id], fetch)
    if row is None:
        when = f" at {at.isoformat()}" if at is not None else ""
        raise NotFound(f"raster layer '{spec.id}' has no version{when} (not refreshed yet)")
    return versions.from_row(row)


async def current_versions(state: AppState) -> dict[str, RasterVersion]:
    async def fetch(conn: AsyncConnection[Any]) -> dict[str, RasterVersion]:
        cursor = await conn.execute(versions.CURRENT_SQL)
        return {row[1]: versions.from_row(row) for row in await cursor.fetchall()}

    return await state.read([], fetch)


def cache_scope(spec: RasterSpec) -> str:
    # Only open data may sit in shared caches; internal and restricted layers stay in the client's own.
    return "public" if spec.access is AccessClass.public else "private"


def matches(if_none_match: str | None, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in (if_none_match or "").split(",") if t.strip()]
    return "*" in tags or etag.removeprefix("W/") in tags


def collection_document(request: Request, spec: RasterSpec, version: RasterVersion | None) -> dict[str, Any]:
    path = f"/collections/{spec.id}"
    extent: dict[str, Any] = {}
    if version is not None:
        extent = {"spatial": {"bbox": [list(version.lonlat_bounds)], "crs": crs_.CRS84.uri,
                              "storageCrsBbox": [list(version.bounds)], "storageCrs": crs_uri(version.crs)},
                  "temporal": {"interval": [[version.valid_from.isoformat(), None]],
                               "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"}}
    tiles = f"{path}/map/tiles/WebMercatorQuad"
    return {
        "id": spec.id,
        "title": f"{spec.title.zh} · {spec.title.en}",
        "titles": {"zh": spec.title.zh, "en": spec.title.en},
        "description": spec.description,
        "keywords": list(spec.keywords),
        # Not "feature": OGC API Features clients (GDAL, QGIS) skip collections of another item type.
        "itemType": "coverage",
        "dataType": "coverage",
        "crs": [crs_uri(spec.crs)],
        "storageCrs": crs_uri(spec.crs),
        "extent": extent,
        "links": [
            *ogc.self_links(request, path),
            ogc.link(ogc.url(request, f"{path}/coverage"), REL_COVERAGE, GEOTIFF, "the coverage as GeoTIFF"),
            ogc.link(ogc.url(request, f"{path}/coverage/rangetype"), REL_RANGETYPE, ogc.JSON, "range type (bands)"),
            ogc.link(ogc.url(request, f"{path}/schema"), REL_SCHEMA, ogc.SCHEMA_JSON, "the bands as JSON Schema"),
            ogc.link(ogc.url(request, f"{path}/coverage/domainset"), REL_DOMAINSET, ogc.JSON, "domain set (grid)"),
            ogc.link(ogc.url(request, f"{path}/map/tiles"), REL_TILESETS_MAP, ogc.JSON, "map tilesets (PNG)"),
            ogc.link(ogc.url(request, f"{tiles}/tilejson.json"), "describedby", ogc.JSON, "TileJSON 3.0.0"),
        ],
        "kind": "raster",
        "domain": spec.domain.value,
        "department": spec.department,
        "access": spec.access.value,
        "updateFrequency": spec.update_frequency,
        "bands": [{"name": b.name, "title": b.title, "unit": b.unit} for b in spec.bands],
        "nodata": spec.nodata,
        "cellType": spec.data_type.value,
        "rendering": spec.rendering.model_dump(mode="json"),
        **({"version": {"id": version.version_id, "validFrom": version.valid_from.isoformat(),
                        "size": [version.width, version.height], "resolution": list(version.resolution)}}
           if version is not None else {}),
    }


def preview(layer_id: str, bounds: tuple[float, float, float, float], credential: str) -> dict[str, Any]:
    """A mosaic of the layer's map tiles over its extent (at most 4 x 3 tiles): a picture without a map library."""
    zoom, cols, rows = 16, range(0), range(0)
    for zoom in range(16, 0, -1):
        x0, y0 = read.tile_of(bounds[0], bounds[3], zoom)
        x1, y1 = read.tile_of(bounds[2], bounds[1], zoom)
        cols, rows = range(x0, x1 + 1), range(y0, y1 + 1)
        if len(cols) <= 4 and len(rows) <= 3:
            break
    tiles = [(f"/collections/{layer_id}/map/tiles/WebMercatorQuad/{zoom}/{y}/{x}{credential}",
              (x - cols.start) * 256, (y - rows.start) * 256) for y in rows for x in cols]
    return {"width": len(cols) * 256, "height": len(rows) * 256, "tiles": tiles}


def collection_page(document: dict[str, Any], version: RasterVersion | None, credential: str) -> str:
    rows = [("id", document["id"]), ("description", document["description"]),
            ("keywords", ", ".join(document["keywords"])), ("department", document["department"]),
            ("access", document["access"]), ("storage CRS", document["storageCrs"]),
            ("bands", ", ".join(f"{b['name']}{f' ({b['unit']})' if b['unit'] else ''}" for b in document["bands"])),
            ("nodata", f"{document['nodata']:g}"),
            ("version", f"{version.version_id}, since {version.valid_from:%Y-%m-%d %H:%M} UTC" if version else "none")]
    picture = preview(document["id"], version.lonlat_bounds, credential) if version is not None else None
    crumbs = [("collections", "/collections?f=html"), (document["id"], f"/collections/{document['id']}?f=html")]
    return html_page("ogc/raster.html", document["title"], crumbs, document=document, rows=rows, preview=picture)


async def raster_documents(request: Request, state: AppState) -> list[dict[str, Any]]:
    """The collection documents of the rasters the caller may read, for /collections."""
    visible = visibility.visible_rasters(request)
    if not visible:
        return []
    current = await current_versions(state)
    return [collection_document(request, spec, current.get(raster_id)) for raster_id, spec in visible.items()]


async def collection(collection_id: str, request: Request, state: AppState, given: DocumentParameters) -> Response:
    """/collections/{id} for a raster layer (the features router hands raster ids here, with its parameters)."""
    spec = visibility.raster_view(request, collection_id)
    params = given.check(request)
    current = (await current_versions(state)).get(spec.id)
    document = collection_document(request, spec, current)
    if ogc.wants_html(request, params):
        credential = urlencode(ogc.credential_suffix(request))
        return ogc.html_response(collection_page(document, current, f"?{credential}" if credential else ""))
    return ogc.json_response(document)

