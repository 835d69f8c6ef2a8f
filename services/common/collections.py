"""The collection document of a vector layer (/collections and /collections/{id}), from ops.layer_stats, and
its download links.

Shared by the features router (one collection), the landing router (/collections) and the web map
(the layers' extents), so none of them reaches into another.
"""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from fastapi import Request

from gis.downloads import FORMATS
from gis.features import crs as crs_
from gis.features.params import ItemsQuery
from gis.features.queries import stats_statement
from gis.layers import LayerSpec
from gis.security.policy import LayerView
from services.common import ogc
from services.common.state import AppState


async def layer_stats(state: AppState) -> dict[str, tuple[Any, ...]]:
    """layer_id -> (layer_id, row_count, extent, time_extent, changed_refresh_id, changed_at)."""
    statement = stats_statement()

    async def work(conn: psycopg.AsyncConnection[Any]) -> dict[str, tuple[Any, ...]]:
        cursor = await conn.execute(statement.query, prepare=True)
        return {row[0]: row for row in await cursor.fetchall()}

    return await state.read([], work)


def iso_time(value: datetime | None) -> str | None:
    if value is None or value in (datetime.min, datetime.max):
        return None
    try:
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError):
        return None


def collection_document(request: Request, state: AppState, spec: LayerSpec, stats: tuple[Any, ...] | None
                        ) -> dict[str, Any]:
    path = f"/collections/{spec.id}"
    extent: dict[str, Any] = {}
    if stats is not None and stats[2] is not None and None not in stats[2]:
        extent["spatial"] = {"bbox": [list(stats[2])], "crs": crs_.CRS84.uri}
    if stats is not None and stats[3] is not None:
        start, end = (stats[3] + [None, None])[:2]
        extent["temporal"] = {"interval": [[iso_time(start), iso_time(end)]],
                              "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"}
    document: dict[str, Any] = {
        "id": spec.id,
        "title": f"{spec.title.zh} · {spec.title.en}",
        "titles": {"zh": spec.title.zh, "en": spec.title.en},
        "description": spec.description,
        "keywords": list(spec.keywords),
        "itemType": "feature",
        "crs": [c.uri for c in crs_.SUPPORTED],
        "storageCrs": crs_.STORAGE_CRS.uri,
        "extent": extent,
        "links": [
            *ogc.self_links(request, path),
            ogc.link(ogc.url(request, f"{path}/items"), "items", ogc.GEOJSON, "features as GeoJSON"),
            ogc.link(ogc.url(request, f"{path}/items", [("f", "html")]), "items", "text/html", "features as HTML"),
            ogc.link(ogc.url(request, f"{path}/queryables"), "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                     ogc.SCHEMA_JSON, "queryable properties"),
            *(extra for provider in state.discovery.collection_links
              for extra in provider(ogc.base_url(request), spec.id)),
        ],
        "geometryType": spec.geometry.value,
        "domain": spec.domain.value,
        "department": spec.department,
        "access": spec.access.value,
        "updateFrequency": spec.update_frequency,
        "temporal": {"kind": spec.temporal.kind, **({"field": spec.temporal.field} if spec.temporal.field else {}),
                     "featuresCarryValidity": spec.has_valid_time},
    }
    if stats is not None:
        if not spec.has_valid_time:  # a plan's table also holds parcels not (or no longer) in force
            document["numberOfFeatures"] = stats[1]
        document["changedAt"] = iso_time(stats[5])
    return document


def view_document(request: Request, state: AppState, view: LayerView, stats: tuple[Any, ...] | None
                  ) -> dict[str, Any]:
    """The collection document as the caller sees the layer: a row-limited view tells nothing of the whole
    layer (no total, no extents, no time of its last change), only what every caller may know."""
    document = collection_document(request, state, view.spec, stats)
    if not view.tells_layer_facts:
        document.pop("numberOfFeatures", None)
        document.pop("changedAt", None)
        document["extent"] = {}
    return document


def blame(q: ItemsQuery) -> str | None:
    """The parameter to name when the database refuses a value of this query."""
    if q.filter is not None:
        return "filter"
    if q.bbox is not None:
        return "bbox"
    return "datetime" if q.time is not None else None


def download_links(url_of: Callable[[str, list[tuple[str, str]]], str], layer_id: str) -> list[dict[str, str]]:
    """One link per format (rel enclosure), with URLs made by `url_of(path, params)`."""
    return [ogc.link(url_of(f"/collections/{layer_id}/download", [("f", fmt.value)]), "enclosure",
                     info.media_type, f"download as {info.title}") for fmt, info in FORMATS.items()]
