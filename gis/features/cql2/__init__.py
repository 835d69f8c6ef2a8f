"""CQL2 (OGC 21-065): text and JSON encodings parsed into one tree, translated to SQL with parameters."""

from gis.features.cql2 import json as cql2_json
from gis.features.cql2 import text as cql2_text
from gis.features.cql2.ast import Node
from gis.features.cql2.complexity import DEFAULT_LIMITS, Cql2Limits, check
from gis.features.errors import InvalidQuery

LANGUAGES = ("cql2-text", "cql2-json")


def parse_filter(value: str, language: str | None, parameter: str = "filter",
                 limits: Cql2Limits = DEFAULT_LIMITS) -> Node:
    """The filter's tree; `language` is the filter-lang parameter (default cql2-text).

    A filter past `limits` (predicates, nesting, geometry coordinates) is refused like a malformed one.
    """
    if language in (None, "cql2-text"):
        node = cql2_text.parse(value, parameter)
    elif language == "cql2-json":
        node = cql2_json.parse(value, parameter)
    else:
        raise InvalidQuery("filter-lang", f"'{language[:40]}' is not supported; use one of {', '.join(LANGUAGES)}")
    check(node, limits, parameter)
    return node
