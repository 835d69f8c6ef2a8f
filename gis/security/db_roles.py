"""PostgreSQL roles from the access policy (`gis db grant`): QGIS or psql connected straight to PostGIS sees
what the API shows the same role, and nothing more.

Each policy role with `database: true` gets one NOLOGIN group role, `gis_<role>`, holding:
- USAGE on the schemas of its layers and SELECT on each readable layer's current and history tables. A role
  that sees every column of a table gets the table privilege (QGIS lists only such tables, through
  geometry_columns); a role with masked fields gets column privileges on the columns it sees, never the
  table privilege, because a table privilege would also cover every column added later;
- a row-level security policy per table its row rules limit (`gis.security.rows.rls_predicate`), reading
  the connected login role's claims from ops.db_role_claims (migration 005 lets a role read only its own);
- SELECT on public.layer_styles, whose policy shows the styles of the tables the reader may read, so QGIS
  finds its default styles;
- for the tables it sees only some columns of, a schema of its own (named like the group) with a view per
  table of exactly those columns, with a copy of the table's default style: QGIS opens a table with
  `SELECT *` and lists only tables readable as a whole, so these views are what QGIS users of the role open.
  The views are security_invoker (PostgreSQL 15): the reader's own privileges and row security apply.
Login roles are members of exactly one group and carry their claims. Every run revokes everything the managed
roles hold in this database, then grants what the policy says now, in the caller's transaction: nobody ever
sees a half-applied state, and what the policy no longer grants is gone. The tables' owner (the service account)
is not subject to row-level security, so the API and refresh jobs read and write as before.
"""

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psycopg
from psycopg import sql

from gis.edits import db_edits
from gis.errors import ConfigError, DatabaseError, GisError
from gis.layers import RESERVED_COLUMNS, Domain, LayerRegistry
from gis.security import rows
from gis.security.policy import LayerView, Policy, Role
from gis.settings import Settings

Extent = tuple[float, float, float, float]
DEFAULT_EXTENT: Extent = Settings.model_fields["city_extent"].default  # callers with settings pass theirs

GROUP_PREFIX = "gis_"
GROUP_MARK = "gis db grant: group role of policy role "
USER_MARK = "gis db grant: login role"
VIEWS_MARK = "gis db grant: views of the columns the role sees"
HISTORY_ONLY_COLUMNS = ("closed_refresh_id",)
LAYER_SCHEMAS = tuple(domain.value for domain in Domain)
STYLES = sql.Identifier("public", "layer_styles")
STYLES_POLICY = sql.Identifier("gis_readable_tables")
# A style row is visible to whoever may read some column of its table (the owner bypasses this). By oid, not
# by name: resolving a name in a schema the reader may not use raises an error instead of answering false.
STYLES_USING = sql.SQL(
    "EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = f_table_schema AND c.relname = f_table_name "
    "AND has_schema_privilege(n.oid, 'USAGE') AND has_any_column_privilege(c.oid, 'SELECT'))")
_USER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('gis db grant'))"  # two grants at once would interleave
# Policies and RLS switches lock their tables; rather fail readably than queue the API's readers behind us.
_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '10s'"


@dataclass(frozen=True)
class TableGrant:
    schema: str
    table: str
    columns: tuple[str, ...] | None  # None: the table privilege (the role sees every column)
    rule: sql.Composed | None  # the row-level security predicate, None: every row

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)


@dataclass(frozen=True)
class GroupPlan:
    """What one policy role's group role holds once the grant is applied."""

    policy_role: str
    tables: tuple[TableGrant, ...]

    @property
    def name(self) -> str:
        return group_name(self.policy_role)

    @property
    def schemas(self) -> tuple[str, ...]:
        return tuple(sorted({t.schema for t in self.tables}))

    @property
    def reads_claims(self) -> bool:
        return any(t.rule is not None for t in self.tables)

    def describe(self) -> str:
        limited = sum(t.columns is not None for t in self.tables)
        ruled = sum(t.rule is not None for t in self.tables)
        return (f"{self.name} ({self.policy_role}): {len(self.tables)} tables in {len(self.schemas)} schemas, "
                f"{limited} with column privileges only, {ruled} with row-level security")


