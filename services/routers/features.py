"""OGC API Features for every registry layer: collection, items, one item, its history, queryables.

The registry answers 404 before any SQL; each data request is one prepared statement whose GeoJSON
is built by PostgreSQL and passed through as bytes, wrapped in a small envelope made here.
"""

from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import orjson
import psycopg
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gis.errors import InvalidInput, NotFound
from gis.features import crs as crs_
from gis.features.params import encode_cursor, parse_items_query, parse_properties
from gis.features.queries import Statement, history_statement, item_statement, items_statement
from gis.features.queryables import json_schema
from gis.features.temporal import parse_datetime
from gis.security.policy import LayerView
from services.auth import read_audit, visibility
from services.common import encoded_paths, html, limits, ogc, rasters
from services.common.collections import blame, iso_time, layer_stats, view_document
from services.common.parameters import (
    CollectionId,
    Document,
    FeatureId,
    HistoryParameters,
    ItemParameters,
    ItemsParameters,
    on_loop,
)
from services.common.state import AppState, State

# The routes' parameters, made on the event loop (parameters.on_loop), not in FastAPI's thread pool.
Items = Annotated[ItemsParameters, Depends(on_loop(ItemsParameters))]
Item = Annotated[ItemParameters, Depends(on_loop(ItemParameters))]
History = Annotated[HistoryParameters, Depends(on_loop(HistoryParameters))]

router = APIRouter(tags=["OGC API Features"])


# What each read's audit row records of its answer (services.auth.read_audit.Counted): a page its features returned;
# an item one or none (404); a history its versions, none being a 404.
PAGE = read_audit.Counted("r.returned", "200", lambda row: (row[1] if row else 0, 200))
ONE = read_audit.Counted("CASE WHEN r.found THEN 1 ELSE 0 END", "CASE WHEN r.found THEN 200 ELSE 404 END",
                         lambda row: (0, 404) if row is None else (1, 200))
VERSIONS = read_audit.Counted("coalesce(r.count, 0)", "CASE WHEN r.count > 0 THEN 200 ELSE 404 END",
                              lambda row: (0, 404) if row is None or not row[1] else (row[1], 200))


async def fetch_one(request: Request, state: AppState, view: LayerView, statement: Statement,
                    counted: read_audit.Counted, blame: str | None = None) -> tuple[Any, ...] | None:
    """Run one prepared statement on `view`'s layer, with the read's audit row (read_audit.read_row); a value the
    database refuses is the client's when `blame` names a parameter.

    The read goes to a standby that has the layer's current version, or to the primary, in one round trip
    (AppState.read_row, which also retries a connection the server closed)."""
    try:
        return await read_audit.read_row(request, state, view, statement.query, statement.params, counted)
    except (psycopg.DataError, psycopg.errors.InternalError_) as exc:
        if blame is None:
            raise
        message = exc.diag.message_primary or str(exc)
        raise InvalidInput(blame, f"cannot be evaluated: {message}") from None


@router.get("/collections/{collectionId}", summary="A layer's metadata")
async def collection(collectionId: CollectionId, given: Document, request: Request, state: State) -> Response:
    if collectionId in state.registry.rasters:
        return await rasters.collection(collectionId, request, state, given)
    view = visibility.layer_view(request, collectionId)
    params = given.check(request)
    as_html = ogc.wants_html(request, params)
    stats = (await layer_stats(state)).get(view.source.id)
    document = view_document(request, state, view, stats)
    return ogc.document_response(document, as_html, html.collection_page)


@router.get("/collections/{collectionId}/queryables", summary="What a filter may name (JSON Schema)")
async def queryables(collectionId: CollectionId, given: Document, request: Request) -> Response:
    view = visibility.layer_view(request, collectionId)
    spec = view.spec
    params = given.check(request)
    schema = json_schema(spec, ogc.url(request, f"/collections/{spec.id}/queryables"))
    if ogc.wants_html(request, params):
        return ogc.html_response(html.queryables_page(spec, schema))
    return ogc.json_response(schema, ogc.SCHEMA_JSON)


@router.get("/collections/{collectionId}/items", summary="Features of a layer, one page")
async def items(collectionId: CollectionId, given: Items, request: Request, state: State) -> Response:
    view = visibility.layer_view(request, collectionId)
    spec = view.spec
    params = given.check_filters(request, spec)
    as_html = ogc.wants_html(request, params)
    q = parse_items_query(spec, params, limits.cql2_limits(request), given.names)
    if as_html:
        q = replace(q, crs=crs_.CRS84)  # the HTML map draws lon/lat
    asked = q
    q = await visibility.restrict(request, view, q)
    statement = items_statement(spec, q)
    row = await fetch_one(request, state, view, statement, PAGE, blame(q))
    assert row is not None
    features, returned, more, last_fid, matched = row
    q = asked  # links and pages show the caller's own query, not the row rule
    if matched is None and not more and q.after is None:
        matched = q.offset + returned  # the whole rest fits in this page, so the count is known
    path = f"/collections/{spec.id}/items"
    kept = [(k, v) for k, v in params.items() if k not in ("cursor", "offset", "f")]
    fmt = [("f", params["f"])] if "f" in params else []
    links = ogc.self_links(request, path, ogc.GEOJSON, as_html, [(k, v) for k, v in params.items()
                                                                if k != "f"])
    if more:
        position = ([("cursor", encode_cursor(last_fid))] if q.keyset else
                    [("offset", str(q.offset + q.limit))])
        links.append(ogc.link(ogc.url(request, path, [*kept, *position, *fmt]), "next",
                              "text/html" if as_html else ogc.GEOJSON, "next page"))
    links.append(ogc.link(ogc.url(request, f"/collections/{spec.id}"), "collection", ogc.JSON, spec.title.en))
    head: dict[str, Any] = {"type": "FeatureCollection", "timeStamp": iso_time(datetime.now(UTC))}
    if matched is not None:
        head["numberMatched"] = matched
    head["numberReturned"] = returned
    head["links"] = links
    body = b"".join((orjson.dumps(head)[:-1], b',"features":[', features, b"]}"))
    if as_html:
        return ogc.html_response(html.items_page(spec, orjson.loads(body), q))
    return Response(body, media_type=ogc.GEOJSON, headers={"Content-Crs": f"<{q.crs.uri}>"})


