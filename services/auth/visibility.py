"""What a caller may see: the layers and rasters of its role, their fields, and its rows of each layer.

A layer the caller may not read answers exactly as a layer that does not exist (404). A row rule
(gis.security.rows, which writes its SQL) becomes a CQL2 node ANDed into the caller's own filter; the
area a spatial rule names is read again only when the version of the layer it comes from has moved (one
indexed lookup per request), so an edited jurisdiction counts on every node with the next request.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import replace

from fastapi import Request

from gis.errors import NotFound
from gis.features import crs as crs_
from gis.features.cql2 import Filter
from gis.features.params import ItemsQuery
from gis.layers import RasterSpec
from gis.security import rows
from gis.security.policy import LayerView, readable
from services.auth.credentials import Caller, caller_of
from services.common.state import AppState, app_state

_CACHE_MAX = 10_000


class RowAreas:
    """Per app: the row rules' CQL2 nodes, with the areas of spatial rules cached per process, keyed by the
    version of the layer each area is read from (gis.security.rows.AreaCache)."""

    def __init__(self) -> None:
        self._areas = rows.AreaCache(_CACHE_MAX)

    async def row_node(self, state: AppState, caller: Caller, view: LayerView, filter_crs: crs_.Crs) -> Filter:
        rule = view.rows
        assert rule is not None
        value = rows.claim_value(caller.claims, rule)
        if rule.within is None:
            return rows.attribute_node(rule, value)
        if value is None:
            return rows.NOTHING
        async with state.pool.connection() as conn:  # the area's layer version, on the primary: edits count at once
            return await self._areas.node(conn, rule, state.registry, value, filter_crs)


def layer_view(request: Request, layer_id: str) -> LayerView:
    """The layer as the caller may see it; NotFound (as for a layer that does not exist) if hidden."""
    return caller_of(request).role.view(layer_id)


def visible_layers(request: Request) -> Mapping[str, LayerView]:
    return caller_of(request).role.views


def raster_view(request: Request, raster_id: str) -> RasterSpec:
    """The raster layer if the caller may read it; NotFound (as for a layer that does not exist) if hidden."""
    spec = app_state(request).registry.rasters.get(raster_id)
    if spec is None or not readable(caller_of(request).role.spec, spec):
        raise NotFound(f"no layer '{raster_id[:200]}'")
    return spec


def visible_rasters(request: Request) -> Mapping[str, RasterSpec]:
    role = caller_of(request).role.spec
    return {rid: spec for rid, spec in app_state(request).registry.rasters.items() if readable(role, spec)}


async def restrict(request: Request, view: LayerView, q: ItemsQuery) -> ItemsQuery:
    """The request's query with the caller's row rule (unchanged when there is none): the statement reads the rows
    with the rule first and applies the request's filter to what it lets through (gis.features.queries.source)."""
    node = await row_filter(request, view, q.filter_crs)
    return q if node is None else replace(q, rows=node)


async def row_filter(request: Request, view: LayerView, filter_crs: crs_.Crs = crs_.CRS84) -> Filter | None:
    """The caller's row rule on the layer as a CQL2 node (geometries in filter_crs); None when it has none."""
    if view.rows is None:
        return None
    state = app_state(request)
    return await state.row_areas.row_node(state, caller_of(request), view, filter_crs)




def mask_tag(view: LayerView) -> str:
    """A short tag for what a masked view leaves out (tile ETags and cache keys differ per view)."""
    return hashlib.sha256(",".join(view.masked).encode()).hexdigest()[:8]
