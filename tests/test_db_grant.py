"""`gis db grant`: PostgreSQL roles from the access policy. Connected straight to PostGIS as an analyst, a
planner or a policing user, psycopg (and QGIS) sees the layers, columns and rows the API shows the same role,
and nothing more.

The module grants in a clone of its own and serves it; the login roles are the cluster's (roles are global),
named here so no other module uses them.
"""

import io
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from conftest import TEST_KEYS
from psycopg import sql

from gis.layers import LayerRegistry
from gis.security import db_roles, keys
from gis.security.policy import Policy, load_policy, policy_path
from gis.settings import Settings

USERS = {"analyst": "dbg_analyst", "planner": "dbg_planner", "policing_app": "dbg_police"}
PASSWORD = "a-test-password-of-the-db-grant-suite"
BOOKKEEPING = {"fid", "geom", "valid_from", "valid_to", "row_hash", "refresh_id", "closed_refresh_id"}
QGIS_PYTHON = "/usr/bin/python3"
QGIS_SCRIPTS = Path(__file__).resolve().parent / "qgis_scripts"


@dataclass(frozen=True)
class Granted:
    db_url: str
    api_url: str
    keys: dict[str, str]  # policy role -> API key
    jurisdiction: str


@pytest.fixture(scope="module")
def policy(registry: LayerRegistry, settings: Settings) -> Policy:
    return load_policy(policy_path(settings.layers_dir), registry)


def gis(settings: Settings, db_url: str, *argv: str, stdin: str = "", env: dict[str, str] | None = None) -> int:
    """`gis ...` in this process, against db_url, with the checkout's layers and policy unless env says otherwise."""
    from gis.cli import main

    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"GIS_DATABASE_URL": db_url, "GIS_LAYERS_DIR": str(settings.layers_dir),
                            "GIS_STYLES_DIR": str(settings.styles_dir), **(env or {})}.items():
            patch.setenv(name, value)
        patch.setattr("sys.stdin", io.StringIO(stdin))
        return main(list(argv))


def grant_user(settings: Settings, db_url: str, policy_role: str, user: str, *claims: str) -> None:
    claim_args = [arg for claim in claims for arg in ("--claim", claim)]
    assert gis(settings, db_url, "db", "grant", "--user", user, "--role", policy_role, *claim_args,
               "--password-stdin", stdin=PASSWORD + "\n") == 0


