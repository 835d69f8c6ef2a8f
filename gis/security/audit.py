"""ops.audit_log: who read which internal or restricted layer (and how), and every administrative action."""

from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

INSERT = ("INSERT INTO ops.audit_log (subject, role, method, key_id, action, layer_id, path, query, features, "
          "status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


def _jsonb(query: dict[str, Any] | None) -> Jsonb:
    """The query as jsonb, encoded by orjson: the stdlib's encoder (psycopg's default) cost more than the rest of the
    row's parameters together on every audited read. PostgreSQL parses it into the same jsonb value."""
    return Jsonb(query or {}, dumps=_dumps)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


@dataclass(frozen=True)
class AuditEntry:
    subject: str
    role: str
    method: str  # api-key, basic, bearer, cli
    key_id: str | None
    action: str  # read, admin:<what>
    layer_id: str | None = None
    path: str | None = None
    query: dict[str, Any] | None = None
    features: int | None = None
    status: int | None = None

    def values(self) -> tuple[object, ...]:
        return (self.subject, self.role, self.method, self.key_id, self.action, self.layer_id, self.path,
                _jsonb(self.query), self.features, self.status)


def record(conn: psycopg.Connection, entry: AuditEntry) -> None:
    conn.execute(INSERT, entry.values())


async def record_async(conn: psycopg.AsyncConnection, entry: AuditEntry) -> None:
    await conn.execute(INSERT, entry.values(), prepare=True)


# The audit row of a read, written by the read's own statement (gis.db.routing.run_row's `then`): its count and
# status are SQL over the read's row `r`; the rest are parameters named apart from the read's own.
_INSERT_FROM_ROW = sql.SQL(
    "INSERT INTO ops.audit_log (subject, role, method, key_id, action, layer_id, path, query, features, status) "
    "SELECT %(gis_audit_subject)s::text, %(gis_audit_role)s::text, %(gis_audit_method)s::text, "
    "%(gis_audit_key_id)s::text, %(gis_audit_action)s::text, %(gis_audit_layer)s::text, %(gis_audit_path)s::text, "
    "%(gis_audit_query)s::jsonb, {features}, {status} FROM r")
_from_row: dict[tuple[str, str], bytes] = {}


def insert_from_row(features: str, status: str) -> bytes:
    """The INSERT of a read's audit row from the read's row `r` (rendered once per pair of expressions, which are
    the code's own constants, never input)."""
    found = _from_row.get((features, status))
    if found is None:
        found = _from_row[(features, status)] = _INSERT_FROM_ROW.format(
            features=sql.SQL(features), status=sql.SQL(status)).as_bytes(None)
    return found


def row_values(entry: AuditEntry) -> dict[str, object]:
    """The entry's values as insert_from_row's parameters (its features and status come from the row)."""
    return {"gis_audit_subject": entry.subject, "gis_audit_role": entry.role, "gis_audit_method": entry.method,
            "gis_audit_key_id": entry.key_id, "gis_audit_action": entry.action, "gis_audit_layer": entry.layer_id,
            "gis_audit_path": entry.path, "gis_audit_query": _jsonb(entry.query)}


COLUMNS = ("audit_id", "at", "subject", "role", "method", "key_id", "action", "layer_id", "path", "query",
           "features", "status")


async def read(conn: psycopg.AsyncConnection, layer_id: str | None, subject: str | None,
               limit: int) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT audit_id, at, subject, role, method, key_id, action, layer_id, path, query, features, status "
        "FROM ops.audit_log WHERE (%(layer)s::text IS NULL OR layer_id = %(layer)s) "
        "AND (%(subject)s::text IS NULL OR subject = %(subject)s) ORDER BY audit_id DESC LIMIT %(limit)s",
        {"layer": layer_id, "subject": subject, "limit": int(limit)})
    rows = await cursor.fetchall()
    return [dict(zip(COLUMNS, (r.isoformat() if hasattr(r, "isoformat") else r for r in row), strict=True))
            for row in rows]
