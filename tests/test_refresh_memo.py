"""The refresh memo (gis/refresh/memo.py): rows delivered again as they were are not normalised again, and the
layer comes out exactly as a refresh that normalises every row leaves it."""

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psycopg
import pyarrow as pa
import pyogrio
import pytest
from psycopg import sql

from gis import identifiers as ids
from gis.layers import LayerRegistry, LayerSpec
from gis.refresh import memo, merge, runner
from gis.refresh.runner import RefreshRequest, RefreshResult, run_refresh
from gis.settings import Settings


def _refresh(url: str, spec: LayerSpec, settings: Settings, source: Path | None = None, force: bool = False,
             extent: tuple[float, float, float, float] | None = None) -> RefreshResult:
    path = source or settings.samples_dir / spec.source.path
    return run_refresh(url, RefreshRequest(spec, path, extent or settings.city_extent, settings.rejects_dir, force,
                                           False))


@pytest.fixture
def normalised(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows each batch the refresh normalised had (the real normalising runs, and is counted)."""
    counts: list[int] = []
    real = runner.normalise_batch

    def counted(batch, *args):  # type: ignore[no-untyped-def]
        counts.append(len(batch.attributes))
        return real(batch, *args)

    monkeypatch.setattr(runner, "normalise_batch", counted)
    return counts


def _versions(url: str, spec: LayerSpec) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every current row (fid, hash, each field, the geometry) and every closed version (fid, hash)."""
    fields = sql.SQL(", ").join(ids.field_columns(spec))
    with psycopg.connect(url) as conn:
        current = conn.execute(sql.SQL("SELECT fid, row_hash, {}, ST_AsBinary(geom) FROM {} ORDER BY fid").format(
            fields, ids.current_table(spec))).fetchall()
        history = conn.execute(sql.SQL("SELECT fid, row_hash FROM {} ORDER BY fid, valid_from").format(
            ids.history_table(spec))).fetchall()
    return current, history


def _changed_pipelines(settings: Settings, spec: LayerSpec, out: Path) -> Path:
    """The pipelines delivery with two segments re-surveyed, one gone and one new."""
    source = settings.samples_dir / spec.source.path
    frame = pyogrio.read_dataframe(source, layer=spec.source.layer)
    frame.loc[frame.index[[3, 7]], "owner"] = "复测"
    added = frame.iloc[[5]].copy()
    added[spec.source.fid] = "NEW-SEG-1"
    frame = pd.concat([frame.drop(index=frame.index[1]), added], ignore_index=True)
    pyogrio.write_dataframe(frame, out, layer=spec.source.layer, driver="GPKG")
    return out


def test_forced_rerun_of_an_unchanged_file_normalises_no_row(
    clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, normalised: list[int]
) -> None:
    url, spec = clone_db(), registry["pipelines"]
    before = _versions(url, spec)
    result = _refresh(url, spec, settings, force=True)
    assert sum(normalised) == 0
    assert (result.counts.inserted, result.counts.updated, result.counts.closed) == (0, 0, 0)
    assert result.counts.unchanged == len(before[0])
    assert _versions(url, spec) == before


def test_a_memo_made_under_another_key_vouches_for_nothing(
    clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, normalised: list[int]
) -> None:
    """The city extent is part of what normalising depends on: under another, every row is normalised again."""
    url, spec = clone_db(), registry["pipelines"]
    xmin, ymin, xmax, ymax = settings.city_extent
    result = _refresh(url, spec, settings, force=True, extent=(xmin - 0.01, ymin, xmax, ymax))
    assert sum(normalised) == result.counts.unchanged > 0


def test_a_row_edited_since_is_normalised_again_and_takes_the_delivered_version(
    clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, normalised: list[int]
) -> None:
    """The memo vouches for a source row only while the current version has the hash it names: a feature edited
    after the refresh is compared with the delivery again, not taken as unchanged."""
    url, spec = clone_db(), registry["pipelines"]
    before = _versions(url, spec)
    fid = str(before[0][10][0])
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE pipeline.pipelines SET owner = 'edited', row_hash = '\\x0102030405060708' "
                     "WHERE fid = %s", (fid,))
    result = _refresh(url, spec, settings, force=True)
    assert sum(normalised) == 1
    assert (result.counts.updated, result.counts.unchanged) == (1, len(before[0]) - 1)
    current, history = _versions(url, spec)
    assert current == before[0]
    assert (fid, b"\x01\x02\x03\x04\x05\x06\x07\x08") in history