@pytest.fixture(scope="module")
def granted(server_url: str, template_db: str, settings: Settings, registry: LayerRegistry,
            serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[Granted]:
    from conftest import cloned_database

    from gis.styles import publish_styles

    with cloned_database(server_url, template_db, "gis_test_db_grant") as url:
        with psycopg.connect(url) as conn:
            publish_styles(conn, registry, settings.styles_dir)  # QGIS matches styles by database name
            # The station whose jurisdiction holds the most incidents (and some incidents lie elsewhere).
            station = conn.execute(
                "SELECT j.station FROM policing.police_jurisdictions j JOIN policing.incidents i "
                "ON ST_Intersects(j.geom, i.geom) GROUP BY j.station ORDER BY count(*) DESC, j.station LIMIT 1"
            ).fetchone()
            assert station is not None
            _record, police_key = keys.create_key(conn, "police of one station", "policing_app", "",
                                                  {"jurisdiction": station[0]})
            conn.commit()
        grant_user(settings, url, "analyst", USERS["analyst"])
        grant_user(settings, url, "planner", USERS["planner"])
        grant_user(settings, url, "policing_app", USERS["policing_app"], f"jurisdiction={station[0]}")
        with serve_api(url) as api:
            yield Granted(url, api, {**TEST_KEYS, "policing_app": police_key}, str(station[0]))


def connect_as(db_url: str, user: str, password: str = PASSWORD) -> psycopg.Connection:
    return psycopg.connect(psycopg.conninfo.make_conninfo(db_url, user=user, password=password), autocommit=True)


def api(granted: Granted, policy_role: str, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(granted.api_url + path, params=params, headers={"X-API-Key": granted.keys[policy_role]},
                         timeout=60)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def readable_tables(conn: psycopg.Connection, registry: LayerRegistry, history: bool = False) -> set[str]:
    """The layers whose table (or history table) this connection can SELECT from at all, by trying."""
    found = set()
    for spec in registry.values():
        table = sql.Identifier(spec.domain.value, spec.history_table if history else spec.id)
        try:
            conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 0").format(table))
            found.add(spec.id)
        except psycopg.errors.InsufficientPrivilege:
            pass
    return found


def readable_columns(conn: psycopg.Connection, schema: str, table: str) -> set[str]:
    """information_schema shows a role only the columns it holds a privilege on."""
    return {r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (schema, table))}


def refused(conn: psycopg.Connection, statement: sql.Composable) -> bool:
    try:
        conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


# -- layers ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy_role", sorted(USERS))
def test_user_reads_exactly_the_layers_the_api_lists(granted: Granted, registry: LayerRegistry,
                                                     policy_role: str) -> None:
    listed = {c["id"] for c in api(granted, policy_role, "/collections")["collections"]} & set(registry)
    with connect_as(granted.db_url, USERS[policy_role]) as conn:
        assert readable_tables(conn, registry) == listed
        assert readable_tables(conn, registry, history=True) == listed
    assert listed and listed != set(registry)


@pytest.mark.parametrize("policy_role", sorted(USERS))
def test_user_reads_exactly_the_columns_the_api_shows(granted: Granted, registry: LayerRegistry,
                                                      policy_role: str) -> None:
    listed = {c["id"] for c in api(granted, policy_role, "/collections")["collections"]} & set(registry)
    with connect_as(granted.db_url, USERS[policy_role]) as conn:
        for layer_id in sorted(listed):
            spec = registry[layer_id]
            shown = set(api(granted, policy_role, f"/collections/{layer_id}/queryables")["properties"])
            fields = shown & set(spec.field_names)
            for table in (spec.id, spec.history_table):
                assert readable_columns(conn, spec.domain.value, table) - BOOKKEEPING == fields, (layer_id, table)


@pytest.mark.parametrize("policy_role", sorted(USERS))
def test_every_layer_opens_whole_where_qgis_users_are_sent(granted: Granted, policy: Policy, policy_role: str) -> None:
    """QGIS selects every column: db_roles.postgis_table names a relation that allows it, with the API's fields."""
    role = policy.roles[policy_role]
    with connect_as(granted.db_url, USERS[policy_role]) as conn:
        for layer_id, view in role.views.items():
            schema, table = db_roles.postgis_table(role, layer_id)
            cursor = conn.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(sql.Identifier(schema, table)))
            assert cursor.description is not None
            assert {c.name for c in cursor.description} - BOOKKEEPING == set(view.spec.field_names), layer_id


def test_masked_columns_are_refused_in_current_and_history_tables(granted: Granted) -> None:
    with connect_as(granted.db_url, USERS["planner"]) as conn:
        for table in ("pipelines", "pipelines_history"):
            name = sql.Identifier("pipeline", table)
            for column in ("pressure_class", "owner"):
                assert refused(conn, sql.SQL("SELECT {} FROM {} LIMIT 1").format(sql.Identifier(column), name))
            assert refused(conn, sql.SQL("SELECT * FROM {} LIMIT 1").format(name))
            assert conn.execute(sql.SQL("SELECT count(utility) FROM {}").format(name)).fetchone() is not None
    with connect_as(granted.db_url, USERS["analyst"]) as conn:  # the control: the analyst sees them
        assert conn.execute("SELECT count(owner) FROM pipeline.pipelines").fetchone() == (
            conn.execute("SELECT count(*) FROM pipeline.pipelines WHERE owner IS NOT NULL").fetchone())


