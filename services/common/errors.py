"""One table from errors to HTTP: OGC exception JSON ({code, description}) with the right status; for a
browser (f=html, or text/html preferred) the same as a page from an autoescaped template.

Nothing else reaches a client: an error nobody foresaw is a 500 with a fixed body (the server log has the
trace), a query PostgreSQL cancelled at the statement timeout a 503 saying so, a database that cannot be
reached a 503 with Retry-After.
"""

import logging
import re
from collections.abc import Mapping
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from psycopg_pool import PoolTimeout, TooManyRequests
from starlette.exceptions import HTTPException as StarletteHTTPException

from gis.analysis.proposal import ProposalTooLarge
from gis.db.pool import DatabaseUnavailable
from gis.edits.feature import InvalidFeature
from gis.edits.store import (
    EditBusy,
    EditForbidden,
    FeatureExists,
    NotEditable,
    PreconditionFailed,
    PreconditionRequired,
)
from gis.errors import GisError, InvalidInput, NotFound, SourceError
from gis.rendering import render
from gis.sensing.readings import InvalidReadings, WriteBusy
from services.common.headers import SECURITY_HEADERS
from services.common.negotiation import accepts_html
from services.common.state import app_state

DATABASE_RETRY_SECONDS = 5
# A busy service (every pooled connection in use, its queue full or waited on too long): come back soon.
BUSY_RETRY_SECONDS = 1


class RateLimited(GisError):
    """The caller has used up its requests for now; `headers` carries Retry-After."""

    def __init__(self, retry_after: int, rate: float, burst: int) -> None:
        super().__init__(f"too many requests: at most {rate:g} per second (bursts of {burst}) per caller; "
                         f"retry after {retry_after} s")
        self.headers = {"Retry-After": str(retry_after)}


class BodyTooLarge(GisError):
    """A request body over the configured cap."""

    parameter = "body"

    def __init__(self, limit: int, setting: str, declared: int | None = None) -> None:
        size = f"{declared:,} bytes" if declared is not None else f"more than {limit:,} bytes"
        super().__init__(f"body: the request body is {size}; this endpoint takes at most {limit:,} ({setting})")
        self.details = {"limit": limit}

    def response(self) -> JSONResponse:
        return JSONResponse({**exception_body("PayloadTooLarge", str(self), self.parameter), **self.details}, 413)


STATUS: list[tuple[type[Exception], int, str]] = [
    (NotFound, 404, "NotFound"),
    (BodyTooLarge, 413, "PayloadTooLarge"),
    (ProposalTooLarge, 413, "PayloadTooLarge"),
    (InvalidInput, 400, "InvalidParameterValue"),
    (InvalidReadings, 400, "InvalidParameterValue"),
    (WriteBusy, 503, "ServiceUnavailable"),
    (InvalidFeature, 400, "InvalidParameterValue"),
    (EditForbidden, 403, "Forbidden"),
    (NotEditable, 405, "MethodNotAllowed"),
    (FeatureExists, 409, "Conflict"),
    (PreconditionFailed, 412, "PreconditionFailed"),
    (PreconditionRequired, 428, "PreconditionRequired"),
    (EditBusy, 503, "ServiceUnavailable"),
    (SourceError, 400, "InvalidInput"),
    (RateLimited, 429, "TooManyRequests"),
    (GisError, 500, "ServerError"),
]


def exception_body(code: str, description: str, parameter: str | None = None) -> dict[str, str]:
    body = {"code": code, "description": description}
    if parameter:
        body["parameter"] = parameter
    return body


def _statement_timeout_ms(request: Request) -> int:
    return int(app_state(request).guard.settings.statement_timeout_ms)


def _wants_html(request: Request) -> bool:
    """A browser's request (f=html, or text/html preferred): it gets the error as a page."""
    return request.query_params.get("f") == "html" or accepts_html(request.headers.get("accept", ""))


