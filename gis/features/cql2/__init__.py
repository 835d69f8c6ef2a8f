"""CQL2 (OGC 21-065): text and JSON parsed by the `cql2` package into the CQL2 JSON form, translated to SQL
with parameters (to_sql.py)."""

from gis.errors import InvalidInput
from gis.features.cql2.complexity import DEFAULT_LIMITS, Cql2Limits, check
from gis.features.cql2.parse import Filter, from_json, from_text

LANGUAGES = ("cql2-text", "cql2-json")
_CLASS = "http://www.opengis.net/spec/cql2/1.0/conf/"
# The CQL2 conformance classes /conformance declares: each only because every OGC example and abstract
# test expression of the class is accepted and answered as cql2-rs answers it (tests/test_api_cql2_ogc.py).
# Not declared: functions, arithmetic, array-functions (refused with a 400 naming the filter).
CONFORMANCE = tuple(_CLASS + name for name in (
    "cql2-text", "cql2-json", "basic-cql2", "advanced-comparison-operators", "case-insensitive-comparison",
    "accent-insensitive-comparison", "basic-spatial-functions", "basic-spatial-functions-plus",
    "spatial-functions", "temporal-functions", "property-property",
))

__all__ = ["CONFORMANCE", "LANGUAGES", "Filter", "parse_filter"]


def parse_filter(value: str, language: str | None, parameter: str = "filter",
                 limits: Cql2Limits = DEFAULT_LIMITS) -> Filter:
    """The filter as CQL2 JSON; `language` is the filter-lang parameter (default cql2-text).

    A filter past `limits` (predicates, nesting, geometry coordinates) is refused like a malformed one.
    """
    if language in (None, "cql2-text"):
        tree = from_text(value, parameter, limits.max_depth, limits.max_nodes)
    elif language == "cql2-json":
        tree = from_json(value, parameter, limits.max_depth)
    else:
        raise InvalidInput("filter-lang", f"'{language[:40]}' is not supported; use one of {', '.join(LANGUAGES)}")
    check(tree, limits, parameter)
    return tree