@pytest.mark.parametrize("policy_role", ["analyst", "planner"])
def test_restricted_tables_are_refused(granted: Granted, policy_role: str) -> None:
    with connect_as(granted.db_url, USERS[policy_role]) as conn:
        for table in ("incidents", "incidents_history"):
            assert refused(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("policing", table)))
        assert refused(conn, sql.SQL("SELECT * FROM ops.api_keys"))
        assert refused(conn, sql.SQL("SELECT * FROM ops.audit_log"))


@pytest.mark.parametrize("policy_role", sorted(USERS))
def test_the_tiles_generalised_copies_are_refused_even_of_readable_layers(granted: Granted, registry: LayerRegistry,
                                                                        policy_role: str) -> None:
    # The copies (schema tiles, gis.tiles_generalised) hold every field and every row: a planner's masked
    # pressure class, the rows outside a row rule. Only the service reads them.
    with psycopg.connect(granted.db_url) as owner:
        copies = [r[0] for r in owner.execute("SELECT layer_id FROM tiles.generalised ORDER BY 1")]
    assert "pipelines" in copies
    with connect_as(granted.db_url, USERS[policy_role]) as conn:
        assert ("pipelines" in readable_tables(conn, registry)) == (policy_role != "policing_app")
        for layer_id in copies:
            assert refused(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("tiles", layer_id)))
        assert refused(conn, sql.SQL("SELECT * FROM tiles.generalised"))


@pytest.mark.parametrize("policy_role", sorted(USERS))
def test_user_sees_the_default_styles_of_its_layers_only(granted: Granted, registry: LayerRegistry,
                                                         policy_role: str) -> None:
    listed = {c["id"] for c in api(granted, policy_role, "/collections")["collections"]} & set(registry)
    with psycopg.connect(granted.db_url) as conn:
        styled = {r[0] for r in conn.execute("SELECT f_table_name FROM public.layer_styles")}
    with connect_as(granted.db_url, USERS[policy_role]) as conn:
        seen = conn.execute("SELECT f_table_schema, f_table_name FROM public.layer_styles").fetchall()
    assert {table for schema, table in seen if schema != f"gis_{policy_role}"} == listed & styled
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("policy_role", sorted(USERS))
def test_direct_reads_go_to_the_server_log(granted: Granted, policy_role: str) -> None:
    with connect_as(granted.db_url, USERS[policy_role]) as conn:
        assert conn.execute("SHOW log_statement").fetchone() == ("all",)


def test_direct_reads_of_non_public_layers_reach_the_audit_log_once(granted: Granted, registry: LayerRegistry,
                                                                     policy: Policy) -> None:
    user = USERS["analyst"]
    internal = next(i for i in sorted(policy.roles["analyst"].views) if registry[i].access.value != "public")
    public = next(i for i in sorted(policy.roles["analyst"].views) if registry[i].access.value == "public")
    marker = uuid.uuid4().hex
    with connect_as(granted.db_url, user) as conn:
        for layer_id in (internal, public):
            spec = registry[layer_id]
            conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE fid <> {}").format(
                sql.Identifier(spec.domain.value, spec.id), sql.Literal(marker)))

    def entries() -> list[dict[str, Any]]:
        found = api(granted, "auditor", "/audit", subject=user, limit=1000)["entries"]
        return [e for e in found if marker in e["query"].get("sql", "")]

    first = entries()
    assert [(e["layer_id"], e["method"], e["role"], e["action"]) for e in first] == [
        (internal, "postgres", "analyst", "read")]
    assert entries() == first  # read once from the log, not again on the next look


def test_users_cannot_write_layers(granted: Granted) -> None:
    with connect_as(granted.db_url, USERS["analyst"]) as conn:
        assert refused(conn, sql.SQL("UPDATE base.roads SET name = 'x'"))
        assert refused(conn, sql.SQL("DELETE FROM pipeline.pipelines"))
        assert refused(conn, sql.SQL("CREATE TABLE base.mine (id int)"))


# -- rows ------------------------------------------------------------------------------------------------

