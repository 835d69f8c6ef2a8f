"""A delivery that leaves a row's valid_from empty: the row is stored, and hashed, with the start it gets (its
current version's when nothing else changed, else the delivery's time), so Python's hash (the refresh) and
SQL's (the QGIS edit trigger, `gis migrate`) of the stored row agree, and the same delivery again changes
nothing. Real PostGIS, the real refresh job, a real Shapefile."""

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyogrio
import shapely
from psycopg import sql
from pyogrio import raw

from gis import identifiers as ids
from gis.layers import LayerRegistry
from gis.refresh.row_hash import hash_sql
from gis.refresh.runner import RefreshRequest, RefreshResult, run_refresh
from gis.settings import Settings

LAYER = "land_use_plan"  # source.valid_from: EFFECTIVE
DATES = ("APPROVED", "EFFECTIVE", "EXPIRES")


def _values(column: pd.Series) -> np.ndarray:
    if column.name in DATES:
        return column.to_numpy().astype("datetime64[D]")
    return column.to_numpy() if column.dtype == "float64" else column.to_numpy(dtype=object)


def _delivery(source: Path, target: Path, empty: list[str], renamed: list[str]) -> Path:
    """The delivered Shapefile again, EFFECTIVE blank on `empty` (written raw, so dates stay DBF dates)."""
    frame = pyogrio.read_dataframe(source, encoding="GBK")
    frame.loc[frame["PARCEL_ID"].isin(empty), "EFFECTIVE"] = pd.NaT
    frame.loc[frame["PARCEL_ID"].isin(renamed), "LU_NAME"] = "改编后的用地"
    fields = [c for c in frame.columns if c != "geometry"]
    data = [_values(frame[c]) for c in fields]
    target.mkdir(parents=True, exist_ok=True)
    path = target / "land_use_plan.shp"
    raw.write(path, shapely.to_wkb(frame.geometry.to_numpy()), data, fields=fields, geometry_type="Polygon",
              crs=frame.crs.to_wkt(), encoding="GBK", driver="ESRI Shapefile")
    return path


def _refresh(url: str, settings: Settings, registry: LayerRegistry, path: Path) -> RefreshResult:
    return run_refresh(url, RefreshRequest(registry[LAYER], path, settings.city_extent, settings.rejects_dir,
                                           force=True, progress=False))


def _rows(conn: psycopg.Connection, registry: LayerRegistry, fids: list[str]) -> dict[str, tuple[Any, ...]]:
    spec = registry[LAYER]
    return {r[0]: tuple(r[1:]) for r in conn.execute(sql.SQL(
        "SELECT fid, valid_from, refresh_id, row_hash, row_hash = {} FROM {} WHERE fid = ANY(%s)").format(
        hash_sql(spec), ids.current_table(spec)), (fids,)).fetchall()}


def test_rows_delivered_without_a_start_hash_alike_in_python_and_sql(
        clone_db: Callable[[], str], settings: Settings, registry: LayerRegistry, tmp_path: Path) -> None:
    url = clone_db()
    spec = registry[LAYER]
    source = settings.samples_dir / spec.source.path
    with psycopg.connect(url) as conn:
        fids = [r[0] for r in conn.execute("SELECT fid FROM planning.land_use_plan ORDER BY fid LIMIT 2")]
        before = _rows(conn, registry, fids)
    same, renamed = fids
    # One row only loses its start; the other loses it and gets a new name (a new version).
    path = _delivery(source, tmp_path / "first", [same, renamed], [renamed])
    result = _refresh(url, settings, registry, path)
    with psycopg.connect(url) as conn:
        after = _rows(conn, registry, fids)
        closed = conn.execute("SELECT valid_to FROM planning.land_use_plan_history WHERE fid = %s "
                              "AND closed_refresh_id = %s", (renamed, result.refresh_id)).fetchone()
    assert (result.counts.inserted, result.counts.updated, result.counts.closed) == (0, 1, 0)
    assert after[same] == before[same]  # nothing new delivered: the version and its start stay
    new_start, refresh_id, _, agrees = after[renamed]
    assert refresh_id == result.refresh_id
    assert isinstance(new_start, datetime) and new_start > before[renamed][0]
    assert closed == (new_start,)  # the old version ends where the new one starts: the delivery's time
    assert agrees is True  # SQL's hash of the stored row is the hash the refresh computed (it differed before)
    # The same delivery again: every row equal to its version, nothing rewritten.
    again = _refresh(url, settings, registry, _delivery(source, tmp_path / "again", [same, renamed], [renamed]))
    with psycopg.connect(url) as conn:
        assert _rows(conn, registry, fids) == after
    assert (again.counts.inserted, again.counts.updated, again.counts.closed) == (0, 0, 0)
