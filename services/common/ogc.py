"""What every OGC API route shares: the parameter check, format negotiation, links and responses."""

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Request
from fastapi.responses import Response

from gis.errors import InvalidInput
from services.common.negotiation import accepts_html

GEOJSON = "application/geo+json"
JSON = "application/json"
HTML = "text/html; charset=utf-8"
OPENAPI = "application/vnd.oai.openapi+json;version=3.0"
SCHEMA_JSON = "application/schema+json"

CREDENTIAL = "api_key"  # QGIS 3.22 users put their key in the URL; declared in the OpenAPI, never refused
FORMATS = {"json": False, "geojson": False, "html": True}


def query_params(request: Request, allowed: Iterable[str]) -> dict[str, str]:
    """Each known parameter once; an unknown one is a 400 (OGC API Features Part 1, /req/core/query-param-unknown).
    Routes pass their declaration's names (services.common.parameters.Declaration.check).

    The credential parameter is always accepted and may repeat (clients re-append it to `next` links).
    """
    allowed_set = allowed if isinstance(allowed, frozenset | set) else frozenset(allowed)
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name == CREDENTIAL:
            continue
        if name not in allowed_set:
            known = ", ".join(sorted(set(allowed_set) - {CREDENTIAL}))
            raise InvalidInput(name[:60], f"unknown parameter; this endpoint takes {known}")
        if "\x00" in value:
            raise InvalidInput(name, "contains a NUL character")
        if name in found and found[name] != value:
            raise InvalidInput(name, "given more than once")
        found[name] = value
    return found


def wants_html(request: Request, params: dict[str, str]) -> bool:
    fmt = params.get("f")
    if fmt is not None:
        if fmt not in FORMATS:
            raise InvalidInput("f", f"'{fmt[:20]}' is not a format here; use json or html")
        return FORMATS[fmt]
    return accepts_html(request.headers.get("accept", ""))


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def credential_suffix(request: Request) -> list[tuple[str, str]]:
    """The caller's credential parameter, carried into the links we hand back (once)."""
    value = request.query_params.get(CREDENTIAL)
    return [(CREDENTIAL, value)] if value is not None else []


def url(request: Request, path: str, params: Iterable[tuple[str, str]] = ()) -> str:
    items = [*params, *credential_suffix(request)]
    query = f"?{urlencode(items)}" if items else ""
    return f"{base_url(request)}{path}{query}"


def link(href: str, rel: str, media_type: str, title: str | None = None) -> dict[str, str]:
    found = {"href": href, "rel": rel, "type": media_type}
    if title:
        found["title"] = title
    return found


def self_links(request: Request, path: str, json_type: str = JSON, html: bool = False,
               params: Iterable[tuple[str, str]] = ()) -> list[dict[str, str]]:
    """self and its alternate, in the representation being returned."""
    base = [p for p in params if p[0] != "f"]
    as_json = link(url(request, path, [*base, ("f", "json")]), "self" if not html else "alternate", json_type,
                   "this document as JSON")
    as_html = link(url(request, path, [*base, ("f", "html")]), "self" if html else "alternate", "text/html",
                   "this document as HTML")
    return [as_html, as_json] if html else [as_json, as_html]


def json_response(body: object, media_type: str = JSON, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), media_type=media_type, headers=headers)


def html_response(text: str) -> Response:
    return Response(text.encode("utf-8"), media_type=HTML)


def document_response(document: dict[str, Any], as_html: bool, page: Callable[[dict[str, Any]], str],
                      media_type: str = JSON) -> Response:
    """A document as the HTML page that shows it, or as its JSON: every OGC document route ends this way."""
    return html_response(page(document)) if as_html else json_response(document, media_type)