def inside_jurisdiction(db_url: str, station: str, table: str) -> set[str]:
    """Independently of the policy code: the fids of `table` inside the station's jurisdiction."""
    with psycopg.connect(db_url) as conn:
        return {r[0] for r in conn.execute(sql.SQL(
            "SELECT i.fid FROM {} i WHERE EXISTS (SELECT 1 FROM policing.police_jurisdictions j "
            "WHERE j.station = %s AND ST_Intersects(j.geom, i.geom))").format(sql.Identifier("policing", table)),
            (station,))}


def test_policing_user_sees_the_incidents_the_api_shows(granted: Granted) -> None:
    page = api(granted, "policing_app", "/collections/incidents/items", limit=10000)
    with connect_as(granted.db_url, USERS["policing_app"]) as conn:
        seen = {r[0] for r in conn.execute("SELECT fid FROM policing.incidents")}
    with psycopg.connect(granted.db_url) as conn:
        total = conn.execute("SELECT count(*) FROM policing.incidents").fetchone()
    assert seen == {f["id"] for f in page["features"]}
    assert seen == inside_jurisdiction(granted.db_url, granted.jurisdiction, "incidents")
    assert total is not None and 0 < len(seen) < total[0]


def test_history_rows_follow_the_same_rule(granted: Granted) -> None:
    with psycopg.connect(granted.db_url) as conn:  # two closed versions: one inside the jurisdiction, one not
        inside = inside_jurisdiction(granted.db_url, granted.jurisdiction, "incidents")
        for fid in (min(inside), conn.execute("SELECT min(fid) FROM policing.incidents WHERE NOT (fid = ANY(%s))",
                                              (list(inside),)).fetchone()[0]):
            conn.execute(
                "INSERT INTO policing.incidents_history SELECT fid, category, occurred_at, status, geom, valid_from, "
                "now(), row_hash, refresh_id - 1000, refresh_id FROM policing.incidents WHERE fid = %s", (fid,))
    expected = inside_jurisdiction(granted.db_url, granted.jurisdiction, "incidents_history")
    with connect_as(granted.db_url, USERS["policing_app"]) as conn:
        seen = {r[0] for r in conn.execute("SELECT fid FROM policing.incidents_history")}
    assert seen == expected == {min(inside)}


def test_claims_are_the_users_own_and_cannot_be_changed(granted: Granted) -> None:
    with connect_as(granted.db_url, USERS["policing_app"]) as conn:
        assert conn.execute("SELECT role_name, claim, value FROM ops.db_role_claims").fetchall() == [
            (USERS["policing_app"], "jurisdiction", granted.jurisdiction)]
        assert refused(conn, sql.SQL("UPDATE ops.db_role_claims SET value = 'x'"))
        assert refused(conn, sql.SQL("INSERT INTO ops.db_role_claims VALUES (current_user, 'jurisdiction', 'x')"))
        # Acting as the group itself carries no claims, so no rows (never more rows).
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier("gis_policing_app")))
        assert conn.execute("SELECT count(*) FROM policing.incidents").fetchone() == (0,)


def test_policing_user_without_the_claim_sees_no_incidents(granted: Granted, settings: Settings) -> None:
    grant_user(settings, granted.db_url, "policing_app", "dbg_police_unclaimed")
    with connect_as(granted.db_url, "dbg_police_unclaimed") as conn:
        assert conn.execute("SELECT count(*) FROM policing.incidents").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM policing.police_jurisdictions").fetchone()[0] > 0


def test_the_service_account_is_not_limited_by_row_security(granted: Granted) -> None:
    with psycopg.connect(granted.db_url) as conn:
        total = conn.execute("SELECT count(*) FROM policing.incidents").fetchone()
    assert api(granted, "admin", "/collections/incidents/items", limit=1)["numberMatched"] == total[0]


# -- the command: idempotent, revoking, recorded, refusing what is not its own ----------------------------

