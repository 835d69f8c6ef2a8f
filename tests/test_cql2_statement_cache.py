"""Filtered items statements are kept by the filter's shape (its SQL with placeholders), their values apart.

Each test compares the kept statement with one translated afresh (to_sql.translate, no cache) and with what
the database answers for it, so a key too coarse (two different statements under one key) or values
handed to the wrong placeholders would show.
"""

from typing import Any

import orjson
import psycopg
import pytest

from gis.errors import InvalidInput
from gis.features import queries
from gis.features.cql2 import cache
from gis.features.cql2.to_sql import translate
from gis.features.params import parse_items_query
from gis.layers import LayerRegistry, LayerSpec, load_registry
from gis.settings import Settings


@pytest.fixture(scope="module")
def pipelines(registry: LayerRegistry) -> LayerSpec:
    return registry["pipelines"]


def statement(spec: LayerSpec, cql2: str, **more: str) -> queries.Statement:
    return queries.items_statement(spec, parse_items_query(spec, {"limit": "100", "filter": cql2, **more}))


def fresh(spec: LayerSpec, cql2: str) -> queries.Statement:
    """The statement built without either cache: the filter translated by to_sql itself."""
    q = parse_items_query(spec, {"limit": "100", "filter": cql2})
    params = queries._items_params(spec, q)
    assert q.filter is not None
    text = translate(q.filter, spec, q.filter_crs, params).as_bytes(None)
    return queries.Statement(queries._build_items_statement(spec, q, params, (None, text)).as_bytes(None), params)


def fids(conn: psycopg.Connection, st: queries.Statement) -> list[str]:
    row = conn.execute(st.query, st.params).fetchone()
    assert row is not None
    return [f["id"] for f in orjson.loads(b"[" + bytes(row[0]) + b"]")]


@pytest.mark.parametrize(("first", "second", "values"), [
    ("utility = 'sewer'", "utility = 'water'", ("sewer", "water")),
    ("diameter_mm > 500 AND material = 'HDPE'", "diameter_mm > 300 AND material = 'PE'", ((500, "HDPE"), (300, "PE"))),
    ("install_year BETWEEN 1990 AND 2000", "install_year BETWEEN 2001 AND 2010", ((1990, 2000), (2001, 2010))),
])
def test_filters_of_one_shape_share_one_statement_with_their_own_values(
        pipelines: LayerSpec, first: str, second: str, values: tuple[Any, Any]) -> None:
    a, b = statement(pipelines, first), statement(pipelines, second)
    assert a.query is b.query  # one statement, rendered once
    for got, cql2, want in ((a, first, values[0]), (b, second, values[1])):
        alone = fresh(pipelines, cql2)
        assert got.query == alone.query and got.params == alone.params
        literals = [v for k, v in got.params.items() if k.startswith("f")]
        assert literals == (list(want) if isinstance(want, tuple) else [want])


def test_a_kept_statement_answers_as_a_fresh_one(db: psycopg.Connection, pipelines: LayerSpec) -> None:
    statement(pipelines, "utility = 'sewer'")  # keeps the shape
    for utility in ("water", "gas", "sewer"):
        kept = statement(pipelines, f"utility = '{utility}'")
        want = [r[0] for r in db.execute("SELECT fid FROM pipeline.pipelines WHERE utility = %s ORDER BY fid LIMIT 100",
                                         (utility,)).fetchall()]
        assert want and fids(db, kept) == fids(db, fresh(pipelines, f"utility = '{utility}'")) == want


@pytest.mark.parametrize(("first", "second"), [
    ("diameter_mm > 500", "diameter_mm > 500.5"),  # an integer against an integer column, then a float
    ("install_year = 2000", "install_year IS NULL"),
    ("utility IN ('gas', 'water')", "utility IN ('gas', 'water', 'heat')"),
    ("utility = 'gas'", "utility <> 'gas'"),
])
def test_filters_of_different_shapes_keep_their_own_statements(pipelines: LayerSpec, first: str, second: str) -> None:
    a, b = statement(pipelines, first), statement(pipelines, second)
    assert a.query != b.query
    assert (a.query, a.params) == (fresh(pipelines, first).query, fresh(pipelines, first).params)
    assert (b.query, b.params) == (fresh(pipelines, second).query, fresh(pipelines, second).params)


def test_the_same_filter_on_a_later_page_is_its_own_shape(pipelines: LayerSpec) -> None:
    first = statement(pipelines, "utility = 'gas'")
    later = statement(pipelines, "utility = 'gas'", offset="100")
    # The first page counts (numberMatched), a later one does not: two statements.
    assert isinstance(first.query, bytes) and isinstance(later.query, bytes)
    assert b"count(*) AS n" in first.query and b"count(*) AS n" not in later.query


def test_a_refused_filter_is_refused_every_time(pipelines: LayerSpec) -> None:
    q = parse_items_query(pipelines, {"filter": "utility = 'gas'"})
    assert q.filter is not None
    wrong = {"op": "=", "args": [{"property": "no_such_field"}, "x"]}
    for _ in range(2):
        with pytest.raises(InvalidInput, match="unknown property 'no_such_field'"):
            cache.translated(wrong, pipelines, q.filter_crs, {})


def test_a_registry_loaded_again_gets_its_own_translation(pipelines: LayerSpec, settings: Settings) -> None:
    q = parse_items_query(pipelines, {"filter": "utility = 'gas'"})
    assert q.filter is not None
    again = load_registry(settings.layers_dir, settings.styles_dir)["pipelines"]
    cache.translated(q.filter, pipelines, q.filter_crs, {})
    key = cache._key(q.filter, again, q.filter_crs, 0, "filter")
    cache.translated(q.filter, again, q.filter_crs, {})
    assert key is not None and cache._kept[key].spec is again


def test_a_first_page_after_a_later_one_of_the_same_form_still_counts(pipelines: LayerSpec) -> None:
    # An as-of page has no recorded count: its first page counts (bounded), a later one not. The later page asked
    # first must not leave its statement (without the count) to the first page.
    asked = {"limit": "100", "datetime": "2026-01-01T00:00:00Z"}
    later = queries.items_statement(pipelines, parse_items_query(pipelines, {**asked, "offset": "100"}))
    first = queries.items_statement(pipelines, parse_items_query(pipelines, asked))
    assert isinstance(first.query, bytes) and isinstance(later.query, bytes)
    assert b"count(*) AS n" in first.query and b"count(*) AS n" not in later.query
