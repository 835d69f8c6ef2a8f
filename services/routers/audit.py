"""GET /audit: the audit log, for roles that may read it (reads of internal and restricted data, admin actions).

Before answering it imports the direct PostGIS reads logged by the server since the last import
(gis.security.db_read_audit), so the log the auditor reads is whole.
"""

import logging
from typing import Annotated

import orjson
import psycopg
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gis.db.cluster import database_url
from gis.security import audit, db_read_audit
from gis.security.policy import Policy
from services.auth.credentials import caller_of, forbidden, unauthorized
from services.common.state import AppState, State

LOGGER = logging.getLogger(__name__)

router = APIRouter(tags=["Administration"])


def _import_direct_reads(state: AppState, policy: Policy) -> None:
    """The direct PostGIS reads logged since the last import, so the log the auditor reads is whole. A log this
    process cannot read leaves the API's own rows to be served (and says so in the server log)."""
    log_file = db_read_audit.log_file_of(state.settings)
    if log_file is None or not log_file.exists():
        return
    try:
        with psycopg.connect(database_url(state.settings), autocommit=True) as conn:
            db_read_audit.import_direct_reads(conn, log_file, state.registry, policy)
    except (OSError, psycopg.Error) as exc:
        LOGGER.warning("direct reads not imported from %s: %s", log_file, exc)


@router.get("/audit", summary="The audit log (auditor roles): reads of internal and restricted data, admin actions")
async def audit_log(request: Request, state: State, layer: str | None = None, subject: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    caller = caller_of(request)
    if caller.anonymous:
        raise unauthorized("the audit log needs credentials")
    if not caller.role.audit:
        raise forbidden("this role may not read the audit log")
    await run_in_threadpool(_import_direct_reads, state, state.auth.policy)
    async with state.pool.connection() as conn:
        entries = await audit.read(conn, layer, subject, limit)
        await audit.record_async(conn, audit.AuditEntry(
            caller.subject, caller.role.name, caller.method, caller.key_id, "admin:audit-read", layer,
            request.url.path, {k: v for k, v in (("layer", layer), ("subject", subject)) if v}, len(entries), 200))
    return Response(orjson.dumps({"entries": entries}), media_type="application/json")
