"""The web map of the whole city: /map (the page) and /map/style.json (its MapLibre style, per caller).

The style names only the layers the caller may see: each vector layer as a vector tile source of this
service (services/routers/tiles.py) drawn with the style layers gis.map_style makes from the layer's QML, each
loaded raster layer as a source of its PNG map tiles (services/routers/map_tiles.py). The page
(plain HTML, no inline script) loads MapLibre GL and our one script from /static: nothing from the
network, so it works offline and under a Content-Security-Policy of script-src 'self'.
The caller's key reaches the page as `?api_key=` and the script sends it as X-API-Key on every
request of its own (tiles, style, collections, overlap checks), never in a tile URL.
"""

import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from gis import tiles as mvt
from gis.layers import LayerRegistry, RasterSpec
from gis.map_style import LayerStyle, draw_order, style_layers
from gis.rasters.versions import RasterVersion
from gis.rendering import render
from gis.security.policy import LayerView
from gis.styles import style_files
from services.auth import visibility
from services.common import ogc
from services.common.collections import layer_stats
from services.common.parameters import Document
from services.common.rasters import MAX_ZOOM as RASTER_MAX_ZOOM
from services.common.rasters import current_versions
from services.common.state import AppState, State

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
STATIC_PATH = "/static"
# Vector tiles are requested up to this zoom and drawn larger beyond it: our tiles keep every vertex
# that matters at z16 (a pixel is 2.4 m there), and deeper requests would only multiply the requests.
SOURCE_MAX_ZOOM = 16
RASTER_TILE_SIZE = 256  # gis.rasters.read draws 256-pixel PNG tiles
BACKGROUND = "#f4f3ef"
DATASET_SOURCE = "gis:dataset"  # not a layer id: those are lower-case words (gis.layers)
LANDING_LINK = {"href": "/map", "rel": "related", "type": "text/html", "title": "城市地图 · web map of the city"}


def load_styles(registry: LayerRegistry, styles_dir: Path) -> dict[str, LayerStyle]:
    """Every layer's QML as MapLibre style layers, made once by create_app: a style the map cannot convert stops
    the service at start, naming the file."""
    return {spec.id: style_layers(spec, style_files(spec, styles_dir).qml, str(styles_dir / spec.style))
            for spec in registry.specs()}


router = APIRouter(tags=["Web map"])


def install(app: FastAPI) -> None:
    """The map's routes and the static files it loads (public: code and MapLibre, no data)."""
    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")


def _hidden(layer: dict[str, Any]) -> dict[str, Any]:
    return {**layer, "layout": {**layer.get("layout", {}), "visibility": "none"}}


def view_bounds(extents: list[list[float]]) -> list[float]:
    """Where the map opens: each side the median of the layers' extents, the box most layers share. The
    union would open on the whole municipality (the districts reach far into the counties), where the
    city's streets and pipes are a few pixels."""
    return [statistics.median(e[i] for e in extents) for i in range(4)]


def _tiles(base: str, collection_id: str, kind: str) -> str:
    """A tile URL template for MapLibre: WebMercatorQuad's {tileMatrix}/{tileRow}/{tileCol} are z/y/x."""
    return f"{base}/collections/{collection_id}/{kind}/{mvt.TILE_MATRIX_SET}/{{z}}/{{y}}/{{x}}"


def _dataset_tiles(base: str, layer_ids: list[str]) -> str:
    """The dataset tiles' URL template for these collections, one MVT layer each (bottom first)."""
    return f"{base}/tiles/{mvt.TILE_MATRIX_SET}/{{z}}/{{y}}/{{x}}?{urlencode({'collections': ','.join(layer_ids)})}"


def _source(template: str, extents: list[list[float] | None]) -> dict[str, Any]:
    """A vector tile source; bounded (no tile asked outside) only where every layer in it has a known extent."""
    source: dict[str, Any] = {"type": "vector", "minzoom": 0, "maxzoom": SOURCE_MAX_ZOOM, "tiles": [template]}
    known = [e for e in extents if e is not None]
    if known and len(known) == len(extents):
        source["bounds"] = [min(e[0] for e in known), min(e[1] for e in known),
                            max(e[2] for e in known), max(e[3] for e in known)]
    return source


def _in_dataset(layer: dict[str, Any]) -> dict[str, Any]:
    """A style layer of a layer shown at start, drawn from the dataset source (its source-layer names it)."""
    return {**layer, "source": DATASET_SOURCE}


