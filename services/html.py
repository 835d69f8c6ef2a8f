"""Server-rendered HTML for every OGC API page: plain markup, no scripts, nothing fetched from elsewhere.

The items page draws its features as an inline SVG map (lon/lat, scaled by the latitude's cosine).
"""

import math
from html import escape
from typing import Any
from urllib.parse import quote

from gis.features.params import ItemsQuery
from gis.layers import LayerSpec

_STYLE = """
body{font-family:system-ui,"Noto Sans CJK SC",sans-serif;margin:0;color:#222}
header{background:#1d4e89;color:#fff;padding:.6em 1.2em}header a{color:#fff}
main{padding:1em 1.2em;max-width:72em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top;font-size:.9em}
th{background:#f2f4f7}code{background:#f2f4f7;padding:0 .2em}
svg.map{border:1px solid #ccc;background:#f8faf8;max-width:100%;height:auto}
nav.links a{margin-right:1em}
"""


def html_page(title: str, body: str, crumbs: list[tuple[str, str]] | None = None) -> str:
    trail = " › ".join(f'<a href="{escape(href)}">{escape(text)}</a>' for text, href in (crumbs or []))
    return (
        "<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width\"><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><header><a href=\"/?f=html\">时空信息云平台</a>"
        f"{' › ' + trail if trail else ''}</header><main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )


def html_links(links: list[dict[str, str]]) -> str:
    items = []
    for link in links:
        label = link.get("title") or link["rel"]
        items.append(f'<a href="{escape(link["href"])}">{escape(label)}</a> '
                     f'<small>({escape(link["rel"])}, {escape(link.get("type", ""))})</small>')
    return "<nav class=\"links\">" + "<br>".join(items) + "</nav>"


def _html_link(link: dict[str, str]) -> str:
    """A link's href, in HTML where it points to this service's JSON."""
    href = link["href"]
    if "f=" in href:
        return href.replace("f=json", "f=html")
    return href + ("&" if "?" in href else "?") + "f=html"


def landing_page(document: dict[str, Any]) -> str:
    body = f"<p>{escape(document['description'])}</p>" + html_links(document["links"])
    body += '<p><a href="/collections?f=html">Browse the layers / 浏览图层</a></p>'
    return html_page(document["title"], body)


def conformance_page(document: dict[str, Any]) -> str:
    rows = "".join(f"<li><code>{escape(uri)}</code></li>" for uri in document["conformsTo"])
    return html_page("Conformance", f"<ul>{rows}</ul>", [("conformance", "/conformance?f=html")])


def collections_page(document: dict[str, Any]) -> str:
    rows = []
    for c in document["collections"]:
        count = c.get("numberOfFeatures")
        rows.append(
            f'<tr><td><a href="/collections/{quote(c["id"])}?f=html">{escape(c["id"])}</a></td>'
            f'<td>{escape(c["titles"]["zh"])}</td><td>{escape(c["titles"]["en"])}</td>'
            f'<td>{escape(c.get("geometryType", c.get("dataType", "")))}</td><td>{"" if count is None else count}</td>'
            f'<td><a href="/collections/{quote(c["id"])}/items?f=html">items</a></td></tr>')
    table = ("<table><tr><th>id</th><th>名称</th><th>title</th><th>geometry</th><th>features</th><th></th></tr>"
             + "".join(rows) + "</table>")
    return html_page("Collections / 图层", table, [("collections", "/collections?f=html")])


def collection_page(c: dict[str, Any]) -> str:
    extent = c.get("extent", {})
    spatial = extent.get("spatial", {}).get("bbox", [[]])[0]
    temporal = extent.get("temporal", {}).get("interval", [[None, None]])[0]
    rows = [
        ("id", escape(c["id"])), ("description", escape(c["description"])),
        ("keywords", escape(", ".join(c["keywords"]))), ("geometry", escape(c["geometryType"])),
        ("features", escape(str(c.get("numberOfFeatures", "")))),
        ("spatial extent (CRS84)", escape(", ".join(f"{v:.5f}" for v in spatial))),
        ("temporal extent", escape(" / ".join(v or ".." for v in temporal))),
        ("temporal", escape(str(c["temporal"]))), ("department", escape(c["department"])),
        ("access", escape(c["access"])), ("storage CRS", escape(c["storageCrs"])),
        ("CRS", "<br>".join(escape(x) for x in c["crs"])),
    ]
    table = "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    body = (table + f'<p><a href="/collections/{quote(c["id"])}/items?f=html">Features / 要素</a> · '
            f'<a href="/collections/{quote(c["id"])}/queryables?f=html">Queryables</a></p>' + html_links(c["links"]))
    return html_page(c["title"], body, [("collections", "/collections?f=html"),
                                    (c["id"], f"/collections/{quote(c['id'])}?f=html")])


