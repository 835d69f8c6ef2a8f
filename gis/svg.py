"""Maps as drawings (gis.rendering.Drawing): GeoJSON geometries in CGCS2000 lon/lat, projected about the
centre of what is drawn, each drawn as shapes in a style.

The analyses' reports (pipeline, environment, policing, overlap) draw theirs with MapFrame: equirectangular,
metre-true at a street's or a project's scale, with a scale bar and a north mark. The OGC pages draw their
features with features_map, each a link to its own page. The templates write the shapes out
(gis.rendering.svg), escaping every value.
"""

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

from gis.rendering import Drawing, Shape

Geometry = dict[str, Any]  # a GeoJSON geometry
Position = Sequence[float]  # lon, lat (further ordinates are ignored)
Style = tuple[str, str, float, float]  # stroke, fill, stroke width, point radius
DEFAULT_STYLE: Style = ("#333", "none", 1.5, 3)


def positions(geometry: Geometry | None) -> Iterator[Position]:
    """Every vertex of a point, line or polygon geometry (single or multi)."""
    if not geometry:
        return
    kind, coords = geometry.get("type"), geometry.get("coordinates", [])
    if kind == "Point":
        yield coords
    elif kind in ("LineString", "MultiPoint"):
        yield from coords
    elif kind in ("Polygon", "MultiLineString"):
        for part in coords:
            yield from part
    elif kind == "MultiPolygon":
        for polygon in coords:
            for ring in polygon:
                yield from ring


def polygon_rings(geometry: Geometry | None) -> Iterator[list[Position]]:
    """The rings of a polygon, a multipolygon or the polygons of a collection; nothing for points and lines."""
    if not geometry:
        return
    kind, coords = geometry.get("type"), geometry.get("coordinates", [])
    if kind == "Polygon":
        yield from coords
    elif kind == "MultiPolygon":
        for polygon in coords:
            yield from polygon
    elif kind == "GeometryCollection":
        for g in geometry.get("geometries", []):
            yield from polygon_rings(g)


def polygon_vertices(geometry: Geometry | None) -> Iterator[Position]:
    """The vertices of polygon_rings(geometry): a frame fitted to the polygons alone."""
    for ring in polygon_rings(geometry):
        yield from ring


class MapFrame:
    """lon/lat -> SVG pixels, equirectangular about the centre of `geometries`' vertices (as `vertices` finds
    them), padded by 6% of the larger span, which is at least `min_span` degrees."""

    def __init__(self, geometries: Iterable[Geometry | None], width: int = 760, height: int = 480, *,
                 min_span: float = 2e-5,
                 vertices: Callable[[Geometry | None], Iterable[Position]] = positions) -> None:
        xs: list[float] = []
        ys: list[float] = []
        for g in geometries:
            for x, y, *_ in vertices(g):
                xs.append(x)
                ys.append(y)
        if not xs:
            xs, ys = [0.0, 1e-6], [0.0, 1e-6]
        self.k = math.cos(math.radians((min(ys) + max(ys)) / 2))
        x0, x1, y0, y1 = min(xs) * self.k, max(xs) * self.k, min(ys), max(ys)
        pad = 0.06 * max(x1 - x0, y1 - y0, min_span)
        self.x0, self.y1 = x0 - pad, y1 + pad
        self.scale = min(width / (x1 - x0 + 2 * pad), height / (y1 - y0 + 2 * pad))
        self.width, self.height = width, height
        self.metres_per_px = 111_320.0 / self.scale

    def xy(self, x: float, y: float) -> str:
        """A position as the "x,y" of SVG path data."""
        return f"{(x * self.k - self.x0) * self.scale:.1f},{(self.y1 - y) * self.scale:.1f}"

    def shapes(self, geometry: Geometry | None, title: str, style: Style = DEFAULT_STYLE) -> list[Shape]:
        """The geometry as SVG shapes in `style`, `title` its tooltip: points as circles, lines and polygons
        as paths."""
        if not geometry:
            return []
        stroke, fill, width, radius = style
        kind, coords = geometry.get("type"), geometry.get("coordinates", [])
        if kind == "Point":
            x, y = self.xy(*coords[:2]).split(",")
            return [Shape("circle", {"cx": x, "cy": y, "r": radius or 3, "fill": fill, "stroke": stroke,
                                     "stroke-width": width}, title)]
        if kind == "MultiPoint":
            return [s for c in coords for s in self.shapes({"type": "Point", "coordinates": c}, title, style)]
        parts: list[list[Position]] = []
        if kind == "LineString":
            parts = [coords]
        elif kind in ("MultiLineString", "Polygon"):
            parts = coords
        elif kind == "MultiPolygon":
            parts = [ring for polygon in coords for ring in polygon]
        close = " Z" if kind in ("Polygon", "MultiPolygon") else ""
        d = " ".join("M" + " L".join(self.xy(*p[:2]) for p in part) + close for part in parts)
        return [Shape("path", {"d": d, "fill": fill if close else "none", "stroke": stroke, "stroke-width": width,
                               "fill-rule": "evenodd", "stroke-linecap": "round"}, title)]

    def polygon_path(self, geometry: Geometry | None) -> str:
        """The SVG path data of the geometry's polygon rings ("" when it has none)."""
        return " ".join("M" + " L".join(self.xy(*p[:2]) for p in ring) + " Z" for ring in polygon_rings(geometry))

    def scale_bar(self) -> list[Shape]:
        """A bar of a round length (1, 2 or 5 times a power of ten metres) near a quarter of the width."""
        target = self.metres_per_px * self.width / 4
        step = 10 ** math.floor(math.log10(max(target, 1e-3)))
        metres = max(s * step for s in (1, 2, 5) if s * step <= target) if target >= step else step
        px = metres / self.metres_per_px
        label = f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
        y = self.height - 12
        return [Shape("line", {"x1": 12, "y1": y, "x2": f"{12 + px:.1f}", "y2": y, "stroke": "#111",
                               "stroke-width": 2}),
                Shape("text", {"x": 12, "y": y - 5}, text=label)]

    def drawing(self, shapes: list[Shape], *, north_arrow: bool = False) -> Drawing:
        """The map: the shapes in order, then the scale bar and the north mark ("N", over an arrow if asked)."""
        north = [Shape("text", {"x": self.width - 18, "y": 22}, text="N")]
        if north_arrow:
            north.append(Shape("path", {"d": f"M{self.width - 14},26 l-5,14 l5,-4 l5,4 z"}))
        return Drawing(self.width, self.height, [*shapes, *self.scale_bar(), *north])


