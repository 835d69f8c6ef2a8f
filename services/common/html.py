"""Server-rendered HTML for every OGC API page: templates of gis/templates/ (autoescaped, no scripts,
nothing fetched from elsewhere), filled from the JSON documents the routes build.

The items page draws its features as an inline SVG map (lon/lat, scaled by the latitude's cosine).
"""

import math
from typing import Any
from urllib.parse import quote

from gis.features.params import ItemsQuery
from gis.layers import LayerSpec
from gis.rendering import Drawing, Shape, render

Crumbs = list[tuple[str, str]]


def html_page(template: str, title: str, crumbs: Crumbs | None = None, **context: Any) -> str:
    """A page of the service: `template` (extending base.html) with the title and breadcrumb trail."""
    return render(template, title=title, crumbs=crumbs or [], **context)


def _html_link(link: dict[str, str]) -> str:
    """A link's href, in HTML where it points to this service's JSON."""
    href = link["href"]
    if "f=" in href:
        return href.replace("f=json", "f=html")
    return href + ("&" if "?" in href else "?") + "f=html"


def landing_page(document: dict[str, Any]) -> str:
    return html_page("ogc/landing.html", document["title"], document=document)


def conformance_page(document: dict[str, Any]) -> str:
    return html_page("ogc/conformance.html", "Conformance", [("conformance", "/conformance?f=html")],
                     document=document)


def collections_page(document: dict[str, Any]) -> str:
    return html_page("ogc/collections.html", "Collections / 图层", [("collections", "/collections?f=html")],
                     document=document)


def collection_page(c: dict[str, Any]) -> str:
    extent = c.get("extent", {})
    spatial = extent.get("spatial", {}).get("bbox", [[]])[0]
    temporal = extent.get("temporal", {}).get("interval", [[None, None]])[0]
    rows = [
        ("id", c["id"]), ("description", c["description"]), ("keywords", ", ".join(c["keywords"])),
        ("geometry", c["geometryType"]), ("features", str(c.get("numberOfFeatures", ""))),
        ("spatial extent (CRS84)", ", ".join(f"{v:.5f}" for v in spatial)),
        ("temporal extent", " / ".join(v or ".." for v in temporal)),
        ("temporal", str(c["temporal"])), ("department", c["department"]), ("access", c["access"]),
        ("storage CRS", c["storageCrs"]), ("CRS", list(c["crs"])),
    ]
    return html_page("ogc/collection.html", c["title"], [("collections", "/collections?f=html"),
                                                        (c["id"], f"/collections/{quote(c['id'])}?f=html")],
                     c=c, rows=rows)


def _schema_type(p: dict[str, Any]) -> str:
    kind = p.get("type", p.get("format", ""))
    return f"{kind} ({p['format']})" if "format" in p and "type" in p else kind


def queryables_page(spec: LayerSpec, schema: dict[str, Any]) -> str:
    rows = [(name, _schema_type(p), p) for name, p in schema["properties"].items()]
    return html_page("ogc/queryables.html", f"Queryables · {spec.id}",
                     [("collections", "/collections?f=html"), (spec.id, f"/collections/{quote(spec.id)}?f=html")],
                     rows=rows)


# -- the map ---------------------------------------------------------------------------------------------

def _rings(geometry: dict[str, Any]) -> list[tuple[str, list[list[list[float]]]]]:
    """(kind, parts) where kind is point, line or polygon and parts are coordinate lists."""
    kind, coords = geometry.get("type"), geometry.get("coordinates")
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
        return [r for g in geometry.get("geometries", []) for r in _rings(g)]
    return []