@router.get("/collections/{collectionId}/items/{featureId}", summary="One feature")
async def item(collectionId: CollectionId, featureId: FeatureId, given: Item, request: Request,
               state: State) -> Response:
    view, params, as_html, out_crs = _feature_request(request, collectionId, given)
    spec, feature_id = view.spec, encoded_paths.original(request, featureId)
    time = parse_datetime(given.datetime) if given.datetime is not None else None
    properties = parse_properties(given.properties, spec) if given.properties is not None else None
    if "\x00" in feature_id:
        raise NotFound(f"no feature '{feature_id[:60]}' in '{spec.id}'")
    # The row rule is in the one statement: a feature outside the caller's rows and one that does not exist take
    # the same query and plan, and answer alike.
    rule = await visibility.row_filter(request, view)
    row = await fetch_one(request, state, view, item_statement(spec, feature_id, out_crs, time, properties, rule),
                          ONE)
    if row is None:
        raise NotFound(f"no feature '{feature_id[:200]}' in '{spec.id}'")
    path = f"/collections/{spec.id}/items/{_quote(feature_id)}"
    links = [
        *ogc.self_links(request, path, ogc.GEOJSON, as_html, [(k, v) for k, v in params.items() if k != "f"]),
        ogc.link(ogc.url(request, f"/collections/{spec.id}"), "collection", ogc.JSON, spec.title.en),
        ogc.link(ogc.url(request, f"{path}/history"), "version-history", ogc.GEOJSON, "every version"),
    ]
    body = b"".join((row[0][:-1], b',"links":', orjson.dumps(links), b"}"))
    if as_html:
        return ogc.html_response(html.feature_page(spec, orjson.loads(body)))
    headers = {"Content-Crs": f"<{out_crs.uri}>"}
    if row[1] is not None:
        headers["ETag"] = row[1]  # the feature's current version: send it back in If-Match to edit (Part 4)
    return Response(body, media_type=ogc.GEOJSON, headers=headers)


@router.get("/collections/{collectionId}/items/{featureId}/history", summary="Every version of one feature")
async def history(collectionId: CollectionId, featureId: FeatureId, given: History, request: Request,
                  state: State) -> Response:
    view, params, as_html, out_crs = _feature_request(request, collectionId, given)
    spec, feature_id = view.spec, encoded_paths.original(request, featureId)
    if "\x00" in feature_id:
        raise NotFound(f"no feature '{feature_id[:60]}' in '{spec.id}'")
    rule = await visibility.row_filter(request, view)
    row = await fetch_one(request, state, view, history_statement(spec, feature_id, out_crs, rule), VERSIONS)
    if row is None or not row[1]:
        raise NotFound(f"no feature '{feature_id[:200]}' in '{spec.id}'")
    path = f"/collections/{spec.id}/items/{_quote(feature_id)}/history"
    head = {
        "type": "FeatureCollection", "numberMatched": row[1], "numberReturned": row[1],
        "links": [
            *ogc.self_links(request, path, ogc.GEOJSON, as_html, [(k, v) for k, v in params.items() if k != "f"]),
            ogc.link(ogc.url(request, f"/collections/{spec.id}/items/{_quote(feature_id)}"), "latest-version",
                     ogc.GEOJSON, "the version valid now"),
            ogc.link(ogc.url(request, f"/collections/{spec.id}"), "collection", ogc.JSON, spec.title.en),
        ],
    }
    body = b"".join((orjson.dumps(head)[:-1], b',"features":[', row[0], b"]}"))
    if as_html:
        return ogc.html_response(html.history_page(spec, feature_id, orjson.loads(body)))
    return Response(body, media_type=ogc.GEOJSON, headers={"Content-Crs": f"<{out_crs.uri}>"})


# Clients that put an id into the path as it is (OWSLib's collection_item) send its slashes as slashes: a GET
# that no route above takes is the item whose id is the rest of the path. Its history needs the id encoded
# (`A%2F12/history`), as every link the service writes has it: `A/12/history` is the item "A/12/history".
@router.get("/collections/{collectionId}/items/{featureId:path}", include_in_schema=False)
async def item_with_slashes(collectionId: CollectionId, featureId: FeatureId,
                            given: Item, request: Request, state: State) -> Response:
    return await item(collectionId, featureId, given, request, state)


def _feature_request(request: Request, collection_id: str, given: HistoryParameters
                     ) -> tuple[LayerView, dict[str, str], bool, crs_.Crs]:
    """For one feature's routes: the layer as the caller sees it (masked fields left out; 404 as for no such layer
    if hidden), the checked query, whether HTML is wanted and the response CRS (lon/lat for the HTML map)."""
    view = visibility.layer_view(request, collection_id)
    params = given.check(request)
    as_html = ogc.wants_html(request, params)
    out_crs = crs_.parse_crs(given.crs, "crs") if given.crs is not None and not as_html else crs_.CRS84
    return view, params, as_html, out_crs


def _quote(fid: str) -> str:
    return quote(fid, safe="")