@dataclass(frozen=True)
class UserGrant:
    name: str
    policy_role: str
    created: bool
    password: str | None  # generated here: shown once
    password_set: bool
    missing_claims: tuple[str, ...]  # claims the role's row rules read that the user lacks: no rows there
    statements_logged: bool  # the server logs the role's statements (needs a superuser to set)

    def describe(self) -> str:
        state = "created" if self.created else "updated"
        note = "password set" if self.password_set else "password unchanged"
        text = f"login role {self.name} {state}, member of {group_name(self.policy_role)} ({note})"
        if self.missing_claims:
            text += f"; no {', '.join(self.missing_claims)} claim: row rules on it show no rows"
        if not self.statements_logged:
            text += "; its statements are NOT logged (setting log_statement for a role needs a superuser)"
        return text


def group_name(policy_role: str) -> str:
    # Policy role names match the registry's Name pattern (lower-case, at most 48 characters).
    return f"{GROUP_PREFIX}{policy_role}"


def postgis_table(role: Role, layer_id: str) -> tuple[str, str]:
    """(schema, table) a QGIS user of the role opens for the layer: the table itself, or, when the role has masked
    fields there, its view in the role's own schema (open views with key 'fid'). A layer whose table keeps a
    column the registry no longer declares also gets a view; that case is not predictable without the database."""
    view = role.view(layer_id)
    if view.masked:
        return group_name(role.name), view.source.id
    return view.source.domain.value, view.source.id


def database_roles(policy: Policy) -> list[Role]:
    return [role for name, role in sorted(policy.roles.items()) if role.spec.database]


# -- the plan: what each group role may read ------------------------------------------------------------

def _table_columns(conn: psycopg.Connection, schema: str, table: str) -> tuple[str, ...]:
    rows_ = conn.execute(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (schema, table)).fetchall()
    if not rows_:
        raise ConfigError(f"table {schema}.{table} does not exist: run 'gis migrate' first")
    return tuple(r[0] for r in rows_)


def _visible_columns(view: LayerView, history: bool) -> set[str]:
    """The columns the API's view of the layer stands for: its unmasked fields and the columns every layer has."""
    return set(RESERVED_COLUMNS) | set(view.spec.field_names) | (set(HISTORY_ONLY_COLUMNS) if history else set())


def _check_rule_readable(role: Role, view: LayerView, registry: LayerRegistry) -> None:
    """A spatial rule reads the other layer as the connected role: the role must see its key field and geometry."""
    rule = view.rows
    if rule is None or rule.within is None:
        return
    other = role.views.get(rule.within.layer)
    if other is None or rule.within.field in other.masked:
        raise ConfigError(
            f"access policy: role '{role.name}' has a row rule on '{view.source.id}' within "
            f"'{rule.within.layer}.{rule.within.field}', which it may not read; row-level security needs it")


def _table_grant(conn: psycopg.Connection, view: LayerView, registry: LayerRegistry, history: bool) -> TableGrant:
    spec = view.source
    schema, table = spec.domain.value, spec.history_table if history else spec.id
    existing = _table_columns(conn, schema, table)
    visible = _visible_columns(view, history)
    columns = None if set(existing) <= visible else tuple(c for c in existing if c in visible)
    rule = None if view.rows is None else rows.rls_predicate(view.rows, registry, spec.id, history)
    return TableGrant(schema, table, columns, rule)


def plan(conn: psycopg.Connection, policy: Policy, registry: LayerRegistry) -> list[GroupPlan]:
    plans = []
    for role in database_roles(policy):
        tables: list[TableGrant] = []
        for layer_id in registry:
            view = role.views.get(layer_id)
            if view is None:
                continue
            _check_rule_readable(role, view, registry)
            tables += [_table_grant(conn, view, registry, history) for history in (False, True)]
        plans.append(GroupPlan(role.name, tuple(tables)))
    return plans


# -- the catalog: roles we made, tables that exist ------------------------------------------------------

def _role_marks(conn: psycopg.Connection) -> dict[str, tuple[str | None, bool]]:
    """Every role: its comment and whether it is a superuser or bypasses row-level security."""
    found = conn.execute(
        "SELECT rolname, shobj_description(oid, 'pg_authid'), rolsuper OR rolbypassrls FROM pg_roles").fetchall()
    return {name: (comment, privileged) for name, comment, privileged in found}


