"""What every request's input must be before any route sees it, checked once for all routes.

A NUL character (`%00`) in a path segment or a query value cannot reach PostgreSQL (text never holds
one) nor mean anything to us: it is refused here with a 400 naming the parameter, so no route has to
remember it. (Routes are matched first, so the parameter is named as the route names it.) JSON bodies are
their routes' to read: `nul_at` names where one holds an escaped NUL (`\\u0000`); what a route lets through
PostgreSQL refuses, and services.common.errors answers that with a 400 naming the body.

And an empty query value is the parameter left out (EmptyValuesLeftOut), for every route.
"""

from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gis.errors import InvalidInput

NUL = "\x00"


def nul_at(value: Any, where: str) -> str | None:
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
    """An app-wide dependency: no NUL in the path parameters or the query."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and NUL in value:
            raise InvalidInput(name, "contains a NUL character (%00)")
    for name, value in request.query_params.multi_items():
        if NUL in name:
            raise InvalidInput("query", "a parameter name contains a NUL character (%00)")
        if NUL in value:
            raise InvalidInput(name[:60], "contains a NUL character (%00)")


# A parameter whose empty value says something (no properties at all); any other `name=` is left out.
MEANINGFUL_EMPTY = frozenset({b"properties"})


def drop_empty_values(query: bytes) -> bytes:
    """The query string without `name=` parts (empty values), but for MEANINGFUL_EMPTY ones."""
    kept = []
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if not part or (not value and unquote_to_bytes(name.replace(b"+", b" ")) not in MEANINGFUL_EMPTY):
            continue
        kept.append(part)
    return b"&".join(kept)


class EmptyValuesLeftOut:
    """ASGI middleware: an empty query value (`?datetime=`, `?f=`, as HTML forms send them) means the parameter
    was left out, for every route alike; the OpenAPI document's string parameters allow the empty string, so
    the service accepts what its document does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if query:
            # in place: the outer layers read what routing writes into this scope (the route, for logs and metrics)
            scope["query_string"] = drop_empty_values(query)
        await self.app(scope, receive, send)
