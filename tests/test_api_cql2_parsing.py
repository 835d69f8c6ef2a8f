"""CQL2 text and JSON parse into the same tree (gis.features.cql2, no database)."""

import json

import pytest

from gis.features.cql2 import ast, parse_filter
from gis.features.errors import InvalidQuery

PAIRS = [
    ("a = 'x'", {"op": "=", "args": [{"property": "a"}, "x"]}),
    ("a <> 3 AND b >= 2.5", {"op": "and", "args": [{"op": "<>", "args": [{"property": "a"}, 3]},
                                                   {"op": ">=", "args": [{"property": "b"}, 2.5]}]}),
    ("NOT a IS NULL", {"op": "not", "args": [{"op": "isNull", "args": [{"property": "a"}]}]}),
    ("a BETWEEN 1 AND 2", {"op": "between", "args": [{"property": "a"}, 1, 2]}),
    ("a IN ('x', 'y')", {"op": "in", "args": [{"property": "a"}, ["x", "y"]]}),
    ("a LIKE 'x%'", {"op": "like", "args": [{"property": "a"}, "x%"]}),
    ("CASEI(a) = CASEI('X')", {"op": "=", "args": [{"op": "casei", "args": [{"property": "a"}]},
                                                   {"op": "casei", "args": ["X"]}]}),
    ("S_INTERSECTS(geometry, POINT(1 2))", {"op": "s_intersects", "args": [
        {"property": "geometry"}, {"type": "Point", "coordinates": [1, 2]}]}),
    ("S_WITHIN(geometry, BBOX(1, 2, 3, 4))", {"op": "s_within", "args": [{"property": "geometry"},
                                                                         {"bbox": [1, 2, 3, 4]}]}),
    ("S_DWITHIN(geometry, POINT(1 2), 50)", {"op": "s_dwithin", "args": [
        {"property": "geometry"}, {"type": "Point", "coordinates": [1, 2]}, 50]}),
    ("T_INTERSECTS(t, INTERVAL('2024-01-01', '..'))", {"op": "t_intersects", "args": [
        {"property": "t"}, {"interval": ["2024-01-01", ".."]}]}),
    ("T_BEFORE(t, TIMESTAMP('2024-01-01T00:00:00Z'))", {"op": "t_before", "args": [
        {"property": "t"}, {"timestamp": "2024-01-01T00:00:00Z"}]}),
    ("d = DATE('2024-02-29')", {"op": "=", "args": [{"property": "d"}, {"date": "2024-02-29"}]}),
    ("TRUE", True),
]


@pytest.mark.parametrize(("text", "cql_json"), PAIRS, ids=[p[0] for p in PAIRS])
def test_text_and_json_give_the_same_tree(text: str, cql_json: object) -> None:
    assert parse_filter(text, "cql2-text") == parse_filter(json.dumps(cql_json), "cql2-json")


def test_keywords_are_case_insensitive() -> None:
    assert parse_filter("a is not null and b like 'x'", None) == parse_filter("a IS NOT NULL AND b LIKE 'x'", None)


def test_quoted_strings_escape_quotes() -> None:
    assert parse_filter("a = 'it''s'", None) == ast.Comparison("=", ast.Property("a"), ast.Literal("it's"))


def test_double_quoted_property_names() -> None:
    assert parse_filter('"a b" = 1', None) == ast.Comparison("=", ast.Property("a b"), ast.Literal(1))


def test_and_binds_tighter_than_or() -> None:
    node = parse_filter("a = 1 OR b = 2 AND c = 3", None)
    assert isinstance(node, ast.Or) and isinstance(node.args[1], ast.And)


def test_ecql_bbox_predicate_is_s_intersects() -> None:
    assert parse_filter("BBOX(geometry, 1, 2, 3, 4)", None) == parse_filter("S_INTERSECTS(geometry, BBOX(1,2,3,4))",
                                                                             None)


@pytest.mark.parametrize(("text", "words"), [
    ("a = ", "end of the filter"), ("a = 1 b", "unexpected 'b'"), ("a ~ 1", "unexpected character"),
    ("a + 1 = 2", "arithmetic"), ("A_CONTAINS(a, b)", "array functions"), ("(a = 1", "expected ')'"),
    ("S_INTERSECTS(geometry, POINT(1))", "not a WKT geometry"), ("T_AFTER(t)", "takes 2 arguments"),
])
def test_text_errors_say_what_and_where(text: str, words: str) -> None:
    with pytest.raises(InvalidQuery) as caught:
        parse_filter(text, None)
    assert caught.value.parameter == "filter" and words in caught.value.problem