def _managed_groups(marks: Mapping[str, tuple[str | None, bool]]) -> set[str]:
    return {name for name, (comment, _) in marks.items() if (comment or "").startswith(GROUP_MARK)}


def _existing_schemas(conn: psycopg.Connection) -> list[str]:
    found = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (list(LAYER_SCHEMAS),))
    return sorted(r[0] for r in found)


def _database(conn: psycopg.Connection) -> sql.Identifier:
    row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    return sql.Identifier(row[0])


# -- applying ------------------------------------------------------------------------------------------

def _ensure_group(conn: psycopg.Connection, group: GroupPlan, marks: Mapping[str, tuple[str | None, bool]]) -> None:
    name = sql.Identifier(group.name)
    if group.name in marks:
        comment, _ = marks[group.name]
        if not (comment or "").startswith(GROUP_MARK):
            raise GisError(f"db grant: role '{group.name}' exists and was not made by 'gis db grant'; "
                           "rename it or the policy role")
        return
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(name))
    conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(name, sql.Literal(GROUP_MARK + group.policy_role)))


def _revoke_everything(conn: psycopg.Connection, role: str, schemas: Iterable[str]) -> None:
    """Whatever the role holds here; REVOKE on a table also revokes its column privileges."""
    who = sql.Identifier(role)
    for schema in schemas:
        conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(sql.Identifier(schema), who))
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(sql.Identifier(schema), who))
    conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(rows.CLAIMS_TABLE, who))
    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA ops FROM {}").format(who))
    conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(STYLES, who))
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(_database(conn), who))


def _drop_managed_policies(conn: psycopg.Connection, schemas: list[str]) -> None:
    found = conn.execute(
        "SELECT n.nspname, c.relname, p.polname FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s) AND p.polname LIKE %s",
        (schemas, GROUP_PREFIX.replace("_", r"\_") + "%")).fetchall()
    for schema, table, policy_name in found:
        conn.execute(sql.SQL("DROP POLICY {} ON {}").format(
            sql.Identifier(policy_name), sql.Identifier(schema, table)))


def _grant_tables(conn: psycopg.Connection, group: GroupPlan) -> None:
    who = sql.Identifier(group.name)
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(_database(conn), who))
    for schema in group.schemas:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), who))
    for table in group.tables:
        if table.columns is None:
            conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(table.identifier, who))
        else:
            columns = sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
            conn.execute(sql.SQL("GRANT SELECT ({}) ON {} TO {}").format(columns, table.identifier, who))
    if group.reads_claims:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA ops TO {}").format(who))
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(rows.CLAIMS_TABLE, who))


def _row_security_state(conn: psycopg.Connection, schema: str, table: str) -> tuple[bool, int]:
    """Whether the table has row-level security on, and how many policies it has."""
    found = conn.execute(
        "SELECT c.relrowsecurity, (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, table)).fetchone()
    return (False, 0) if found is None else (bool(found[0]), int(found[1]))


def _row_security(conn: psycopg.Connection, plans: list[GroupPlan], registry: LayerRegistry) -> None:
    """RLS on every table some group's row rule limits, with one policy per group that reads it."""
    readers: dict[tuple[str, str], list[tuple[str, TableGrant]]] = {}
    for group in plans:
        for table in group.tables:
            readers.setdefault((table.schema, table.table), []).append((group.name, table))
    for spec in registry.values():
        for table_name in (spec.id, spec.history_table):
            qualified = sql.Identifier(spec.domain.value, table_name)
            grants = readers.get((spec.domain.value, table_name), [])
            enabled, policies = _row_security_state(conn, spec.domain.value, table_name)
            if not any(g.rule is not None for _, g in grants):
                if enabled and policies == 0:  # nothing limits its rows any more (ours were dropped before)
                    conn.execute(sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(qualified))
                continue
            if not enabled:
                conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(qualified))
            for name, grant in grants:
                conn.execute(sql.SQL("CREATE POLICY {} ON {} AS PERMISSIVE FOR SELECT TO {} USING ({})").format(
                    sql.Identifier(name), qualified, sql.Identifier(name), grant.rule or sql.SQL("true")))


