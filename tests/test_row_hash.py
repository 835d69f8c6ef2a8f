"""One row hash for every writer: the refresh and the API's edits compute it in Python, the PostGIS edit trigger
(QGIS edits) in SQL, and they agree, so a delivery with the content a feature already has leaves it alone
whoever wrote that content. Real PostGIS, the real refresh job, an editor login from `gis db grant`.
"""

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyogrio
import pytest
from conftest import cloned_database
from psycopg import sql
from test_db_grant import connect_as, grant_user

from gis import identifiers as ids
from gis.layers import LayerRegistry
from gis.refresh.row_hash import hash_sql
from gis.refresh.runner import RefreshRequest, run_refresh
from gis.settings import Settings

EDITOR = "rh_pipeline_editor"
LAYER = "pipe_nodes"  # delivered and edited (maintained_by: both)


@pytest.fixture(scope="module")
def db(server_url: str, template_db: str, settings: Settings) -> Iterator[str]:
    with cloned_database(server_url, template_db, "gis_test_row_hash") as url:
        grant_user(settings, url, "pipeline_editor", EDITOR)
        yield url


def _mismatches(conn: psycopg.Connection, registry: LayerRegistry) -> dict[str, int]:
    found = {}
    for spec in registry.values():
        for table in (ids.current_table(spec), ids.history_table(spec)):
            row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE row_hash IS DISTINCT FROM {}").format(
                table, hash_sql(spec))).fetchone()
            if row and row[0]:
                found[table.as_string(conn)] = int(row[0])
    return found


def test_every_loaded_version_has_the_hash_sql_computes(db: str, registry: LayerRegistry) -> None:
    """Python's hash (the refresh that loaded every sample layer: text, integers, reals, booleans, dates,
    timestamps, validity, points, lines, polygons) equals SQL's on every stored row."""
    with psycopg.connect(db) as conn:
        total = sum(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ids.current_table(s))).fetchone()[0]
                    for s in registry.values())
        assert total > 1000
        assert _mismatches(conn, registry) == {}


def _delivery_with(source: Path, target: Path, fid: str, state: str) -> Path:
    """The layer's delivered file again, with one feature's state as the editor set it."""
    frame = pyogrio.read_dataframe(source, layer="pipe_nodes")
    assert (frame["node_id"] == fid).sum() == 1
    frame.loc[frame["node_id"] == fid, "state"] = state
    path = target / "pipelines.gpkg"
    pyogrio.write_dataframe(frame, path, layer="pipe_nodes")
    return path


def test_a_delivery_with_what_an_editor_wrote_in_qgis_makes_no_new_version(
        db: str, registry: LayerRegistry, settings: Settings, tmp_path: Path) -> None:
    spec = registry[LAYER]
    source = settings.samples_dir / spec.source.path
    with psycopg.connect(db) as conn:
        fid, state = conn.execute("SELECT fid, state FROM pipeline.pipe_nodes ORDER BY fid LIMIT 1").fetchone()
    new_state = "closed" if state != "closed" else "open"
    with connect_as(db, EDITOR) as editor:  # as QGIS writes it: an UPDATE by the editor's own login
        editor.execute("UPDATE pipeline.pipe_nodes SET state = %s WHERE fid = %s", (new_state, fid))
    query = ("SELECT refresh_id, row_hash, (SELECT count(*) FROM pipeline.pipe_nodes_history h WHERE h.fid = n.fid) "
             "FROM pipeline.pipe_nodes n WHERE fid = %s")
    with psycopg.connect(db) as conn:
        edited = conn.execute(query, (fid,)).fetchone()
        versions = conn.execute("SELECT count(*) FROM pipeline.pipe_nodes_history").fetchone()
        assert _mismatches(conn, registry) == {}
    result = run_refresh(db, RefreshRequest(spec, _delivery_with(source, tmp_path, fid, new_state),
                                            settings.city_extent, settings.rejects_dir, progress=False))
    assert (result.counts.inserted, result.counts.updated, result.counts.closed) == (0, 0, 0)
    assert result.conflicts == 0
    with psycopg.connect(db) as conn:
        assert conn.execute(query, (fid,)).fetchone() == edited
        assert conn.execute("SELECT count(*) FROM pipeline.pipe_nodes_history").fetchone() == versions
