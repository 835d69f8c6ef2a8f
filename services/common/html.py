"""Server-rendered HTML for every OGC API page: templates of gis/templates/ (autoescaped, no scripts,
nothing fetched from elsewhere), filled from the JSON documents the routes build.

The items page draws its features as an inline SVG map (gis.svg.features_map).
"""

from typing import Any
from urllib.parse import quote

from gis.features.params import ItemsQuery
from gis.layers import LayerSpec
from gis.rendering import render
from gis.svg import features_map

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
        matched=collection.get("numberMatched"), offset=q.offset, nav=nav, map=features_map(features),
        features=features, names=_property_names(features), base=base)


def feature_page(spec: LayerSpec, feature: dict[str, Any]) -> str:
    links = [{**link, "href": _html_link(link)} if link["rel"] in ("version-history",) else link
             for link in feature.get("links", [])]
    fid = str(feature.get("id"))
    return html_page("ogc/feature.html", f"{spec.id} · {fid}", [
        ("collections", "/collections?f=html"), (spec.id, f"/collections/{quote(spec.id)}?f=html"),
        ("items", f"/collections/{quote(spec.id)}/items?f=html")],
        map=features_map([feature], 480, 320, item_prefix=""), properties=feature.get("properties", {}), links=links)


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
