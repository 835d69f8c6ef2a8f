"""Editing straight in PostGIS with an editor login from `gis db grant`: the database keeps history, validates and
audits (triggers), psycopg and QGIS alike; the API's /history then shows both versions.

The module grants in a clone of its own and serves it; the login role is the cluster's (roles are global), named
here so no other module uses it.
"""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import TEST_KEYS, cloned_database
from test_db_grant import connect_as, grant_user, run_qgis

from gis.settings import Settings

EDITOR = "dbe_pipeline_editor"


@dataclass(frozen=True)
class Edited:
    db_url: str
    api_url: str


@pytest.fixture(scope="module")
def edited(server_url: str, template_db: str, settings: Settings,
           serve_api: Callable[[str], AbstractContextManager[str]]) -> Iterator[Edited]:
    with cloned_database(server_url, template_db, "gis_test_edits_db") as url:
        grant_user(settings, url, "pipeline_editor", EDITOR)
        with serve_api(url) as api:
            yield Edited(url, api)


def nodes(url: str, n: int) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT fid FROM pipeline.pipe_nodes ORDER BY fid LIMIT %s", (n,))]


def state_of(url: str, fid: str) -> tuple[object, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT state, ST_AsText(geom), refresh_id, (SELECT count(*) FROM "
                           "pipeline.pipe_nodes_history h WHERE h.fid = n.fid) FROM pipeline.pipe_nodes n "
                           "WHERE fid = %s", (fid,)).fetchone()
    assert row is not None
    return tuple(row)


def history(edited: Edited, fid: str) -> list[dict[str, object]]:
    answer = httpx.get(f"{edited.api_url}/collections/pipe_nodes/items/{fid}/history",
                       headers={"X-API-Key": TEST_KEYS["admin"]}, timeout=60)
    assert answer.status_code == 200, answer.text
    features: list[dict[str, object]] = answer.json()["features"]
    return features


def test_an_update_keeps_history_and_is_logged_with_who_and_why(edited: Edited) -> None:
    fid = nodes(edited.db_url, 1)[0]
    before = state_of(edited.db_url, fid)
    new_state = "closed" if before[0] != "closed" else "open"
    with connect_as(edited.db_url, EDITOR) as conn, conn.transaction():
        conn.execute("SET LOCAL gis.edit_reason = 'valve found shut on site'")
        conn.execute("UPDATE pipeline.pipe_nodes SET state = %s WHERE fid = %s", (new_state, fid))
    after = state_of(edited.db_url, fid)
    assert after[0] == new_state and after[2] != before[2] and after[3] == before[3] + 1
    versions = history(edited, fid)
    assert [v["properties"]["state"] for v in versions][-2:] == [before[0], new_state]  # type: ignore[index]
    with psycopg.connect(edited.db_url) as conn:
        logged = conn.execute("SELECT subject, role, method, operation, reason, refresh_id FROM ops.edits "
                              "WHERE fid = %s", (fid,)).fetchall()
        audited = conn.execute("SELECT action, role, method FROM ops.audit_log WHERE layer_id = 'pipe_nodes' "
                               "AND query->>'fid' = %s", (fid,)).fetchall()
        version = conn.execute("SELECT changed_refresh_id FROM ops.layer_stats WHERE layer_id = 'pipe_nodes'"
                               ).fetchone()
    assert logged == [(f"db:{EDITOR}", "pipeline_editor", "database", "update", "valve found shut on site",
                       after[2])]
    assert audited == [("edit:update", "pipeline_editor", "database")]
    assert version == (after[2],)


@pytest.mark.parametrize(("statement", "field"), [
    ("UPDATE pipeline.pipe_nodes SET node_type = 'tap' WHERE fid = %s", "node_type"),
    ("UPDATE pipeline.pipe_nodes SET utility = NULL WHERE fid = %s", "utility"),
    ("UPDATE pipeline.pipe_nodes SET geom = ST_SetSRID(ST_MakePoint(100, 30), 4490) WHERE fid = %s", "geometry"),
])
def test_a_refused_edit_names_the_field_and_leaves_the_layer_as_it_was(edited: Edited, statement: str,
                                                                       field: str) -> None:
    fid = nodes(edited.db_url, 2)[1]
    before = state_of(edited.db_url, fid)
    with connect_as(edited.db_url, EDITOR) as conn, pytest.raises(psycopg.errors.CheckViolation) as refused:
        conn.execute(statement, (fid,))  # type: ignore[arg-type]
    assert str(refused.value).startswith(f"{field}:")
    assert state_of(edited.db_url, fid) == before


def test_the_editor_writes_only_the_layers_it_is_granted(edited: Edited) -> None:
    with connect_as(edited.db_url, EDITOR) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE pipeline.pipelines SET owner = 'x' WHERE fid = (SELECT min(fid) FROM pipeline.pipelines)")
    with connect_as(edited.db_url, EDITOR) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM pipeline.pipe_nodes_history")


def test_a_delete_closes_the_feature_into_history(edited: Edited) -> None:
    fid = nodes(edited.db_url, 3)[2]
    with connect_as(edited.db_url, EDITOR) as conn:
        assert conn.execute("DELETE FROM pipeline.pipe_nodes WHERE fid = %s", (fid,)).rowcount == 1
    versions = history(edited, fid)
    assert versions[-1]["properties"]["valid_to"] is not None  # type: ignore[index]
    assert httpx.get(f"{edited.api_url}/collections/pipe_nodes/items/{fid}", headers={
        "X-API-Key": TEST_KEYS["admin"]}, timeout=60).status_code == 404


@pytest.mark.qgis
def test_qgis_moves_a_node_and_changes_an_attribute_with_history(edited: Edited, tmp_path: Path) -> None:
    fid = nodes(edited.db_url, 4)[3]
    before = state_of(edited.db_url, fid)
    new_state = "closed" if before[0] != "closed" else "open"
    report = run_qgis("edit_postgis_layer.py", edited.db_url, EDITOR, "pipeline.pipe_nodes", fid,
                      "--move", "0.0005", "0.0003", "--set", f"state={new_state}", tmp_path=tmp_path)
    assert report["committed"], report
    after = state_of(edited.db_url, fid)
    assert after[0] == new_state and after[1] != before[1]
    versions = history(edited, fid)
    assert len(versions) == 2  # QGIS writes geometry and attributes apart; one commit is one version
    assert versions[0]["properties"]["state"] == before[0]  # type: ignore[index]
    assert versions[-1]["properties"]["state"] == new_state  # type: ignore[index]
    assert versions[0]["geometry"] != versions[-1]["geometry"]


@pytest.mark.qgis
def test_qgis_commit_of_a_bad_value_is_refused_and_changes_nothing(edited: Edited, tmp_path: Path) -> None:
    fid = nodes(edited.db_url, 5)[4]
    before = state_of(edited.db_url, fid)
    report = run_qgis("edit_postgis_layer.py", edited.db_url, EDITOR, "pipeline.pipe_nodes", fid,
                      "--move", "0.0005", "0.0003", "--set", "node_type=tap", tmp_path=tmp_path)
    assert report["committed"] is False and any("node_type" in e for e in report["errors"]), report
    assert state_of(edited.db_url, fid) == before

