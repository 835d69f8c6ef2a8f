"""One table from errors to HTTP: OGC exception JSON ({code, description}) with the right status.

Nothing else reaches a client: an error nobody foresaw is a 500 with a fixed body (the server log has the
trace), a query PostgreSQL cancelled at the statement timeout a 503 saying so, a database that cannot be
reached a 503 with Retry-After.
"""

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from gis.analysis.proposal import InvalidProposal, ProposalTooLarge
from gis.edits.feature import InvalidFeature
from gis.edits.store import (
    EditBusy,
    EditForbidden,
    FeatureExists,
    NotEditable,
    PreconditionFailed,
    PreconditionRequired,
)
from gis.errors import GisError, NotFound, SourceError
from gis.features.errors import InvalidQuery
from gis.sensing.readings import InvalidReadings, WriteBusy
from services.headers import SECURITY_HEADERS

DATABASE_RETRY_SECONDS = 5


class InvalidParameter(GisError):
    """A request parameter that cannot be understood; the message names the parameter."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter


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
    (InvalidParameter, 400, "InvalidParameterValue"),
    (InvalidQuery, 400, "InvalidParameterValue"),
    (NotFound, 404, "NotFound"),
    (BodyTooLarge, 413, "PayloadTooLarge"),
    (ProposalTooLarge, 413, "PayloadTooLarge"),
    (InvalidProposal, 400, "InvalidParameterValue"),
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
    guard = getattr(request.app.state, "guard", None)
    return int(guard.settings.statement_timeout_ms) if guard is not None else 0


def install_error_handlers(app: FastAPI) -> None:
    async def gis_error(_request: Request, exc: Exception) -> JSONResponse:
        for kind, status, code in STATUS:
            if isinstance(exc, kind):
                body: dict[str, Any] = exception_body(code, str(exc), getattr(exc, "parameter", None))
                body.update(getattr(exc, "details", None) or {})  # e.g. each bad reading of a refused batch
                return JSONResponse(body, status, headers=getattr(exc, "headers", None))
        return JSONResponse(exception_body("ServerError", "internal error"), 500)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = "NotFound" if exc.status_code == 404 else "HTTPError"
        return JSONResponse(exception_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": ("request",), "msg": "invalid"}
        parameter = str((first.get("loc") or ("request",))[-1])
        return JSONResponse(
            exception_body("InvalidParameterValue", f"{parameter}: {first['msg']}", parameter), 400
        )

    async def query_cancelled(request: Request, _exc: Exception) -> JSONResponse:
        limit = _statement_timeout_ms(request)
        took = f"longer than {limit / 1000:g} s" if limit else "too long"
        return JSONResponse(exception_body(
            "QueryTimeout", f"the query took {took} and was cancelled; ask for less (a smaller bbox or limit, a "
                            "simpler filter) or narrow it in time"), 503)

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # the cause in one line, never a traceback: the operator tells an outage from an exhausted pool
        cause = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        logging.getLogger(__name__).warning("503 %s %s: %s: %s", request.method, request.url.path,
                                            exc.__class__.__name__, cause)
        return JSONResponse(exception_body("ServiceUnavailable", "the database cannot be reached just now"), 503,
                            headers={"Retry-After": str(DATABASE_RETRY_SECONDS)})

    async def unexpected(_request: Request, _exc: Exception) -> JSONResponse:
        # Never a stack trace to the client; the server log has it. This answer leaves from outside every
        # middleware (Starlette's outermost error layer), so it carries the security headers itself.
        return JSONResponse(exception_body("ServerError", "internal error"), 500, headers=dict(SECURITY_HEADERS))

    app.add_exception_handler(GisError, gis_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(psycopg.errors.QueryCanceled, query_cancelled)
    app.add_exception_handler(psycopg.OperationalError, database_unavailable)
    app.add_exception_handler(PoolTimeout, database_unavailable)
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


def document_errors(document: dict[str, Any]) -> None:
    """Adds the exception schema and the error answers every operation can give to an OpenAPI document."""
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})["Exception"] = EXCEPTION_SCHEMA
    responses = components.setdefault("responses", {})
    for status, description in _ERRORS.items():
        responses[f"Error{status}"] = {"description": description, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Exception"}}}}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status in _ERRORS:
                operation["responses"].setdefault(status, {"$ref": f"#/components/responses/Error{status}"})
            operation["responses"].pop("422", None)  # FastAPI's validation answer: ours is a 400
