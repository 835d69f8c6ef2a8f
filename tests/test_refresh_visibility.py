"""A refresh leaves the pages it wrote all-visible, so index-only scans stay index-only (gis.refresh.merge.vacuum).

The bounded numberMatched count of a filtered page is an index-only scan: it reads the heap for every entry
whose page the visibility map does not mark all-visible. Read from the database's own plans (EXPLAIN ANALYZE's
Heap Fetches), never from timings.
"""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import psycopg
from psycopg import sql

from gis import identifiers as ids
from gis.features.params import parse_items_query
from gis.features.queries import items_statement
from gis.layers import LayerRegistry, LayerSpec
from gis.refresh.runner import RefreshRequest, run_refresh
from gis.settings import Settings

SEWERS = {"filter": "utility = 'sewer'", "limit": "10"}


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def count_scans(url: str, spec: LayerSpec) -> list[tuple[int, int]]:
    """(rows, heap fetches) of each index-only scan of the sewer page's statement. Sequential and bitmap scans
    are turned off, so the small sample is read as the city's layer is: the count from its (utility, fid) index."""
    statement = items_statement(spec, parse_items_query(spec, SEWERS))
    with psycopg.connect(url) as conn:
        query = statement.query if isinstance(statement.query, bytes) else statement.query.as_bytes(conn)
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        row = conn.execute(b"EXPLAIN (ANALYZE, FORMAT JSON) " + query, statement.params).fetchone()
    assert row is not None
    return [(n["Actual Rows"], n["Heap Fetches"]) for n in _nodes(row[0][0]["Plan"])
            if n["Node Type"] == "Index Only Scan"]


def refresh(url: str, spec: LayerSpec, settings: Settings, path: Path) -> None:
    # force: the first-load test delivers the file the template was loaded from
    run_refresh(url, RefreshRequest(spec, path, settings.city_extent, settings.rejects_dir, force=True, progress=False))


def test_first_load_leaves_the_count_reading_no_heap_page(clone_db: Callable[[], str], registry: LayerRegistry,
                                                         settings: Settings) -> None:
    url, spec = clone_db(), registry["pipelines"]
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("TRUNCATE {}, {}").format(ids.current_table(spec), ids.history_table(spec)))
    refresh(url, spec, settings, settings.samples_dir / spec.source.path)  # an empty layer: the first-load path
    scans = count_scans(url, spec)
    assert scans and all(rows > 0 for rows, _ in scans)
    assert [fetches for _, fetches in scans] == [0] * len(scans)


def test_changed_delivery_leaves_the_count_reading_no_heap_page(
        clone_db: Callable[[], str], registry: LayerRegistry, settings: Settings, tmp_path: Path) -> None:
    url, spec = clone_db(), registry["pipelines"]
    source = settings.samples_dir / spec.source.path
    frame = gpd.read_file(source, layer=spec.source.layer)
    sewer = frame["utility"] == "sewer"
    frame.loc[sewer, "diameter_mm"] = frame.loc[sewer, "diameter_mm"] + 1  # every sewer segment changes
    changed = tmp_path / "pipelines.gpkg"
    frame.to_file(changed, layer=spec.source.layer, driver="GPKG")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("VACUUM {}").format(ids.current_table(spec)))  # all-visible before the refresh
    assert [fetches for _, fetches in count_scans(url, spec)] == [0]
    refresh(url, spec, settings, changed)
    with psycopg.connect(url) as conn:
        updated = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE utility = 'sewer' AND refresh_id = "
                                       "(SELECT max(refresh_id) FROM ops.refresh_log)").format(
            ids.current_table(spec))).fetchone()
    assert updated is not None and updated[0] == int(sewer.sum())  # the refresh rewrote every sewer row
    scans = count_scans(url, spec)
    assert scans and all(rows > 0 for rows, _ in scans)
    assert [fetches for _, fetches in scans] == [0] * len(scans)
