"""Deliveries and edits together: a refresh reports each feature edited after its delivery was cut, settles it
by the layer's declared rule, and never loses a version (the real refresh job on a clone of the template)."""

import csv
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from gis.edits.store import Editor, EditRequest, Operation, apply_edit, connect_primary
from gis.errors import SourceError
from gis.layers import LayerRegistry
from gis.refresh.runner import RefreshRequest, RefreshResult, run_refresh
from gis.settings import Settings

EDITOR = Editor("test:editor", "admin", "cli")


def edit(url: str, registry: LayerRegistry, settings: Settings, layer: str, operation: Operation, fid: str,
         body: dict[str, object] | None = None) -> None:
    with connect_primary(url, EDITOR) as conn:
        apply_edit(conn, registry, settings.city_extent, EditRequest(registry[layer], operation, EDITOR, fid, body,
                                                                   if_match="*"))


def refresh(url: str, registry: LayerRegistry, settings: Settings, layer: str, tmp_path: Path,
            cut_at: datetime | None = None) -> RefreshResult:
    spec = registry[layer]
    return run_refresh(url, RefreshRequest(spec, settings.samples_dir / spec.source.path, settings.city_extent,
                                           tmp_path, progress=False, cut_at=cut_at))


def one(url: str, statement: str, *params: object) -> tuple[object, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(statement, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return tuple(row)


def test_keep_edit_reports_and_keeps_an_edit_made_after_the_cut(clone_db: Callable[[], str], registry: LayerRegistry,
                                                                 settings: Settings, tmp_path: Path) -> None:
    url = clone_db()
    changed, deleted = (r[0] for r in _fids(url, "pipeline.pipe_nodes", 2))
    state = one(url, "SELECT state FROM pipeline.pipe_nodes WHERE fid = %s", changed)[0]
    new_state = "closed" if state != "closed" else "open"
    edit(url, registry, settings, "pipe_nodes", Operation.update, changed, {"properties": {"state": new_state}})
    edit(url, registry, settings, "pipe_nodes", Operation.delete, deleted)

    result = refresh(url, registry, settings, "pipe_nodes", tmp_path)  # the sample was cut before the edits

    assert result.conflicts == 2
    assert one(url, "SELECT state FROM pipeline.pipe_nodes WHERE fid = %s", changed)[0] == new_state
    assert one(url, "SELECT count(*) FROM pipeline.pipe_nodes WHERE fid = %s", deleted)[0] == 0
    logged = one(url, "SELECT conflicts, conflict_details FROM ops.refresh_log WHERE refresh_id = %s",
                 result.refresh_id)
    assert logged[0] == 2
    assert {(d["fid"], d["delivery"], d["resolution"]) for d in logged[1]} == {  # type: ignore[attr-defined]
        (changed, "overwrite", "kept_edit"), (deleted, "restore", "kept_edit")}
    assert result.conflicts_path is not None
    with result.conflicts_path.open(encoding="utf-8") as stream:
        assert {row["fid"] for row in csv.DictReader(stream)} == {changed, deleted}


def test_take_delivery_overwrites_but_reports_and_keeps_the_edit_in_history(
        clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, tmp_path: Path) -> None:
    url = clone_db()
    fid = _fids(url, "policing.incidents", 1)[0][0]
    delivered = one(url, "SELECT status FROM policing.incidents WHERE fid = %s", fid)[0]
    edited = "closed" if delivered != "closed" else "open"
    edit(url, registry, settings, "incidents", Operation.update, fid, {"properties": {"status": edited}})

    result = refresh(url, registry, settings, "incidents", tmp_path)

    assert result.conflicts == 1
    assert one(url, "SELECT status FROM policing.incidents WHERE fid = %s", fid)[0] == delivered
    assert one(url, "SELECT count(*) FROM policing.incidents_history WHERE fid = %s AND status = %s",
               fid, edited)[0] == 1
    details = one(url, "SELECT conflict_details FROM ops.refresh_log WHERE refresh_id = %s", result.refresh_id)[0]
    assert details[0]["fid"] == fid and details[0]["resolution"] == "took_delivery"  # type: ignore[index]


def test_an_edit_before_the_cut_is_no_conflict(clone_db: Callable[[], str], registry: LayerRegistry,
                                               settings: Settings, tmp_path: Path) -> None:
    url = clone_db()
    fid = _fids(url, "pipeline.pipe_nodes", 1)[0][0]
    before = one(url, "SELECT state FROM pipeline.pipe_nodes WHERE fid = %s", fid)[0]
    edit(url, registry, settings, "pipe_nodes", Operation.update, fid,
         {"properties": {"state": "closed" if before != "closed" else "open"}})
    result = refresh(url, registry, settings, "pipe_nodes", tmp_path, cut_at=datetime.now(UTC) + timedelta(minutes=1))
    assert result.conflicts == 0 and result.counts.updated == 1
    assert one(url, "SELECT state FROM pipeline.pipe_nodes WHERE fid = %s", fid)[0] == before


def test_a_layer_kept_by_edits_only_takes_no_delivery(registry: LayerRegistry, settings: Settings,
                                                      tmp_path: Path) -> None:
    spec = registry["pipe_nodes"]
    edits_only = spec.model_copy(update={"editing": spec.editing.model_copy(update={"maintained_by": "edits"})})
    with pytest.raises(SourceError, match="maintained by edits only"):
        run_refresh("postgresql://127.0.0.1:1/none", RefreshRequest(
            edits_only, settings.samples_dir / spec.source.path, settings.city_extent, tmp_path, progress=False))


def _fids(url: str, table: str, n: int) -> list[tuple[str]]:
    schema, name = table.split(".")
    from psycopg import sql

    with psycopg.connect(url) as conn:
        return conn.execute(sql.SQL("SELECT fid FROM {} ORDER BY fid LIMIT %s").format(
            sql.Identifier(schema, name)), (n,)).fetchall()