def _styles(conn: psycopg.Connection, plans: list[GroupPlan]) -> None:
    if not _row_security_state(conn, "public", "layer_styles")[0]:
        conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(STYLES))
    conn.execute(sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(STYLES_POLICY, STYLES))
    conn.execute(sql.SQL("CREATE POLICY {} ON {} FOR SELECT TO PUBLIC USING ({})").format(
        STYLES_POLICY, STYLES, STYLES_USING))
    for group in plans:
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(STYLES, sql.Identifier(group.name)))


_COPY_STYLE = """
INSERT INTO public.layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, stylename,
                                 styleqml, stylesld, useasdefault, description, type, update_time)
SELECT current_database(), %(views)s, f_table_name, f_geometry_column, stylename, styleqml, stylesld, true,
       description, NULL, LOCALTIMESTAMP
  FROM public.layer_styles
 WHERE f_table_schema = %(schema)s AND f_table_name = %(table)s AND useasdefault
 ORDER BY update_time DESC LIMIT 1
"""


def _drop_views(conn: psycopg.Connection, group: str) -> None:
    found = conn.execute("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s",
                         (group,)).fetchone()
    if found is not None and found[0] != VIEWS_MARK:
        raise GisError(f"db grant: schema '{group}' exists and was not made by 'gis db grant'; rename it")
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(group)))
    conn.execute("DELETE FROM public.layer_styles WHERE f_table_schema = %s", (group,))


def _create_views(conn: psycopg.Connection, group: GroupPlan) -> None:
    limited = [t for t in group.tables if t.columns is not None]
    if not limited:
        return
    schema, who = sql.Identifier(group.name), sql.Identifier(group.name)
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
    conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(schema, sql.Literal(VIEWS_MARK)))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, who))
    for table in limited:
        assert table.columns is not None
        view = sql.Identifier(group.name, table.table)
        conn.execute(sql.SQL(
            "CREATE VIEW {} WITH (security_invoker = true, security_barrier = true) AS SELECT {} FROM {}").format(
            view, sql.SQL(", ").join(sql.Identifier(c) for c in table.columns), table.identifier))
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(view, who))
        conn.execute(_COPY_STYLE, {"views": group.name, "schema": table.schema, "table": table.table})


def apply(conn: psycopg.Connection, policy: Policy, registry: LayerRegistry,
          city_extent: Extent = DEFAULT_EXTENT) -> list[GroupPlan]:
    """Create or refresh every group role; revoke what the policy no longer grants. Run inside a transaction."""
    conn.execute(_LOCK)
    conn.execute(_LOCK_TIMEOUT)
    try:
        return _apply(conn, policy, registry, city_extent)
    except psycopg.errors.LockNotAvailable as exc:
        raise DatabaseError("db grant: a layer table stayed locked for 10 s (a refresh running?); nothing was "
                            "changed, run it again") from exc


def _apply(conn: psycopg.Connection, policy: Policy, registry: LayerRegistry, city_extent: Extent) -> list[GroupPlan]:
    plans = plan(conn, policy, registry)
    marks = _role_marks(conn)
    for group in plans:
        _ensure_group(conn, group, marks)
    schemas = _existing_schemas(conn)
    # Groups of roles that left the policy (or lost `database: true`) keep existing but hold nothing here.
    for name in sorted(_managed_groups(marks) | {g.name for g in plans}):
        _revoke_everything(conn, name, schemas)
        _drop_views(conn, name)
    _drop_managed_policies(conn, schemas)
    for group in plans:
        _grant_tables(conn, group)
        _create_views(conn, group)
    _row_security(conn, plans, registry)
    db_edits.apply(conn, policy, registry, city_extent, group_name)  # editor roles write through history triggers
    _styles(conn, plans)
    return plans


def granted_here(conn: psycopg.Connection) -> bool:
    """Whether `gis db grant` has given some role a layer schema of this database (so grants must follow changes)."""
    found = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a JOIN pg_roles r ON r.oid = a.grantee "
        "WHERE n.nspname = ANY(%s) AND shobj_description(r.oid, 'pg_authid') LIKE %s)",
        (list(LAYER_SCHEMAS), GROUP_MARK + "%")).fetchone()
    return found == (True,)


def reapply_if_granted(conn: psycopg.Connection, policy: Policy, registry: LayerRegistry,
                       city_extent: Extent = DEFAULT_EXTENT) -> list[GroupPlan]:
    """After `gis migrate` changed tables: the grants again, in the same transaction, if this database has any."""
    return apply(conn, policy, registry, city_extent) if granted_here(conn) else []