def _raster_parts(base: str, rasters: Mapping[str, tuple[RasterSpec, RasterVersion]]
                  ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Sources, style layers and page metadata of the raster layers (PNG map tiles, services/routers/map_tiles.py).
    They start hidden: the DEM, imagery and land cover are opaque and would cover one another."""
    sources, layers, infos = {}, [], []
    for raster_id, (spec, version) in rasters.items():
        sources[raster_id] = {"type": "raster", "tileSize": RASTER_TILE_SIZE, "minzoom": 0,
                              "maxzoom": RASTER_MAX_ZOOM, "bounds": list(version.lonlat_bounds),
                              "tiles": [_tiles(base, raster_id, "map/tiles")]}
        layers.append({"id": f"{raster_id}:0", "type": "raster", "source": raster_id,
                       "metadata": {"gis:layer": raster_id}, "layout": {"visibility": "none"}})
        infos.append({"id": raster_id, "domain": spec.domain.value, "geometry": "raster", "visible": False,
                      "styleLayers": [f"{raster_id}:0"], "notConverted": [],
                      "legend": [{"label": stop.label or f"{stop.value:g}", "color": stop.colour}
                                 for stop in spec.rendering.stops]})
    return sources, layers, infos


def style_document(request: Request, state: AppState, views: Mapping[str, LayerView],
                   rasters: Mapping[str, tuple[RasterSpec, RasterVersion]], extents: dict[str, list[float]]
                   ) -> dict[str, Any]:
    """The MapLibre style of these layers, bottom first (rasters under the vector layers), with what the
    page shows of each in `metadata`."""
    base = ogc.base_url(request)
    styles = draw_order([state.map_styles[layer_id] for layer_id in views])
    # Event layers (incidents, observations) start hidden: without a date they would draw every event at once.
    shown = {layer_id: v.spec.temporal.kind != "event" for layer_id, v in views.items()}
    # The layers shown at start come in one tile per place (services/routers/dataset_tiles.py), bottom first;
    # a layer shown only when ticked has tiles of its own, asked for only then.
    together = [s.layer_id for s in styles if shown[s.layer_id]]
    sources: dict[str, Any] = {}
    if together:
        sources[DATASET_SOURCE] = _source(_dataset_tiles(base, together), [extents.get(i) for i in together])
    for layer_id in views:
        if layer_id not in together:
            sources[layer_id] = _source(_tiles(base, layer_id, "tiles"), [extents.get(layer_id)])
    raster_sources, raster_layers, raster_infos = _raster_parts(base, rasters)
    view = view_bounds(list(extents.values())) if extents else list(state.settings.city_extent)
    infos = [{"id": s.layer_id, "domain": views[s.layer_id].spec.domain.value, "geometry": s.geometry,
              "visible": shown[s.layer_id], "styleLayers": [layer["id"] for layer in s.layers],
              "legend": list(s.legend), "notConverted": list(s.not_converted)} for s in styles]
    return {
        "version": 8,
        "name": "时空信息云平台 · city map",
        "metadata": {"gis:layers": [*raster_infos, *infos], "gis:bounds": view},
        "center": [(view[0] + view[2]) / 2, (view[1] + view[3]) / 2],
        "zoom": mvt.center_zoom(view),
        "sources": {**raster_sources, **sources},
        "layers": [{"id": "background", "type": "background", "paint": {"background-color": BACKGROUND}},
                   *raster_layers,
                   *(_in_dataset(layer) if shown[s.layer_id] else _hidden(layer)
                     for s in styles for layer in s.layers)],
    }


@router.get("/map/style.json", summary="The web map's MapLibre style: the layers the caller may see")
async def map_style(given: Document, request: Request, state: State) -> Response:
    given.check(request)
    views = visibility.visible_layers(request)  # tiles apply a row rule themselves (services/routers/tiles.py)
    stats = await layer_stats(state)
    # a row-limited caller gets no layer extent (it would tell where the rows it may not read are)
    extents = {layer_id: list(stats[layer_id][2]) for layer_id, view in views.items()
               if view.tells_layer_facts and layer_id in stats and stats[layer_id][2] is not None
               and None not in stats[layer_id][2]}
    # A raster not loaded yet has no tiles to draw (they would all be 404s).
    current = await current_versions(state) if visibility.visible_rasters(request) else {}
    rasters = {raster_id: (spec, current[raster_id]) for raster_id, spec in visibility.visible_rasters(request).items()
               if raster_id in current}
    document = style_document(request, state, views, rasters, extents)
    # Per caller: a shared cache must not hand one caller's layers to another.
    return ogc.json_response(document, headers={"Cache-Control": "private, max-age=60", "Vary": "X-API-Key"})


@router.get("/map", summary="The web map of the city (HTML)", responses={200: {"content": {"text/html": {}}}})
async def map_page(given: Document, request: Request) -> Response:
    given.check(request)
    # No inline script: the service's Content-Security-Policy (services/common/headers.py) allows ours from /static.
    return ogc.html_response(page_html(ogc.credential_suffix(request)))


def page_html(credential: list[tuple[str, str]]) -> str:
    """The page (gis/templates/map.html): markup only, its scripts are the static files it names."""
    return render("map.html", static=STATIC_PATH, suffix=f"&{urlencode(credential)}" if credential else "")
