"""The audit trail of reads: one ops.audit_log row per read of an internal or restricted layer or raster, committed
before the read is answered.

Public layers write nothing. The row names the caller, the path and the query parameters that shaped the
answer (those the route declares); the log itself is served to auditor roles by services/routers/audit.py.

A read of one statement's row (a page, an item, its history: `read_row`) writes its audit row in that same
statement when reads go to the primary (no standby configured): one round trip and one commit instead of two
each, and the row is committed before the answer exactly as before (the statement commits, or neither is).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from gis.layers import AccessClass, RasterSpec
from gis.security import audit
from gis.security.policy import LayerView
from services.auth.credentials import caller_of
from services.common.parameters import route_parameters
from services.common.state import AppState, app_state

type Row = tuple[Any, ...] | None


@dataclass(frozen=True)
class Counted:
    """What the audit row of a read records of its answer (features, status): as SQL over the read's row `r` (the
    columns of gis.db.routing.run_row: `found`, then the statement's own) and, for a read a standby may serve,
    the same in Python over the row."""

    features_sql: str
    status_sql: str
    of_row: Callable[[Row], tuple[int | None, int]]


async def read_row(request: Request, state: AppState, view: LayerView, query: Any, params: Mapping[str, object],
                   counted: Counted) -> Row:
    """The row of one statement reading `view`'s layer (binary results, as AppState.read_row), with the read's
    audit row for an internal or restricted layer."""
    layers = [view.source.id]
    if not view.audited:
        return await state.read_row(layers, query, params, binary=True)
    if state.read_pool is None:
        entry = _entry(request, view.source.id, None, 200, None)
        then = (audit.insert_from_row(counted.features_sql, counted.status_sql), audit.row_values(entry))
        return await state.read_row(layers, query, params, binary=True, then=then)
    row = await state.read_row(layers, query, params, binary=True)  # a standby may serve: the row is written after
    features, status = counted.of_row(row)
    await _audit(request, view.source.id, features, status, None)
    return row


async def audit_read(request: Request, view: LayerView, features: int | None, status: int = 200,
                     extra: Mapping[str, Any] | None = None) -> None:
    """One ops.audit_log row for a read of an internal or restricted layer; nothing for public ones."""
    if view.audited:
        await _audit(request, view.source.id, features, status, extra)


async def audit_raster_read(request: Request, spec: RasterSpec, extra: Mapping[str, Any] | None = None) -> None:
    """One ops.audit_log row for a read of an internal or restricted raster (coverage, tile, sampling)."""
    if spec.access is not AccessClass.public:
        await _audit(request, spec.id, None, 200, extra)


def _entry(request: Request, layer_id: str, features: int | None, status: int,
           extra: Mapping[str, Any] | None) -> audit.AuditEntry:
    caller = caller_of(request)
    declared = route_parameters(request)  # the query parameters the route declares (services.common.parameters)
    query = {k: v[:2000] for k, v in request.query_params.items() if k in declared}
    if extra:
        query.update(extra)
    return audit.AuditEntry(caller.subject, caller.role.name, caller.method, caller.key_id, "read",
                            layer_id, request.url.path, query, features, status)


async def _audit(request: Request, layer_id: str, features: int | None, status: int,
                 extra: Mapping[str, Any] | None) -> None:
    entry = _entry(request, layer_id, features, status, extra)
    async with app_state(request).pool.connection() as conn:
        await audit.record_async(conn, entry)
