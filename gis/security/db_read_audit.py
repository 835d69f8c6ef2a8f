"""Direct reads into the audit log: what `gis db grant` login roles read straight from PostGIS (QGIS, psql).

PostgreSQL has no trigger on SELECT, so those reads are not written to ops.audit_log as the API's are.
Each login role has `log_statement = 'all'` and the cluster's `log_line_prefix` names user and database
(gis/db/cluster.py), so every statement of theirs is in the server log. This module reads the log from where
it last stopped (ops.db_log_position) and writes one `read` row per statement that names a non-public
layer's table or a role's view of it, with the statement's own time, user and text (method `postgres`).
Catalog queries, FETCHes and reads of public layers are not audited, as in the API.
"""

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from gis.db.cluster import Cluster
from gis.layers import AccessClass, LayerRegistry
from gis.security import audit
from gis.security.db_roles import GROUP_PREFIX, database_roles, group_name
from gis.security.policy import Policy
from gis.settings import Settings

METHOD = "postgres"
MAX_SQL_CHARS = 2000
# log_line_prefix = '%m [%p] %u@%d ': "2026-12-04 20:41:23.368 UTC [4711] alice@gis LOG:  statement: SELECT …"
# (simple protocol) or "… LOG:  execute <unnamed>: SELECT …" (extended protocol).
_ENTRY = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (\S+) \[(\d+)\] (\S*)@(\S*) (\w+):  (.*)$")
INSERT_AT = ("INSERT INTO ops.audit_log (at, subject, role, method, key_id, action, layer_id, path, query, features, "
             "status) VALUES (coalesce(%s, clock_timestamp()), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
_STATEMENT = re.compile(r"^(?:statement|execute [^:]*): (.*)$", re.S)


@dataclass(frozen=True)
class LoggedStatement:
    at: datetime | None  # None when the log's time zone is not UTC (the import time stands in)
    pid: int
    user: str
    database: str
    text: str


def parse_statements(lines: Iterable[str]) -> Iterator[LoggedStatement]:
    """The statements of a server log; a statement's continuation lines start with a tab."""
    current: list[str] = []
    head: re.Match[str] | None = None
    for line in [*lines, ""]:
        if line.startswith("\t") and head is not None:
            current.append(line[1:])
            continue
        if head is not None:
            found = _STATEMENT.match("\n".join([head.group(7), *current]))
            if found:
                stamp, zone = head.group(1), head.group(2)
                at = datetime.fromisoformat(stamp).replace(tzinfo=UTC) if zone in ("UTC", "GMT") else None
                yield LoggedStatement(at, int(head.group(3)), head.group(4), head.group(5), found.group(1))
        head, current = _ENTRY.match(line), []


# A schema-qualified name, quoted or not: "pipeline"."pipelines", pipeline.pipelines, gis_planner . pipelines;
# a lookahead, so that names overlap (db.pipeline.pipelines yields db.pipeline and pipeline.pipelines).
_QUALIFIED = re.compile(r'(?<![\w"])(?="?([A-Za-z_]\w*)"?\s*\.\s*"?([A-Za-z_]\w*)"?(?![\w"]))')


@dataclass(frozen=True)
class Watched:
    """The tables and views whose reads are audited: (schema, table) -> the layer they hold."""

    tables: Mapping[tuple[str, str], str]

    def layers_in(self, text: str) -> list[str]:
        return sorted({layer_id for schema, table in _QUALIFIED.findall(text)
                       if (layer_id := self.tables.get((schema.lower(), table.lower()))) is not None})


def watched(registry: LayerRegistry, policy: Policy) -> Watched:
    """Every non-public layer's table and history table, and each database role's views of them."""
    schemas = [group_name(role.name) for role in database_roles(policy)]
    return Watched({(schema, table): spec.id for spec in registry.values() if spec.access is not AccessClass.public
                    for schema in (spec.domain.value, *schemas) for table in (spec.id, spec.history_table)})


def _members(conn: psycopg.Connection, policy: Policy) -> dict[str, str]:
    """login role -> policy role, for the members of the policy's database group roles."""
    groups = {group_name(role.name): role.name for role in database_roles(policy)}
    rows = conn.execute(
        "SELECT member.rolname, grp.rolname FROM pg_auth_members m JOIN pg_roles member ON member.oid = m.member "
        "JOIN pg_roles grp ON grp.oid = m.roleid WHERE grp.rolname LIKE %s", (GROUP_PREFIX + "%",)).fetchall()
    return {member: groups[group] for member, group in rows if group in groups}


@dataclass(frozen=True)
class Imported:
    statements: int  # statements read from the log since the last import
    reads: int  # audit rows written


def import_direct_reads(conn: psycopg.Connection, log_file: Path, registry: LayerRegistry,
                        policy: Policy) -> Imported:
    """Copy the new direct reads of this database from the server log into ops.audit_log, in one transaction
    (two imports at once wait for each other on the position row, so no read is written twice)."""
    key = str(log_file.resolve())
    with conn.transaction():
        conn.execute("INSERT INTO ops.db_log_position (log_path, position) VALUES (%s, 0) "
                     "ON CONFLICT (log_path) DO NOTHING", (key,))
        row = conn.execute("SELECT position FROM ops.db_log_position WHERE log_path = %s FOR UPDATE",
                           (key,)).fetchone()
        position = int(row[0]) if row else 0
        with log_file.open("rb") as log:
            if log.seek(0, 2) < position:  # rotated or truncated: a new log from its start
                position = 0
            log.seek(position)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next import
        database = conn.info.dbname
        members = _members(conn, policy)
        patterns = watched(registry, policy)
        statements = reads = 0
        for statement in parse_statements(complete.decode("utf-8", errors="replace").splitlines()):
            statements += 1
            role = members.get(statement.user)
            if role is None or statement.database != database:
                continue
            for layer_id in patterns.layers_in(statement.text):
                entry = audit.AuditEntry(statement.user, role, METHOD, None, "read", layer_id, None,
                                         {"sql": statement.text[:MAX_SQL_CHARS], "pid": statement.pid})
                conn.execute(INSERT_AT, (statement.at, *entry.values()))
                reads += 1
        conn.execute("UPDATE ops.db_log_position SET position = %s, imported_at = clock_timestamp() "
                     "WHERE log_path = %s", (position + len(complete), key))
    return Imported(statements, reads)


def log_file_of(settings: Settings) -> Path | None:
    """The server log to import from: GIS_DB_LOG_FILE, else the embedded cluster's when it is the database."""
    if settings.db_log_file is not None:
        return settings.db_log_file
    return None if settings.database_url else Cluster(settings).log_file