# -- a page's map of features, each a link to its own page -----------------------------------------------

def _parts(geometry: Geometry) -> list[tuple[str, list[list[Position]]]]:
    """(kind, parts) where kind is point, line or polygon and parts are coordinate lists."""
    kind, coords = geometry.get("type"), geometry.get("coordinates", [])
    if kind == "Point":
        return [("point", [[coords]])]
    if kind == "MultiPoint":
        return [("point", [[c]]) for c in coords]
    if kind == "LineString":
        return [("line", [coords])]
    if kind == "MultiLineString":
        return [("line", [c]) for c in coords]
    if kind == "Polygon":
        return [("polygon", coords)]
    if kind == "MultiPolygon":
        return [("polygon", c) for c in coords]
    if kind == "GeometryCollection":
        return [r for g in geometry.get("geometries", []) for r in _parts(g)]
    return []


def features_map(features: list[dict[str, Any]], width: int = 720, height: int = 480,
                 item_prefix: str = "items/") -> Drawing | None:
    """The features fitted to the drawing (lon/lat, scaled by the latitude's cosine), each a link to its page:
    `item_prefix` + id, relative to the page's own URL (a collection's items page by default; "" on a single
    item's page, which sits beside its siblings). None when no feature has a geometry."""
    shapes = [(f, _parts(f["geometry"])) for f in features if f.get("geometry")]
    points = [pt for _, parts in shapes for _, rings in parts for ring in rings for pt in ring]
    if not points:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    xmin, xmax, ymin, ymax = min(xs), max(xs), min(ys), max(ys)
    kx = math.cos(math.radians((ymin + ymax) / 2))
    span_x, span_y = max((xmax - xmin) * kx, 1e-9), max(ymax - ymin, 1e-9)
    scale = min((width - 20) / span_x, (height - 20) / span_y)

    def xy(p: Position) -> tuple[str, str]:
        return f"{10 + (p[0] - xmin) * kx * scale:.1f}", f"{height - 10 - (p[1] - ymin) * scale:.1f}"

    out = []
    for feature, parts in shapes:
        label = str(feature.get("id", ""))
        href = f"{item_prefix}{quote(label, safe='')}?f=html"
        for kind, rings in parts:
            if kind == "point":
                x, y = xy(rings[0][0])
                out.append(Shape("circle", {"cx": x, "cy": y, "r": 3, "fill": "#d1495b", "stroke": "#fff",
                                            "stroke-width": ".5"}, label, href))
            elif kind == "line":
                out.append(Shape("polyline", {"points": " ".join(",".join(xy(p)) for p in rings[0]), "fill": "none",
                                              "stroke": "#1d4e89"}, label, href))
            else:
                d = " ".join("M" + " L".join(",".join(xy(p)) for p in ring) + " Z" for ring in rings)
                out.append(Shape("path", {"d": d, "fill": "#66a182", "fill-opacity": ".45", "stroke": "#2e4057",
                                          "fill-rule": "evenodd"}, label, href))
    return Drawing(width, height, out, css_class="map", background=None)