def privileges(db_url: str) -> list[tuple[Any, ...]]:
    """Every privilege and policy the managed group roles hold in the database, as a comparable list."""
    with psycopg.connect(db_url) as conn:
        tables = conn.execute(
            "SELECT c.relname, r.rolname, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
            "JOIN pg_roles r ON r.oid = a.grantee WHERE r.rolname LIKE 'gis\\_%' ORDER BY 1, 2, 3").fetchall()
        columns = conn.execute(
            "SELECT c.relname, at.attname, r.rolname FROM pg_attribute at JOIN pg_class c ON c.oid = at.attrelid, "
            "aclexplode(at.attacl) a JOIN pg_roles r ON r.oid = a.grantee WHERE r.rolname LIKE 'gis\\_%' "
            "ORDER BY 1, 2, 3").fetchall()
        policies = conn.execute("SELECT tablename, policyname, qual FROM pg_policies ORDER BY 1, 2").fetchall()
    return [*tables, *columns, *policies]


def test_regrant_is_idempotent_and_recorded(granted: Granted, settings: Settings) -> None:
    before = privileges(granted.db_url)
    with psycopg.connect(granted.db_url) as conn:
        audited = conn.execute("SELECT count(*) FROM ops.audit_log WHERE action = 'admin:db-grant'").fetchone()[0]
    assert gis(settings, granted.db_url, "db", "grant") == 0
    assert privileges(granted.db_url) == before
    with psycopg.connect(granted.db_url) as conn:
        last = conn.execute("SELECT subject, method, action, query FROM ops.audit_log ORDER BY audit_id DESC "
                            "LIMIT 1").fetchone()
        count = conn.execute("SELECT count(*) FROM ops.audit_log WHERE action = 'admin:db-grant'").fetchone()[0]
    assert count == audited + 1 >= 4  # the fixture's three users, and this run
    assert last[1:3] == ("cli", "admin:db-grant") and last[0].startswith("cli:")
    assert set(last[3]["roles"]) == {"gis_analyst", "gis_pipeline_editor", "gis_planner", "gis_policing_app"}


def test_regrant_revokes_what_the_policy_no_longer_grants(clone_db: Callable[[], str], settings: Settings,
                                                          tmp_path: Path) -> None:
    url = clone_db()
    grant_user(settings, url, "analyst", "dbg_analyst_revoked")
    grant_user(settings, url, "planner", "dbg_planner_revoked")
    raw = yaml.safe_load((settings.layers_dir / "access-policy.yml").read_text())
    raw["roles"]["analyst"]["mask"] = {"pipelines": ["owner"]}  # a new mask
    raw["roles"]["analyst"]["audiences"] = ["pipeline"]  # no planning layers any more
    raw["roles"]["planner"].pop("database")  # no database role any more
    changed = tmp_path / "policy.yml"
    changed.write_text(yaml.safe_dump(raw))
    assert gis(settings, url, "db", "grant", env={"GIS_AUTH_POLICY_FILE": str(changed)}) == 0
    with connect_as(url, "dbg_analyst_revoked") as conn:
        assert refused(conn, sql.SQL("SELECT owner FROM pipeline.pipelines"))
        assert not refused(conn, sql.SQL("SELECT utility FROM pipeline.pipelines"))
        assert refused(conn, sql.SQL("SELECT 1 FROM planning.basic_farmland"))
    with connect_as(url, "dbg_planner_revoked") as conn:
        assert refused(conn, sql.SQL("SELECT 1 FROM planning.land_use_plan"))
        assert refused(conn, sql.SQL("SELECT 1 FROM pipeline.pipelines"))


def test_remove_user_ends_its_access(clone_db: Callable[[], str], settings: Settings) -> None:
    url = clone_db()
    grant_user(settings, url, "analyst", "dbg_analyst_removed")
    assert gis(settings, url, "db", "grant", "--user", "dbg_analyst_removed", "--remove") == 0
    with pytest.raises(psycopg.OperationalError, match=r"password authentication failed|not permitted to log in"):
        connect_as(url, "dbg_analyst_removed")