def error_response(request: Request, body: dict[str, Any], status: int,
                   headers: Mapping[str, str] | None = None) -> Response:
    """The exception as JSON, or for a browser as a page (gis/templates/error.html, autoescaped: whatever of
    the request the description echoes is shown as text)."""
    if _wants_html(request):
        page = render("error.html", title=f"{status} · {body['code']}", crumbs=[], status=status, error=body)
        return HTMLResponse(page, status, headers=dict(headers or {}))
    return JSONResponse(body, status, headers=dict(headers or {}))


_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document gives the request's path (GET /jobs/{id} and DELETE /jobs/{id} are two
    routes, and Starlette's 405 names the first one's only), with HEAD where GET is."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part)
                          for part in re.split(r"({[^}]+})", template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations if m in _HTTP_METHODS}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    async def gis_error(request: Request, exc: Exception) -> Response:
        for kind, status, code in STATUS:
            if isinstance(exc, kind):
                body: dict[str, Any] = exception_body(code, str(exc), getattr(exc, "parameter", None))
                body.update(getattr(exc, "details", None) or {})  # e.g. each bad reading of a refused batch
                return error_response(request, body, status, getattr(exc, "headers", None))
        return error_response(request, exception_body("ServerError", "internal error"), 500)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = "NotFound" if exc.status_code == 404 else "HTTPError"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names the methods of the first route on the path only
            headers["Allow"] = ", ".join(allowed_methods(request))
        return error_response(request, exception_body(code, str(exc.detail)), exc.status_code, headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": ("request",), "msg": "invalid"}
        parameter = str((first.get("loc") or ("request",))[-1])
        return error_response(
            request, exception_body("InvalidParameterValue", f"{parameter}: {first['msg']}", parameter), 400)

    async def query_cancelled(request: Request, _exc: Exception) -> Response:
        limit = _statement_timeout_ms(request)
        took = f"longer than {limit / 1000:g} s" if limit else "too long"
        return error_response(request, exception_body(
            "QueryTimeout", f"the query took {took} and was cancelled; ask for less (a smaller bbox or limit, a "
                            "simpler filter) or narrow it in time"), 503)

    async def database_unavailable(request: Request, exc: Exception) -> Response:
        # the cause in one line, never a traceback: the operator tells an outage from an exhausted pool
        cause = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        logging.getLogger(__name__).warning("503 %s %s: %s: %s", request.method, request.url.path,
                                            exc.__class__.__name__, cause)
        return error_response(request, exception_body("ServiceUnavailable", "the database cannot be reached just now"),
                              503, {"Retry-After": str(DATABASE_RETRY_SECONDS)})

    async def busy(request: Request, exc: Exception) -> Response:
        # Load, not an outage (an outage is DatabaseUnavailable, a PoolTimeout too, handled above): the request
        # was shed or waited its bound in the queue for a connection (gis.db.pool).
        logging.getLogger(__name__).warning("503 busy %s %s: %s", request.method, request.url.path,
                                            exc.__class__.__name__)
        return error_response(request, exception_body(
            "ServiceBusy", "the service is busy: every database connection is in use and the queue for one is full "
                           "or too slow; try again after Retry-After seconds"), 503,
                              {"Retry-After": str(BUSY_RETRY_SECONDS)})

    async def bad_value(request: Request, exc: Exception) -> Response:
        # A value PostgreSQL refuses (out of range, malformed for its type, a NUL) or input nested past
        # Python's recursion limit: the caller's input, whichever route let it through. Its text (SQL) stays
        # in the log; the answer names where the input came from.
        parameter = "body" if request.method in ("POST", "PUT", "PATCH") else "query"
        problem = ("is nested too deeply" if isinstance(exc, RecursionError)
                   else "holds a value out of range or not of its type")
        return error_response(request, exception_body("InvalidParameterValue", f"{parameter}: {problem}", parameter),
                              400)

    async def unexpected(request: Request, _exc: Exception) -> Response:
        # Never a stack trace to the client; the server log has it. This answer leaves from outside every
        # middleware (Starlette's outermost error layer), so it carries the security headers itself.
        return error_response(request, exception_body("ServerError", "internal error"), 500, SECURITY_HEADERS)

    app.add_exception_handler(GisError, gis_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(psycopg.errors.QueryCanceled, query_cancelled)
    app.add_exception_handler(psycopg.OperationalError, database_unavailable)
    app.add_exception_handler(DatabaseUnavailable, database_unavailable)
    app.add_exception_handler(PoolTimeout, busy)
    app.add_exception_handler(TooManyRequests, busy)
    app.add_exception_handler(psycopg.DataError, bad_value)
    app.add_exception_handler(RecursionError, bad_value)
    app.add_exception_handler(Exception, unexpected)


# -- the OpenAPI document: what every operation may answer besides its own success ----------------------

EXCEPTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code"],
    "properties": {
        "code": {"type": "string", "description": "OGC exception code, e.g. InvalidParameterValue, NotFound"},
        "description": {"type": "string", "description": "What went wrong, for a person"},
        "parameter": {"type": "string", "description": "The request parameter at fault, where there is one"},
    },
}
_ERRORS = {
    "400": "Bad input: `parameter` names the parameter, `description` the problem",
    "401": "A credential was sent and does not check out",
    "404": "No such resource (or one the caller may not see)",
    "413": "The request body is over the cap (`limit`, in bytes)",
    "429": "Too many requests from this caller; Retry-After says when to come back",
    "500": "An internal error (no details are given; the server log has them)",
    "503": "A query took longer than the statement timeout and was cancelled, or the database is unreachable",
}


NO_NUL = "^[^\\u0000]*$"  # a string without NUL: what the service takes (services.common.input_guard)


def _strings_without_nul(node: Any) -> None:
    """Every free text the document takes (no enum, no pattern of its own, not a file's bytes) says a NUL is not
    part of it: the service refuses one anywhere, so a string with a NUL is not valid input by the document."""
    if isinstance(node, dict):
        if (node.get("type") == "string" and not {"enum", "pattern", "const"} & node.keys()
                and node.get("format") != "binary"):
            node["pattern"] = NO_NUL
        for key, value in node.items():
            if key not in ("responses", "example", "examples", "default"):
                _strings_without_nul(value)
    elif isinstance(node, list):
        for value in node:
            _strings_without_nul(value)


def _empty_means_left_out(document: dict[str, Any]) -> None:
    """Every optional query parameter may be sent empty (`?f=`), and is then taken as left out
    (services.common.input_guard.EmptyValuesLeftOut): the document says so with allowEmptyValue."""
    shared = document.get("components", {}).get("parameters", {}).values()
    inline = [p for operations in document.get("paths", {}).values() for operation in operations.values()
              if isinstance(operation, dict) for p in operation.get("parameters", [])]
    for parameter in [*shared, *inline]:
        if parameter.get("in") == "query" and not parameter.get("required"):
            parameter["allowEmptyValue"] = True


def document_errors(document: dict[str, Any]) -> None:
    """Adds the exception schema and the error answers every operation can give to an OpenAPI document, and
    marks its strings as ones without NUL."""
    _empty_means_left_out(document)
    _strings_without_nul(document.get("paths", {}))
    _strings_without_nul(document.get("components", {}).get("parameters", {}))
    _strings_without_nul(document.get("components", {}).get("schemas", {}))
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})["Exception"] = EXCEPTION_SCHEMA
    responses = components.setdefault("responses", {})
    for status, description in _ERRORS.items():
        responses[f"Error{status}"] = {"description": description, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Exception"}},
            "text/html": {}}}  # for browsers: f=html, or text/html preferred in Accept
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status in _ERRORS:
                operation["responses"].setdefault(status, {"$ref": f"#/components/responses/Error{status}"})
            operation["responses"].pop("422", None)  # FastAPI's validation answer: ours is a 400
