"""A caller's CQL2 filter never runs on a row its row rule hides: no answer, count or error comes from such a row.

The planner orders a statement's conditions by cost, so a cheap filter used to run before an expensive spatial
rule (ST_Intersects). Here the filter compares a date field with an instant (each date is cast to a timestamp)
and one hidden row, inside the rule's box but outside its area, holds a date past the timestamp range: were the
filter evaluated on it, the statement would fail ("date out of range for timestamp"), which told the caller that
such a row exists. Real PostGIS, real statements of the Features API and the downloads, with and without that
row; the answer must be the same.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from conftest import cloned_database
from psycopg import sql

from gis import identifiers as ids
from gis.downloads import Format, export_statement
from gis.features.params import ItemsQuery
from gis.features.queries import items_statement
from gis.features.temporal import TimeRange
from gis.layers import LayerRegistry, LayerSpec

LAYER = "pipe_sensors"
# The caller's filter: installed after an instant (each installed_on date is cast to its UTC midnight).
AFTER_2000 = {"op": "t_after", "args": [{"property": "installed_on"}, {"timestamp": "2000-01-01T00:00:00Z"}]}
PAST_TIMESTAMPS = "5000000-01-01"  # a valid date, beyond the last timestamp (294276 AD)


@pytest.fixture(scope="module")
def db(server_url: str, template_db: str) -> Iterator[str]:
    with cloned_database(server_url, template_db, "gis_test_row_fence") as url:
        yield url


def _triangle(conn: psycopg.Connection, spec: LayerSpec) -> tuple[dict[str, Any], str]:
    """A row rule (the area: a triangle over half the layer's box) and a hidden fid moved into the box's other
    half, where the rule's index test (the box) passes and its exact test (the triangle) fails."""
    table = ids.current_table(spec)
    row = conn.execute(sql.SQL("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                               "(SELECT ST_Extent(geom) AS e FROM {}) b").format(table)).fetchone()
    assert row is not None
    x0, y0, x1, y1 = (float(v) for v in row)
    area = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x0, y1], [x0, y0]]]}
    hidden = conn.execute(sql.SQL("SELECT fid FROM {} ORDER BY fid LIMIT 1").format(table)).fetchone()
    assert hidden is not None
    inside_box = (x0 + 0.9 * (x1 - x0), y0 + 0.9 * (y1 - y0))  # above the triangle's diagonal
    conn.execute(sql.SQL("UPDATE {} SET geom = ST_SetSRID(ST_MakePoint(%s, %s), 4490), installed_on = %s "
                         "WHERE fid = %s").format(table), (*inside_box, "2010-01-01", hidden[0]))
    conn.execute(sql.SQL("ANALYZE {}").format(table))
    return {"op": "s_intersects", "args": [{"property": "geometry"}, area]}, str(hidden[0])


def _answers(conn: psycopg.Connection, spec: LayerSpec, rule: dict[str, Any]) -> list[Any]:
    """The items page (features, returned, more, count), a versioned read and a download under the rule."""
    out = []
    for q in (ItemsQuery(limit=50, filter=AFTER_2000, rows=rule),
              ItemsQuery(limit=50, filter=AFTER_2000, rows=rule,
                         time=TimeRange(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)))):
        statement = items_statement(spec, q)
        out.append(conn.execute(statement.query, statement.params).fetchone())
    download = export_statement(spec, ItemsQuery(filter=AFTER_2000, rows=rule), Format.gpkg)
    out.append(conn.execute(download.query, download.params).fetchall())
    return out


def test_the_filter_never_meets_a_row_outside_the_rule(db: str, registry: LayerRegistry) -> None:
    spec = registry[LAYER]
    with psycopg.connect(db, autocommit=True) as conn:
        rule, hidden = _triangle(conn, spec)
        before = _answers(conn, spec, rule)
        assert before[0][1] > 0  # the rule and the filter let some sensors through
        assert hidden.encode() not in before[0][0]
        conn.execute(sql.SQL("UPDATE {} SET installed_on = %s WHERE fid = %s").format(ids.current_table(spec)),
                     (PAST_TIMESTAMPS, hidden))
        with pytest.raises(psycopg.errors.DatetimeFieldOverflow):  # the filter does fail on that row itself
            conn.execute(sql.SQL("SELECT 1 FROM {} WHERE (installed_on::timestamp AT TIME ZONE 'UTC') > now() "
                                 "AND fid = %s").format(ids.current_table(spec)), (hidden,))
        after = _answers(conn, spec, rule)
    assert after == before
