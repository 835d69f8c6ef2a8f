"""The audit trail of reads: one ops.audit_log row per read of an internal or restricted layer or raster, committed
before the read is answered.

Public layers write nothing. The row names the caller, the path and the query parameters that shaped the
answer (those the route declares); the log itself is served to auditor roles by services/routers/audit.py.
"""

from collections.abc import Mapping
from typing import Any

from fastapi import Request

from gis.layers import AccessClass, RasterSpec
from gis.security import audit
from gis.security.policy import LayerView
from services.auth.credentials import caller_of
from services.common.parameters import route_parameters
from services.common.state import app_state


async def audit_read(request: Request, view: LayerView, features: int | None, status: int = 200,
                     extra: Mapping[str, Any] | None = None) -> None:
    """One ops.audit_log row for a read of an internal or restricted layer; nothing for public ones."""
    if view.audited:
        await _audit(request, view.source.id, features, status, extra)


async def audit_raster_read(request: Request, spec: RasterSpec, extra: Mapping[str, Any] | None = None) -> None:
    """One ops.audit_log row for a read of an internal or restricted raster (coverage, tile, sampling)."""
    if spec.access is not AccessClass.public:
        await _audit(request, spec.id, None, 200, extra)


async def _audit(request: Request, layer_id: str, features: int | None, status: int,
                 extra: Mapping[str, Any] | None) -> None:
    caller = caller_of(request)
    declared = route_parameters(request)  # the query parameters the route declares (services.common.parameters)
    query = {k: v[:2000] for k, v in request.query_params.items() if k in declared}
    if extra:
        query.update(extra)
    entry = audit.AuditEntry(caller.subject, caller.role.name, caller.method, caller.key_id, "read",
                             layer_id, request.url.path, query, features, status)
    async with app_state(request).pool.connection() as conn:
        await audit.record_async(conn, entry)