def _schema_type(p: dict[str, Any]) -> str:
    kind = p.get("type", p.get("format", ""))
    return f"{kind} ({p['format']})" if "format" in p and "type" in p else kind


def queryables_page(spec: LayerSpec, schema: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td><code>{escape(name)}</code></td><td>{escape(p.get('title', ''))}</td>"
        f"<td>{escape(_schema_type(p))}</td><td>{escape(', '.join(map(str, p.get('enum', []))))}</td></tr>"
        for name, p in schema["properties"].items())
    table = f"<table><tr><th>name</th><th>title</th><th>type</th><th>values</th></tr>{rows}</table>"
    return html_page(f"Queryables · {spec.id}", table, [("collections", "/collections?f=html"),
                                                   (spec.id, f"/collections/{quote(spec.id)}?f=html")])


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


def svg_map(features: list[dict[str, Any]], width: int = 720, height: int = 480, item_prefix: str = "items/") -> str:
    """An SVG of the features, each a link to its page: `item_prefix` + id, relative to the page's own URL
    (a collection's items page by default; "" on a single item's page, which sits beside its siblings)."""
    shapes = [(f, _rings(f["geometry"])) for f in features if f.get("geometry")]
    points = [pt for _, rings in shapes for _, parts in rings for part in parts for pt in part]
    if not points:
        return "<p><em>No geometries on this page.</em></p>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    xmin, xmax, ymin, ymax = min(xs), max(xs), min(ys), max(ys)
    kx = math.cos(math.radians((ymin + ymax) / 2))
    span_x, span_y = max((xmax - xmin) * kx, 1e-9), max(ymax - ymin, 1e-9)
    scale = min((width - 20) / span_x, (height - 20) / span_y)

    def xy(p: list[float]) -> str:
        return f"{10 + (p[0] - xmin) * kx * scale:.1f},{height - 10 - (p[1] - ymin) * scale:.1f}"

    out = []
    for feature, rings in shapes:
        label = escape(str(feature.get("id", "")))
        href = escape(quote(str(feature.get("id", "")), safe=""))
        for kind, parts in rings:
            if kind == "point":
                x, y = xy(parts[0][0]).split(",")
                shape = f'<circle cx="{x}" cy="{y}" r="3" fill="#d1495b" stroke="#fff" stroke-width=".5"/>'
            elif kind == "line":
                shape = f'<polyline points="{" ".join(xy(p) for p in parts[0])}" fill="none" stroke="#1d4e89"/>'
            else:
                d = " ".join("M" + " L".join(xy(p) for p in ring) + " Z" for ring in parts)
                shape = f'<path d="{d}" fill="#66a182" fill-opacity=".45" stroke="#2e4057" fill-rule="evenodd"/>'
            out.append(f'<a href="{escape(item_prefix)}{href}?f=html"><title>{label}</title>{shape}</a>')
    return (f'<svg class="map" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{"".join(out)}</svg>')


def _value(value: Any) -> str:
    return "" if value is None else escape(str(value))