# -- login roles -------------------------------------------------------------------------------------------

def _check_user_name(name: str, marks: Mapping[str, tuple[str | None, bool]]) -> bool:
    """Whether the login role exists already; refuses names that are not ours to manage."""
    if not _USER_NAME.match(name) or name.startswith((GROUP_PREFIX, "pg_")):
        raise GisError(f"db grant: user name '{name[:80]}' must match [a-z][a-z0-9_]* (at most 63) and not start "
                       f"with '{GROUP_PREFIX}' or 'pg_'")
    if name not in marks:
        return False
    comment, privileged = marks[name]
    if comment != USER_MARK or privileged:
        raise GisError(f"db grant: role '{name}' exists and was not made by 'gis db grant'; choose another name")
    return True


def _verifier(conn: psycopg.Connection, name: str, password: str) -> sql.Literal:
    """The SCRAM verifier, computed here: the password itself never reaches the server or its logs."""
    encrypted = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256")
    return sql.Literal(encrypted.decode())


def _required_claims(role: Role) -> tuple[str, ...]:
    return tuple(sorted({view.rows.claim for view in role.views.values() if view.rows is not None}))


def grant_user(conn: psycopg.Connection, policy: Policy, name: str, policy_role: str, claims: Mapping[str, str],
               password: str | None, reset_password: bool = False) -> UserGrant:
    """Create or update a login role in one group with its claims. Run after apply(), in the same transaction.

    A new role without a given password, or reset_password, gets a generated one (returned, shown once);
    an existing role keeps its password unless one is given.
    """
    role = policy.role(policy_role)
    if role is None or not role.spec.database:
        names = ", ".join(r.name for r in database_roles(policy)) or "none"
        raise GisError(f"db grant: '{policy_role}' is not a policy role with 'database: true' ({names})")
    marks = _role_marks(conn)
    exists = _check_user_name(name, marks)
    generated = secrets.token_urlsafe(18) if password is None and (reset_password or not exists) else None
    secret = password if password is not None else generated
    who = sql.Identifier(name)
    if not exists:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS")
                     .format(who))
        conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(who, sql.Literal(USER_MARK)))
    else:
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(who))
    if secret is not None:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(who, _verifier(conn, name, secret)))
    _leave_groups(conn, name, keep=group_name(policy_role))
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group_name(policy_role)), who))
    conn.execute("DELETE FROM ops.db_role_claims WHERE role_name = %s", (name,))
    for claim, value in sorted(claims.items()):
        conn.execute("INSERT INTO ops.db_role_claims (role_name, claim, value) VALUES (%s, %s, %s)",
                     (name, claim, value))
    missing = tuple(c for c in _required_claims(role) if c not in claims)
    return UserGrant(name, policy_role, not exists, generated, secret is not None, missing, _log_statements(conn, name))


def _log_statements(conn: psycopg.Connection, name: str) -> bool:
    """Reads through the API are audited in ops.audit_log; PostgreSQL has no trigger on SELECT, so direct reads
    go to the server log instead: every statement of the role's sessions."""
    try:
        with conn.transaction():  # a savepoint: refused without superuser rights, and the grant goes on
            conn.execute(sql.SQL("ALTER ROLE {} SET log_statement = 'all'").format(sql.Identifier(name)))
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


def _leave_groups(conn: psycopg.Connection, name: str, keep: str | None) -> None:
    groups = conn.execute(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s AND shobj_description(g.oid, 'pg_authid') LIKE %s",
        (name, GROUP_MARK + "%")).fetchall()
    for (group,) in groups:
        if group != keep:
            conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), sql.Identifier(name)))


def remove_user(conn: psycopg.Connection, name: str) -> None:
    """The login role can no longer log in, belongs to no group and has no claims here (it is not dropped:
    it may own objects or hold grants in other databases)."""
    if not _check_user_name(name, _role_marks(conn)):
        raise GisError(f"db grant: no login role '{name}' made by 'gis db grant'")
    _leave_groups(conn, name, keep=None)
    conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD NULL").format(sql.Identifier(name)))
    conn.execute("DELETE FROM ops.db_role_claims WHERE role_name = %s", (name,))