def svg_map(features: list[dict[str, Any]], width: int = 720, height: int = 480,
            item_prefix: str = "items/") -> Drawing | None:
    """An SVG of the features, each a link to its page: `item_prefix` + id, relative to the page's own URL
    (a collection's items page by default; "" on a single item's page, which sits beside its siblings).
    None when no feature has a geometry."""
    shapes = [(f, _rings(f["geometry"])) for f in features if f.get("geometry")]
    points = [pt for _, rings in shapes for _, parts in rings for part in parts for pt in part]
    if not points:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    xmin, xmax, ymin, ymax = min(xs), max(xs), min(ys), max(ys)
    kx = math.cos(math.radians((ymin + ymax) / 2))
    span_x, span_y = max((xmax - xmin) * kx, 1e-9), max(ymax - ymin, 1e-9)
    scale = min((width - 20) / span_x, (height - 20) / span_y)

    def xy(p: list[float]) -> tuple[str, str]:
        return f"{10 + (p[0] - xmin) * kx * scale:.1f}", f"{height - 10 - (p[1] - ymin) * scale:.1f}"

    out = []
    for feature, rings in shapes:
        label = str(feature.get("id", ""))
        href = f"{item_prefix}{quote(label, safe='')}?f=html"
        for kind, parts in rings:
            if kind == "point":
                x, y = xy(parts[0][0])
                out.append(Shape("circle", {"cx": x, "cy": y, "r": 3, "fill": "#d1495b", "stroke": "#fff",
                                            "stroke-width": ".5"}, label, href))
            elif kind == "line":
                out.append(Shape("polyline", {"points": " ".join(",".join(xy(p)) for p in parts[0]), "fill": "none",
                                              "stroke": "#1d4e89"}, label, href))
            else:
                d = " ".join("M" + " L".join(",".join(xy(p)) for p in ring) + " Z" for ring in parts)
                out.append(Shape("path", {"d": d, "fill": "#66a182", "fill-opacity": ".45", "stroke": "#2e4057",
                                          "fill-rule": "evenodd"}, label, href))
    return Drawing(width, height, out, css_class="map", background=None)


def _property_names(features: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for f in features:
        names.extend(n for n in f.get("properties", {}) if n not in names)
    return names


def items_page(spec: LayerSpec, collection: dict[str, Any], q: ItemsQuery) -> str:
    features = collection.get("features", [])
    base = f"/collections/{quote(spec.id)}/items"
    nav = []
    for link in collection.get("links", []):
        if link["rel"] == "next":
            nav.append(("next page ›", link["href"]))
        elif link["rel"] == "alternate":
            nav.append(("GeoJSON", link["href"]))
    return html_page("ogc/items.html", f"{spec.title.zh} · {spec.title.en}", [
        ("collections", "/collections?f=html"), (spec.id, f"/collections/{quote(spec.id)}?f=html"),
        ("items", f"{base}?f=html")], returned=collection.get("numberReturned", 0),
        matched=collection.get("numberMatched"), offset=q.offset, nav=nav, map=svg_map(features),
        features=features, names=_property_names(features), base=base)


def feature_page(spec: LayerSpec, feature: dict[str, Any]) -> str:
    links = [{**link, "href": _html_link(link)} if link["rel"] in ("version-history",) else link
             for link in feature.get("links", [])]
    fid = str(feature.get("id"))
    return html_page("ogc/feature.html", f"{spec.id} · {fid}", [
        ("collections", "/collections?f=html"), (spec.id, f"/collections/{quote(spec.id)}?f=html"),
        ("items", f"/collections/{quote(spec.id)}/items?f=html")],
        map=svg_map([feature], 480, 320, item_prefix=""), properties=feature.get("properties", {}), links=links)


def history_page(spec: LayerSpec, fid: str, collection: dict[str, Any]) -> str:
    features = collection.get("features", [])
    base = f"/collections/{quote(spec.id)}/items"
    return html_page("ogc/history.html", f"{spec.id} · {fid} · history", [
        ("collections", "/collections?f=html"), (spec.id, f"/collections/{quote(spec.id)}?f=html"),
        (fid, f"{base}/{quote(fid, safe='')}?f=html")], features=features, names=_property_names(features), base=base)


def api_page(document: dict[str, Any]) -> str:
    parameters = document.get("components", {}).get("parameters", {})
    operations = []
    for path, methods in document.get("paths", {}).items():
        for method, op in methods.items():
            names = []
            for p in op.get("parameters", []):
                ref = p.get("$ref", "")
                param = parameters.get(ref.rsplit("/", 1)[-1]) if ref else p
                if param:
                    names.append(param["name"])
            operations.append((method, path, op.get("summary", ""), names))
    return html_page("ogc/api.html", "API", operations=operations, parameters=list(parameters.values()))
