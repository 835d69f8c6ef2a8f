"""One table from errors to HTTP: OGC exception JSON ({code, description}) with the right status."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gis.analysis.proposal import InvalidProposal, ProposalTooLarge
from gis.errors import GisError, NotFound, SourceError
from gis.features.errors import InvalidQuery


class InvalidParameter(GisError):
    """A request parameter that cannot be understood; the message names the parameter."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter


STATUS: list[tuple[type[Exception], int, str]] = [
    (InvalidParameter, 400, "InvalidParameterValue"),
    (InvalidQuery, 400, "InvalidParameterValue"),
    (NotFound, 404, "NotFound"),
    (ProposalTooLarge, 413, "PayloadTooLarge"),
    (InvalidProposal, 400, "InvalidParameterValue"),
    (SourceError, 400, "InvalidInput"),
    (GisError, 500, "ServerError"),
]


def exception_body(code: str, description: str, parameter: str | None = None) -> dict[str, str]:
    body = {"code": code, "description": description}
    if parameter:
        body["parameter"] = parameter
    return body


def install_error_handlers(app: FastAPI) -> None:
    async def gis_error(_request: Request, exc: Exception) -> JSONResponse:
        for kind, status, code in STATUS:
            if isinstance(exc, kind):
                return JSONResponse(exception_body(code, str(exc), getattr(exc, "parameter", None)), status)
        return JSONResponse(exception_body("ServerError", "internal error"), 500)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = "NotFound" if exc.status_code == 404 else "HTTPError"
        return JSONResponse(exception_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": ("request",), "msg": "invalid"}
        parameter = str(first["loc"][-1])
        return JSONResponse(
            exception_body("InvalidParameterValue", f"{parameter}: {first['msg']}", parameter), 400
        )

    async def unexpected(_request: Request, _exc: Exception) -> JSONResponse:
        # Never a stack trace to the client; the server log has it.
        return JSONResponse(exception_body("ServerError", "internal error"), 500)

    app.add_exception_handler(GisError, gis_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
