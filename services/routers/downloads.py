"""GET /collections/{id}/download?f=gpkg|fgb|shp|csv: a layer the caller may read, as one file.

The same filters as /items (bbox, bbox-crs, datetime, filter, filter-lang, filter-crs, property=value),
checked by the same parser, with the caller's row rule and masks applied and the read audited.
GeoPackage, FlatGeobuf and Shapefile are written to a temporary file batch by batch, then streamed
and deleted; CSV streams straight from PostgreSQL's COPY.
"""

import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Annotated, BinaryIO
from urllib.parse import urlencode

import psycopg
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from gis import downloads
from gis.downloads import FORMATS, Format
from gis.errors import InvalidInput
from gis.features.params import parse_items_query
from gis.features.queries import Statement
from gis.layers import LayerSpec
from gis.security.policy import LayerView
from services.auth import read_audit, visibility
from services.common import limits
from services.common.collections import blame, download_links
from services.common.parameters import CollectionId, DownloadParameters, on_loop
from services.common.state import AppState, State

router = APIRouter(tags=["Downloads"])

DownloadQuery = Annotated[DownloadParameters, Depends(on_loop(DownloadParameters))]

FORMAT_PARAMETER = "f"


def collection_links(base: str, layer_id: str) -> list[dict[str, str]]:
    """The collection document's links to its downloads."""
    return download_links(lambda path, params: f"{base}{path}?{urlencode(params)}", layer_id)


def _format(params: dict[str, str]) -> Format:
    value = params.pop(FORMAT_PARAMETER, Format.gpkg.value)
    try:
        return Format(value)
    except ValueError:
        raise InvalidInput(FORMAT_PARAMETER, f"'{value[:20]}' is not a download format; use "
                           f"{', '.join(f.value for f in Format)}") from None


def _disposition(spec: LayerSpec, fmt: Format) -> dict[str, str]:
    name = downloads.filename(spec, fmt, datetime.now(UTC))
    return {"Content-Disposition": f'attachment; filename="{name}"'}


def _refused(exc: psycopg.Error, parameter: str | None) -> Exception:
    """A value the database cannot evaluate is the client's (naming the parameter); anything else is ours."""
    if parameter is None or not isinstance(exc, psycopg.DataError | psycopg.errors.InternalError_):
        return exc
    return InvalidInput(parameter, f"cannot be evaluated: {exc.diag.message_primary or exc}")


@router.get("/collections/{collectionId}/download", summary="A layer as a GeoPackage, FlatGeobuf, "
            "zipped Shapefile or CSV file, with the filters of /items",
            responses={200: {"content": {info.media_type.split(";")[0]: {} for info in FORMATS.values()}}})
async def download(collectionId: CollectionId, given: DownloadQuery,
                   request: Request, state: State) -> Response:
    view = visibility.layer_view(request, collectionId)
    spec = view.spec
    params = given.check_filters(request, spec)
    fmt = _format(params)
    q = parse_items_query(spec, params, limits.cql2_limits(request), given.names)
    q = await visibility.restrict(request, view, q)
    statement = downloads.export_statement(spec, q, fmt)
    if fmt is Format.csv:
        return await _stream_csv(request, state, view, statement, blame(q))
    try:  # routed like items: a standby with the layer's current version, else the primary (X-Layer-Version)
        written = await state.read([spec.id], lambda conn: downloads.write_file(
            conn, spec, statement, fmt, scratch_dir=state.settings.temp_dir))
    except psycopg.Error as exc:
        raise _refused(exc, blame(q)) from None
    try:
        await read_audit.audit_read(request, view, written.features, extra={"format": fmt.value})
        handle = written.path.open("rb")
        size = written.path.stat().st_size
    finally:
        # Removed before a byte is sent: nothing stays on disk even if the client goes away halfway
        # (the open handle keeps the bytes until it is closed).
        shutil.rmtree(written.workdir, ignore_errors=True)
    return StreamingResponse(_read_through(handle), media_type=FORMATS[fmt].media_type, headers={
        **_disposition(spec, fmt), "Content-Length": str(size), "X-Feature-Count": str(written.features)})


def _read_through(handle: BinaryIO) -> Iterator[bytes]:
    """The file in 1 MiB chunks (run in the threadpool by Starlette), closed at the end or on disconnect."""
    with handle:
        while chunk := handle.read(1 << 20):
            yield chunk


async def _stream_csv(request: Request, state: AppState, view: LayerView, statement: Statement,
                      parameter: str | None) -> Response:
    async def body() -> AsyncIterator[bytes]:
        async with state.reading([view.spec.id]) as conn:  # routed like items, held while the file streams
            try:
                async for chunk in downloads.csv_chunks(conn, statement):
                    yield chunk
            finally:
                # One audit row per download, when it ends; the count is left open (a quoted value may
                # hold a line break, so lines are not features).
                await read_audit.audit_read(request, view, None, extra={"format": Format.csv.value})

    chunks = body()
    try:
        first = await anext(chunks)  # a filter the database refuses is still a 400, before any byte is sent
    except psycopg.Error as exc:
        raise _refused(exc, parameter) from None

    async def rest() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return StreamingResponse(rest(), media_type=FORMATS[Format.csv].media_type,
                             headers=_disposition(view.spec, Format.csv))
