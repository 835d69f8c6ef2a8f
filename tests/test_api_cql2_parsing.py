"""CQL2 text and JSON parse (with the cql2 package) into the same CQL2 JSON form (no database)."""

import json

import pytest

from gis.errors import InvalidInput
from gis.features.cql2 import parse_filter
from gis.features.cql2.complexity import Cql2Limits

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


@pytest.mark.parametrize("text", ["a = 'it''s'", "a = 'it\\'s'"])
def test_quoted_strings_escape_quotes_either_way(text: str) -> None:
    assert parse_filter(text, None) == {"op": "=", "args": [{"property": "a"}, "it's"]}


def test_an_escaped_backslash_does_not_escape_the_closing_quote() -> None:
    assert parse_filter("a LIKE 'x\\\\' AND b = 1", None)["args"][0] == {"op": "like", "args": [{"property": "a"},
                                                                                                "x\\\\"]}


def test_double_quoted_property_names() -> None:
    assert parse_filter('"a b" = 1', None) == {"op": "=", "args": [{"property": "a b"}, 1]}


def test_and_binds_tighter_than_or() -> None:
    tree = parse_filter("a = 1 OR b = 2 AND c = 3", None)
    assert tree["op"] == "or" and tree["args"][1]["op"] == "and"


def test_a_geojson_literal_with_a_bbox_member_stays_its_geometry() -> None:
    point = {"type": "Point", "coordinates": [1, 2], "bbox": [0, 0, 3, 3]}
    tree = parse_filter(json.dumps({"op": "s_intersects", "args": [{"property": "geometry"}, point]}), "cql2-json")
    assert tree["args"][1] == point


@pytest.mark.parametrize(("text", "words"), [
    ("a = ", "not CQL2 text"), ("a = 1 b", "not CQL2 text"), ("a ~ 1", "not CQL2 text"), ("(a = 1", "not CQL2 text"),
    ("", "empty"), ("a = 'x", "not CQL2 text"),
])
def test_text_errors_say_what(text: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_filter(text, None)
    assert caught.value.parameter == "filter" and words in caught.value.problem


# Found by probing: past ~2,000 levels cql2-rs overflows the thread's stack and the process dies.
@pytest.mark.parametrize("text", [
    "NOT " * 5000 + "a = 1", "(" * 5000 + "a = 1" + ")" * 5000, "a = " + "-" * 20000 + "1",
    "a = " + " -1" * 20000, "a = 1" + " + 1" * 20000, "a = 1" + " AND a = 1" * 9000,
])
def test_deep_or_long_text_is_refused_before_the_parser(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_filter(text, None)
    assert caught.value.parameter == "filter"


@pytest.mark.parametrize("document", [
    "[" * 100_000 + "]" * 100_000, "[" * 500 + "]" * 500,
    '{"op": "not", "args": [' * 200 + "true" + "]}" * 200,
])
def test_deeply_nested_json_is_refused(document: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_filter(document, "cql2-json")
    assert caught.value.parameter == "filter"


def test_depth_limit_counts_predicate_levels() -> None:
    nested = "true"
    for _ in range(5):
        nested = '{"op": "not", "args": [' + nested + "]}"
    limits = Cql2Limits(max_depth=6)
    assert parse_filter(nested, "cql2-json", limits=limits)
    with pytest.raises(InvalidInput):
        parse_filter(nested, "cql2-json", limits=Cql2Limits(max_depth=5))
    assert parse_filter("NOT " * 5 + "TRUE", None, limits=limits) is not None


def test_a_western_polygon_with_many_negative_coordinates_is_not_an_operator_chain() -> None:
    ring = ", ".join(f"{-100 - i / 10000} {-40 - (i % 2) / 1000}" for i in range(3000))
    tree = parse_filter(f"S_INTERSECTS(geometry, LINESTRING({ring}))", None)
    assert len(tree["args"][1]["coordinates"]) == 3000
