"""How the general tile path finds its rows (gis.tiles.tile_sql), read from EXPLAIN, never from timing.

A tile's rows are found by their own predicates (the tile's box, the zoom's size limit, the time asked) before
they are ranked by size and capped. Walking the size index in rank order and testing each row against the
tile reads most of the layer for a tile in a dense place: an as-of z12 tile over the bench city read 235,000
index entries for 12,000 rows.
"""

import math
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from gis import identifiers as ids
from gis import tiles as mvt
from gis.features.temporal import parse_datetime
from gis.layers import LayerRegistry, LayerSpec

LAYER = "pipelines"
DRAWN = frozenset({"utility"})


@pytest.fixture(scope="module")
def conn(loaded_db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(loaded_db_url, autocommit=True) as connection:
        yield connection


def _tile_over_the_centre(conn: psycopg.Connection, spec: LayerSpec, z: int) -> mvt.Tile:
    row = conn.execute(sql.SQL("SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_Centroid(ST_Collect(ST_Centroid(geom))) c "
                               "FROM {}) s").format(ids.current_table(spec))).fetchone()
    assert row is not None
    lon, lat = float(row[0]), float(row[1])
    n = 1 << z
    return mvt.Tile(z, int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n))


def _nodes(conn: psycopg.Connection, query: sql.Composable, params: dict[str, object]) -> list[dict[str, Any]]:
    """Every node of the plan the statement ran (EXPLAIN ANALYZE), outermost first."""
    plan = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(query), params).fetchone()
    assert plan is not None
    found: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        found.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0][0]["Plan"])
    return found


@pytest.mark.parametrize("as_of", [False, True], ids=["now, general path", "as of a date"])
def test_a_tiles_rows_are_found_by_their_predicates_then_ranked(conn: psycopg.Connection, registry: LayerRegistry,
                                                                as_of: bool) -> None:
    spec = registry[LAYER]
    tile = _tile_over_the_centre(conn, spec, 12)
    time = parse_datetime("2100-01-01T00:00:00Z") if as_of else None
    query, params = mvt.tile_statement(spec, tile, time=time, drawn=DRAWN)
    with conn.transaction(force_rollback=True):
        conn.execute("UPDATE tiles.generalised SET version = NULL WHERE layer_id = %s", (spec.id,))  # no copy
        # Sorting made as costly as it can be: a plan that can take rows in rank order from an index will.
        conn.execute("SET LOCAL enable_sort = off")
        nodes = _nodes(conn, query, params)
    ran = [n for n in nodes if n.get("Actual Loops", 0) > 0]
    in_rank_order = [n for n in ran if n.get("Index Name", "").endswith("_size_idx")
                     and n.get("Scan Direction") == "Backward"]
    assert not in_rank_order, "the size index was walked in rank order"
    ranked = [n for n in ran if n["Node Type"] == "Sort" and any("st_xmax" in k for k in n.get("Sort Key", []))]
    assert ranked, "the rows found were not ranked by a sort of their own"
    scans = {n.get("Relation Name") for n in ran if "Relation Name" in n}
    assert scans >= ({spec.id, f"{spec.id}_history"} if as_of else {spec.id})