def test_changed_delivery_gives_the_same_layer_with_and_without_the_memo(
    clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, normalised: list[int],
    tmp_path: Path
) -> None:
    spec = registry["pipelines"]
    delivery = _changed_pipelines(settings, spec, tmp_path / "pipelines.gpkg")
    with_memo, without = clone_db(), clone_db()
    with psycopg.connect(without) as conn:
        conn.execute("DELETE FROM ops.refresh_memo")
    counts = [_refresh(url, spec, settings, source=delivery).counts for url in (without, with_memo)]
    assert counts[0] == counts[1]
    assert (counts[1].inserted, counts[1].updated, counts[1].closed) == (1, 2, 1)
    rows = counts[1].unchanged + counts[1].updated + counts[1].inserted
    assert sum(normalised) == rows + 3  # every row without the memo, then the two changed and the new one
    assert _versions(with_memo, spec) == _versions(without, spec)


def test_text_delivered_as_floating_point_is_never_vouched_for(registry: LayerRegistry) -> None:
    """A text field read as numbers is written without ".0" only when its whole batch is whole numbers, so its
    normalised value is not the row's alone."""
    spec = registry["pipelines"]
    columns = {name: name for name in ("fid", *spec.field_names)} | {"fid": spec.source.fid}
    text = next(f.name for f in spec.fields if f.type.value == "text")
    as_text = pa.schema([pa.field(columns[name], pa.string()) for name in columns])
    as_numbers = pa.schema([pa.field(columns[name], pa.float64() if name == text else pa.string())
                            for name in columns])
    assert memo.applies(spec, columns, as_text)
    assert not memo.applies(spec, columns, as_numbers)


def test_the_refresh_transaction_compresses_its_wal_where_the_role_may(clone_db: Callable[[], str]) -> None:
    url = clone_db()
    with psycopg.connect(url) as conn:
        merge.compress_wal(conn)
        assert conn.execute("SHOW wal_compression").fetchone() == ("lz4",)
        conn.rollback()
        assert conn.execute("SHOW wal_compression").fetchone() == ("off",)
        conn.execute("CREATE ROLE gis_test_no_wal_settings")
        conn.execute("SET LOCAL ROLE gis_test_no_wal_settings")
        merge.compress_wal(conn)  # may not: no error, nothing set
        assert conn.execute("SHOW wal_compression").fetchone() == ("off",)
        conn.rollback()


def test_a_first_load_copies_its_rows_frozen_so_the_vacuum_after_it_visits_no_page(
    clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings
) -> None:
    """Rows copied into the emptied layer are written frozen and all-visible: a VACUUM (which freezes nothing
    this young) would leave them all-visible but not frozen."""
    url, spec = clone_db(), registry["pipelines"]
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM pipeline.pipelines")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_visibility")
    result = _refresh(url, spec, settings, force=True)  # the file is the one loaded: past its checksum
    assert result.counts.inserted > 0 and result.counts.updated == 0
    with psycopg.connect(url) as conn:
        pages = conn.execute("SELECT count(*), count(*) FILTER (WHERE all_visible AND all_frozen) "
                             "FROM pg_visibility_map('pipeline.pipelines')").fetchone()
    assert pages is not None and pages[0] > 0
    assert pages[1] == pages[0]
