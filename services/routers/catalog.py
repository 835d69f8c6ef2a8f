"""The catalog as OGC API Records: /catalog (the record collection), /catalog/items (search), /catalog/items/{id}.

It lives beside /collections, not in it: the OAPIF clients (GDAL, OWSLib, QGIS) list /collections
and would take a record collection for a feature layer. A caller finds exactly the layers it may
read (hidden layers are not in the catalog and their records answer 404), and a row-limited caller
sees no totals, as in the collection documents.
"""

from functools import partial
from typing import Annotated, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gis import catalog
from gis.errors import NotFound
from gis.svg import features_map
from services.auth import visibility
from services.common import ogc
from services.common.collections import download_links
from services.common.html import html_page
from services.common.parameters import CatalogParameters, Document, on_loop
from services.common.state import AppState, State

router = APIRouter(tags=["OGC API Records"])

CatalogQuery = Annotated[CatalogParameters, Depends(on_loop(CatalogParameters))]

PATH = "/catalog"
TITLE = "资源目录 · Catalog of the layers"
DESCRIPTION = ("Every layer's metadata: titles, description, keywords, owning department, access class, "
               "spatial and temporal extent, update frequency, last refresh and its counts.")
CONFORMANCE = catalog.CONFORMANCE
LANDING_LINK = {"href": PATH, "rel": "catalog", "type": ogc.JSON, "title": "the catalog of the layers (资源目录)"}


async def _records(request: Request, state: AppState) -> list[dict[str, Any]]:
    """The records of the layers the caller may read, vector then raster, in the registry's order."""
    async with state.pool.connection() as conn:
        facts = await catalog.read_facts(conn)
    found = []
    for view in visibility.visible_layers(request).values():
        found.append(_with_links(request, catalog.record(view.spec, facts.get(view.source.id), "vector",
                                                         tells_counts=view.tells_layer_facts)))
    for raster_id, spec in visibility.visible_rasters(request).items():
        found.append(_with_links(request, catalog.record(spec, facts.get(raster_id), "raster")))
    return found


def _with_links(request: Request, found: dict[str, Any]) -> dict[str, Any]:
    layer_id = found["id"]
    links = [
        ogc.link(ogc.url(request, f"{PATH}/items/{layer_id}"), "self", ogc.GEOJSON, "this record"),
        ogc.link(ogc.url(request, PATH), "collection", ogc.JSON, "the catalog"),
    ]
    if found["properties"]["layerKind"] == "vector":
        links += [
            ogc.link(ogc.url(request, f"/collections/{layer_id}"), "describedby", ogc.JSON, "the collection"),
            ogc.link(ogc.url(request, f"/collections/{layer_id}/items"), "items", ogc.GEOJSON, "the features"),
            *download_links(partial(ogc.url, request), layer_id),
        ]
    else:
        links.append(ogc.link(ogc.url(request, f"/collections/{layer_id}"), "describedby", ogc.JSON,
                              "the coverage"))
    return {**found, "links": links}


@router.get(PATH, summary="The catalog: a record collection (OGC API Records)")
async def catalog_collection(given: Document, request: Request, state: State) -> Response:
    params = given.check(request)
    as_html = ogc.wants_html(request, params)
    records = await _records(request, state)
    boxes = [r["geometry"]["coordinates"][0] for r in records if r["geometry"] is not None]
    extent: dict[str, Any] = {}
    if boxes:
        extent["spatial"] = {"bbox": [[min(b[0][0] for b in boxes), min(b[0][1] for b in boxes),
                                       max(b[2][0] for b in boxes), max(b[2][1] for b in boxes)]],
                             "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}
    document = {
        "id": "catalog", "type": "Catalog", "itemType": "record", "title": TITLE, "description": DESCRIPTION,
        "extent": extent, "conformsTo": list(catalog.CONFORMANCE), "numberOfRecords": len(records),
        "links": [
            *ogc.self_links(request, PATH, html=as_html),
            ogc.link(ogc.url(request, f"{PATH}/items"), "items", ogc.GEOJSON, "the records"),
            ogc.link(ogc.url(request, f"{PATH}/items", [("f", "html")]), "items", "text/html", "the records (HTML)"),
            ogc.link(ogc.url(request, "/"), "root", ogc.JSON, "the landing page"),
        ],
    }
    if as_html:
        return ogc.html_response(catalog_page(document, records))
    return ogc.json_response(document)


@router.get(f"{PATH}/items", summary="Search the catalog: q, bbox, datetime (OGC API Records)")
async def search(given: CatalogQuery, request: Request, state: State) -> Response:
    params = given.check(request)
    as_html = ogc.wants_html(request, params)
    q = catalog.parse_catalog_query(params)
    matched = catalog.search(await _records(request, state), q)
    page = matched[q.offset:q.offset + q.limit]
    kept = [(k, v) for k, v in params.items() if k not in ("offset", "f")]
    links = ogc.self_links(request, f"{PATH}/items", ogc.GEOJSON, as_html, kept)
    if q.offset + q.limit < len(matched):
        links.append(ogc.link(ogc.url(request, f"{PATH}/items", [*kept, ("offset", str(q.offset + q.limit))]),
                              "next", ogc.GEOJSON, "next page"))
    links.append(ogc.link(ogc.url(request, PATH), "collection", ogc.JSON, "the catalog"))
    document = {"type": "FeatureCollection", "numberMatched": len(matched), "numberReturned": len(page),
                "features": page, "links": links}
    if as_html:
        return ogc.html_response(records_page(document, params.get("q", "")))
    return Response(orjson.dumps(document), media_type=ogc.GEOJSON)


@router.get(f"{PATH}/items/{{record_id}}", summary="One layer's record")
async def one_record(record_id: str, given: Document, request: Request, state: State) -> Response:
    params = given.check(request)
    as_html = ogc.wants_html(request, params)
    found = next((r for r in await _records(request, state) if r["id"] == record_id), None)
    if found is None:
        raise NotFound(f"no record '{record_id[:200]}' in the catalog")
    if as_html:
        return ogc.html_response(record_page(found))
    return Response(orjson.dumps(found), media_type=ogc.GEOJSON)


# -- HTML ------------------------------------------------------------------------------------------------

_CRUMBS = [("catalog", f"{PATH}?f=html")]


def catalog_page(document: dict[str, Any], records: list[dict[str, Any]]) -> str:
    # The map is on the records page: its links to records are relative to /catalog/items/.
    return html_page("ogc/catalog.html", TITLE, _CRUMBS, document=document, records=records, path=PATH)


def records_page(document: dict[str, Any], q: str) -> str:
    records = document["features"]
    return html_page("ogc/records.html", f"{TITLE} · search", [*_CRUMBS, ("records", f"{PATH}/items?f=html")],
                     document=document, records=records, q=q, path=PATH, map=features_map(records))


def record_page(found: dict[str, Any]) -> str:
    p = found["properties"]
    rows = [(k, v if isinstance(v, str) else orjson.dumps(v).decode()) for k, v in p.items()
            if k not in ("titles", "themes", "contacts", "language")]
    if found.get("time"):
        rows.append(("time", " / ".join(found["time"]["interval"])))
    crumbs = [*_CRUMBS, (found["id"], f"{PATH}/items/{quote(found['id'])}?f=html")]
    return html_page("ogc/record.html", p["title"], crumbs,
                     map=features_map([found], 480, 320, item_prefix=""), rows=rows, links=found["links"])
