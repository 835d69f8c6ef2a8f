"""What every request's input must be before any route sees it, checked once for all routes.

A NUL character (`%00`) in a path segment or a query value cannot reach PostgreSQL (text never holds
one) nor mean anything to us: it is refused here with a 400 naming the parameter, so no route has to
remember it. The same for a JSON body holding an escaped NUL (`\\u0000`) in any string: refused naming
the place in the body. (Routes are matched first, so the parameter is named as the route names it.)
"""

from typing import Any

import orjson
from fastapi import Request

from services.errors import InvalidParameter
from services.ogc import DOCUMENT_NAMES

NUL = "\x00"
_ESCAPED_NUL = b"\\u0000"
_JSON_TYPES = ("application/json", "application/geo+json", "application/merge-patch+json")


def _nul_at(value: Any, where: str) -> str | None:
    """The JSON path of the first string (or key) holding a NUL, or None (iterative: any depth)."""
    stack = [(value, where)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if NUL in node:
                return path
            continue
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, item in items:
            if isinstance(key, str) and NUL in key:
                return path
            stack.append((item, f"{path}.{key[:40]}" if isinstance(key, str) else f"{path}[{key}]"))
    return None


async def check_request(request: Request) -> None:
    """An app-wide dependency: no NUL in the path parameters, the query or a JSON body."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and NUL in value:
            raise InvalidParameter(DOCUMENT_NAMES.get(name, name), "contains a NUL character (%00)")
    for name, value in request.query_params.multi_items():
        if NUL in name:
            raise InvalidParameter("query", "a parameter name contains a NUL character (%00)")
        if NUL in value:
            raise InvalidParameter(name[:60], "contains a NUL character (%00)")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method in ("POST", "PUT", "PATCH") and content_type in _JSON_TYPES:
        body = await request.body()  # kept by Starlette: the route reads the same bytes again
        if _ESCAPED_NUL in body:  # cheap test first; the walk only names where it is
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                return  # the route says what is wrong with it
            where = _nul_at(parsed, "body")
            if where is not None:
                raise InvalidParameter(where, "contains a NUL character (\\u0000)")