def test_generated_password_is_printed_once_and_works(granted: Granted, settings: Settings,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert gis(settings, granted.db_url, "db", "grant", "--user", "dbg_generated", "--role", "analyst",
               "--reset-password") == 0
    password = capsys.readouterr().out.strip().splitlines()[-1]
    with connect_as(granted.db_url, "dbg_generated", password) as conn:
        assert conn.execute("SELECT count(*) FROM base.roads").fetchone()[0] > 0
    assert gis(settings, granted.db_url, "db", "grant", "--user", "dbg_generated", "--role", "analyst") == 0
    assert "password unchanged" in capsys.readouterr().out
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect_as(granted.db_url, "dbg_generated", "not-the-password")


@pytest.mark.parametrize("argv, message", [
    (["--user", "postgres", "--role", "analyst"], "was not made by 'gis db grant'"),
    (["--user", "gis_analyst", "--role", "analyst"], "must match"),
    (["--user", "Robert'); DROP TABLE x;--", "--role", "analyst"], "must match"),
    (["--user", "dbg_someone", "--role", "admin"], "not a policy role with 'database: true'"),
    (["--user", "dbg_someone"], "--user needs --role"),
    (["--role", "analyst"], "go with --user"),
    (["--user", "dbg_someone", "--role", "policing_app", "--claim", "jurisdiction"], "NAME=VALUE"),
])
def test_bad_input_is_one_line_and_changes_nothing(granted: Granted, settings: Settings,
                                                   capsys: pytest.CaptureFixture[str], argv: list[str],
                                                   message: str) -> None:
    before = privileges(granted.db_url)
    assert gis(settings, granted.db_url, "db", "grant", *argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("gis: ")
    assert privileges(granted.db_url) == before


def test_a_busy_table_fails_the_grant_readably_and_changes_nothing(granted: Granted, settings: Settings,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    before = privileges(granted.db_url)
    with psycopg.connect(granted.db_url) as reader:  # a long read of incidents, as the API or QGIS might hold
        reader.execute("SELECT count(*) FROM policing.incidents")
        assert gis(settings, granted.db_url, "db", "grant") == 1
    err = capsys.readouterr().err.strip()
    assert "stayed locked" in err and len(err.splitlines()) == 1
    assert privileges(granted.db_url) == before


def test_short_password_is_refused(granted: Granted, settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert gis(settings, granted.db_url, "db", "grant", "--user", "dbg_short", "--role", "analyst",
               "--password-stdin", stdin="short\n") == 1
    assert "at least 12 characters" in capsys.readouterr().err


# -- new columns and layers after `gis migrate` -------------------------------------------------------------

def test_migrate_grants_a_new_field_and_keeps_a_new_mask_unreadable(clone_db: Callable[[], str],
                                                                    settings: Settings, tmp_path: Path) -> None:
    url = clone_db()
    grant_user(settings, url, "analyst", "dbg_analyst_migrate")
    grant_user(settings, url, "planner", "dbg_planner_migrate")
    layers = tmp_path / "layers"
    shutil.copytree(settings.layers_dir, layers)
    pipelines = yaml.safe_load((layers / "pipeline" / "pipelines.yml").read_text())
    pipelines["fields"] += [{"name": "inspector", "type": "text"}, {"name": "inspected_on", "type": "date"}]
    (layers / "pipeline" / "pipelines.yml").write_text(yaml.safe_dump(pipelines, allow_unicode=True))
    policy = yaml.safe_load((layers / "access-policy.yml").read_text())
    policy["roles"]["planner"]["mask"]["pipelines"].append("inspector")  # masked from the start
    policy["roles"]["analyst"]["mask"] = {"pipelines": ["inspector"]}  # a role that had the table privilege
    (layers / "access-policy.yml").write_text(yaml.safe_dump(policy))
    road_works = yaml.safe_load((layers / "base" / "roads.yml").read_text())  # a new layer for analysts only
    road_works |= {"id": "road_works", "access": "internal", "audiences": ["analysts"]}
    (layers / "base" / "road_works.yml").write_text(yaml.safe_dump(road_works, allow_unicode=True))
    assert gis(settings, url, "migrate", env={"GIS_LAYERS_DIR": str(layers)}) == 0
    for user in ("dbg_analyst_migrate", "dbg_planner_migrate"):
        with connect_as(url, user) as conn:
            for table in ("pipelines", "pipelines_history"):
                name = sql.Identifier("pipeline", table)
                assert refused(conn, sql.SQL("SELECT inspector FROM {}").format(name)), (user, table)
                assert not refused(conn, sql.SQL("SELECT inspected_on FROM {}").format(name)), (user, table)
            for table in ("road_works", "road_works_history"):
                statement = sql.SQL("SELECT * FROM {}").format(sql.Identifier("base", table))
                assert refused(conn, statement) == (user == "dbg_planner_migrate"), (user, table)


def test_migrate_grants_nothing_where_nothing_was_granted(clone_db: Callable[[], str], settings: Settings,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    url = clone_db()
    assert gis(settings, url, "migrate") == 0
    assert "re-applied" not in capsys.readouterr().out
    assert [p for p in privileges(url) if p[1] != "own_claims"] == []


def test_a_column_added_outside_the_policy_is_not_readable_by_masked_roles(clone_db: Callable[[], str],
                                                                           settings: Settings) -> None:
    url = clone_db()
    grant_user(settings, url, "planner", "dbg_planner_altered")
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE pipeline.pipelines ADD COLUMN valve_key text")
    with connect_as(url, "dbg_planner_altered") as conn:
        assert refused(conn, sql.SQL("SELECT valve_key FROM pipeline.pipelines"))


# -- QGIS, connected straight to PostGIS with the analyst's credentials ------------------------------------

def run_qgis(script: str, db_url: str, user: str, *args: str, tmp_path: Path) -> dict[str, Any]:
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env |= {"QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(runtime), "PGPASSWORD": PASSWORD}
    command = [QGIS_PYTHON, str(QGIS_SCRIPTS / script), "--host", str(info.get("host", "127.0.0.1")),
               "--port", str(info.get("port", "5432")), "--dbname", str(info["dbname"]), "--user", user, *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180, check=False)
    assert result.stdout.strip(), f"no report from QGIS (is python3-qgis installed?): {result.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.qgis
def test_qgis_as_analyst_opens_a_granted_layer_with_its_style_and_not_a_restricted_one(
        granted: Granted, tmp_path: Path) -> None:
    before = max((e["audit_id"] for e in api(granted, "auditor", "/audit", limit=1)["entries"]), default=0)
    report = run_qgis("open_postgis_layer.py", granted.db_url, USERS["analyst"], "pipeline.pipelines",
                      "policing.incidents", tmp_path=tmp_path)
    layers = {layer["layer"]: layer for layer in report["layers"]}
    with psycopg.connect(granted.db_url) as conn:
        total = conn.execute("SELECT count(*) FROM pipeline.pipelines").fetchone()
    pipelines = layers["pipeline.pipelines"]
    assert pipelines["valid"] and pipelines["feature_count"] == total[0]
    assert (pipelines["renderer"], pipelines["attribute"]) == ("categorizedSymbol", "utility")
    assert pipelines["aliases"]["utility"] == "管线类别"
    assert not layers["policing.incidents"]["valid"]
    audited = api(granted, "auditor", "/audit", subject=USERS["analyst"], layer="pipelines", limit=1000)["entries"]
    assert [e for e in audited if e["audit_id"] > before and e["method"] == "postgres"], "QGIS's reads are audited"


def qgis_as(granted: Granted, policy_role: str, *layers: str, tmp_path: Path) -> dict[str, Any]:
    report = run_qgis("postgis_as_user.py", granted.db_url, USERS[policy_role], "--key", "fid", *layers,
                      tmp_path=tmp_path)
    return {"tables": set(report["tables"]), **{layer["layer"]: layer for layer in report["layers"]}}


@pytest.mark.qgis
def test_qgis_lists_exactly_the_analysts_layers(granted: Granted, registry: LayerRegistry, tmp_path: Path) -> None:
    listed = {c["id"] for c in api(granted, "analyst", "/collections")["collections"]} & set(registry)
    expected = {f"{registry[i].domain.value}.{t}" for i in listed for t in (i, registry[i].history_table)}
    assert qgis_as(granted, "analyst", tmp_path=tmp_path)["tables"] == expected


@pytest.mark.qgis
def test_qgis_as_planner_opens_pipelines_without_the_masked_fields(granted: Granted, registry: LayerRegistry,
                                                                   policy: Policy, tmp_path: Path) -> None:
    where = ".".join(db_roles.postgis_table(policy.roles["planner"], "pipelines"))
    seen = qgis_as(granted, "planner", where, "pipeline.pipelines", tmp_path=tmp_path)
    with psycopg.connect(granted.db_url) as conn:
        total = conn.execute("SELECT count(*) FROM pipeline.pipelines").fetchone()
    shown = set(api(granted, "planner", "/collections/pipelines/queryables")["properties"])
    view = seen[where]
    assert view["valid"] and view["feature_count"] == total[0]
    assert set(view["fields"]) - BOOKKEEPING == shown & set(registry["pipelines"].field_names)
    assert not {"pressure_class", "owner"} & set(view["fields"])
    assert (view["renderer"], view["attribute"]) == ("categorizedSymbol", "utility")  # the table's default style
    assert not seen["pipeline.pipelines"]["valid"]  # the table itself: QGIS selects every column
    assert {where, f"{where}_history"} <= seen["tables"]
    assert "pipeline.pipelines" not in seen["tables"] and "policing.incidents" not in seen["tables"]


@pytest.mark.qgis
def test_qgis_as_policing_user_counts_only_the_jurisdictions_incidents(granted: Granted, tmp_path: Path) -> None:
    incidents = qgis_as(granted, "policing_app", "policing.incidents", tmp_path=tmp_path)["policing.incidents"]
    inside = inside_jurisdiction(granted.db_url, granted.jurisdiction, "incidents")
    assert incidents["valid"] and incidents["feature_count"] == len(inside)
    assert (incidents["renderer"], incidents["attribute"]) == ("categorizedSymbol", "category")


def test_server_log_statements_are_parsed_with_their_continuation_lines() -> None:
    from gis.security.db_read_audit import parse_statements

    log = [
        "2026-12-04 20:41:23.368 UTC [4711] alice@gis LOG:  statement: SELECT fid",
        "\tFROM pipeline.pipelines",
        "2026-12-04 20:41:23.400 UTC [4711] alice@gis LOG:  execute <unnamed>: SELECT 1 FROM policing.incidents",
        "2026-12-04 20:41:23.401 UTC [4711] alice@gis DETAIL:  parameters: $1 = 'x'",
        "2026-12-04 20:41:24.000 UTC [4712] bob@other ERROR:  permission denied for table incidents",
        "2026-12-05 04:41:25.000 CST [4713] carol@gis LOG:  statement: SELECT 2",
    ]
    found = list(parse_statements(log))
    assert [(s.pid, s.user, s.database, s.text) for s in found] == [
        (4711, "alice", "gis", "SELECT fid\nFROM pipeline.pipelines"),
        (4711, "alice", "gis", "SELECT 1 FROM policing.incidents"),
        (4713, "carol", "gis", "SELECT 2"),
    ]
    assert found[0].at is not None and found[0].at.isoformat() == "2026-12-04T20:41:23.368000+00:00"
    assert found[2].at is None  # an abbreviation other than UTC is ambiguous (CST): the import time stands in
