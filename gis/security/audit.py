"""ops.audit_log: who read which internal or restricted layer (and how), and every administrative action."""

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

INSERT = ("INSERT INTO ops.audit_log (subject, role, method, key_id, action, layer_id, path, query, features, "
          "status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


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
                Jsonb(self.query or {}), self.features, self.status)


def record(conn: psycopg.Connection, entry: AuditEntry) -> None:
    conn.execute(INSERT, entry.values())


async def record_async(conn: psycopg.AsyncConnection, entry: AuditEntry) -> None:
    await conn.execute(INSERT, entry.values(), prepare=True)


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