def _feature_table(features: list[dict[str, Any]], base: str) -> str:
    names: list[str] = []
    for f in features:
        names.extend(n for n in f.get("properties", {}) if n not in names)
    head = "<tr><th>id</th>" + "".join(f"<th>{escape(n)}</th>" for n in names) + "</tr>"
    rows = "".join(
        f'<tr><td><a href="{escape(base)}/{escape(quote(str(f.get("id")), safe=""))}?f=html">{_value(f.get("id"))}'
        "</a></td>" + "".join(f"<td>{_value(f['properties'].get(n))}</td>" for n in names) + "</tr>"
        for f in features)
    return f"<table>{head}{rows}</table>"


def items_page(spec: LayerSpec, collection: dict[str, Any], q: ItemsQuery) -> str:
    features = collection.get("features", [])
    base = f"/collections/{quote(spec.id)}/items"
    nav = []
    for link in collection.get("links", []):
        if link["rel"] == "next":
            nav.append(f'<a href="{escape(link["href"])}">next page ›</a>')
        elif link["rel"] == "alternate":
            nav.append(f'<a href="{escape(link["href"])}">GeoJSON</a>')
    matched = collection.get("numberMatched")
    summary = (f"<p>{collection.get('numberReturned', 0)} features"
               f"{f' of {matched}' if matched is not None else ''}"
               f"{f', from {q.offset}' if q.offset else ''}. {' · '.join(nav)}</p>")
    body = summary + svg_map(features) + _feature_table(features, base)
    return html_page(f"{spec.title.zh} · {spec.title.en}", body, [
        ("collections", "/collections?f=html"), (spec.id, f"/collections/{quote(spec.id)}?f=html"),
        ("items", f"{base}?f=html")])


def feature_page(spec: LayerSpec, feature: dict[str, Any]) -> str:
    props = feature.get("properties", {})
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{_value(v)}</td></tr>" for k, v in props.items())
    links = [{**link, "href": _html_link(link)} if link["rel"] in ("version-history",) else link
             for link in feature.get("links", [])]
    body = svg_map([feature], 480, 320, item_prefix="") + f"<table>{rows}</table>" + html_links(links)
    fid = str(feature.get("id"))
    return html_page(f"{spec.id} · {fid}", body, [
        ("collections", "/collections?f=html"), (spec.id, f"/collections/{quote(spec.id)}?f=html"),
        ("items", f"/collections/{quote(spec.id)}/items?f=html")])


def history_page(spec: LayerSpec, fid: str, collection: dict[str, Any]) -> str:
    features = collection.get("features", [])
    base = f"/collections/{quote(spec.id)}/items"
    body = f"<p>{len(features)} version(s), oldest first.</p>" + _feature_table(features, base)
    return html_page(f"{spec.id} · {fid} · history", body, [
        ("collections", "/collections?f=html"), (spec.id, f"/collections/{quote(spec.id)}?f=html"),
        (fid, f"{base}/{quote(fid, safe='')}?f=html")])


def api_page(document: dict[str, Any]) -> str:
    parameters = document.get("components", {}).get("parameters", {})
    sections = []
    for path, operations in document.get("paths", {}).items():
        for method, op in operations.items():
            names = []
            for p in op.get("parameters", []):
                ref = p.get("$ref", "")
                param = parameters.get(ref.rsplit("/", 1)[-1]) if ref else p
                if param:
                    names.append(f"<code>{escape(param['name'])}</code>")
            sections.append(f"<tr><td>{escape(method.upper())}</td><td><code>{escape(path)}</code></td>"
                            f"<td>{escape(op.get('summary', ''))}</td><td>{' '.join(names)}</td></tr>")
    params = "".join(f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p.get('description', ''))}</td></tr>"
                     for p in parameters.values())
    body = ('<p>The machine-readable definition: <a href="/openapi?f=json">/openapi</a> (OpenAPI 3.0).</p>'
            "<h2>Operations</h2><table><tr><th></th><th>path</th><th>summary</th><th>parameters</th></tr>"
            + "".join(sections) + "</table><h2>Parameters</h2><table>" + params + "</table>")
    return html_page("API", body)
