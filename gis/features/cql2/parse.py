"""CQL2 text and JSON (OGC 21-065) -> the CQL2 JSON form as Python objects, parsed by the `cql2` package.

The `cql2` package (cql2-rs) is the parser. Around it, only what it does not do for us:
- a lexical pass over cql2-text that rewrites the standard's `\\'` quote escape as `''` (cql2-rs reads
  only the latter) and measures parenthesis nesting, so a hostile filter never reaches the Rust parser's
  recursion;
- its geometry literals read again from the WKT by shapely: cql2-rs's WKT reader rounds some coordinates
  in the last bit (123.41234567890123 becomes ...125), and a geometry copied from a response must stay equal;
- for cql2-json, the nesting is measured on the decoded document before cql2 checks it, and the
  document itself is what is translated: cql2-rs rewrites a GeoJSON literal that has a `bbox` member
  into its box, while the standard means the geometry.
"""

import re
from typing import Any

import cql2
import orjson
import shapely
from shapely.errors import GEOSException

from gis.errors import InvalidInput
from gis.features.cql2.geometry import GEOMETRY_TYPES

# A filter as CQL2 JSON: {"op": ..., "args": [...]} objects, literals and {"property": ...} (or a boolean).
Filter = dict[str, Any] | bool

MAX_LENGTH = 100_000
_NUL = "contains a NUL character, which no text value can hold"


def _problem(exc: BaseException) -> str:
    """cql2-rs's message on one line (its parse errors draw the text with a caret over several lines)."""
    lines = [line.strip(" |") for line in str(exc).splitlines()]
    text = " ".join(line for line in lines if line and line != "^---")
    return text[:300] or type(exc).__name__


def _too_deep(depth: int, limit: int, parameter: str) -> InvalidInput:
    return InvalidInput(parameter, f"nested too deeply: {depth} levels, at most {limit}")


# Tokens of the lexical pass: a string literal (quotes doubled or, as the standard also allows, escaped
# with a backslash), a quoted identifier, a word, a number, or any other single character.
_TOKEN = re.compile(r"""'(?:[^'\\]|''|\\.)*'?|"(?:[^"]|"")*"?|[A-Za-z_][\w:.]*|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+|\S""")
_WKT = frozenset({"POINT", "LINESTRING", "POLYGON", "MULTIPOINT", "MULTILINESTRING", "MULTIPOLYGON",
                  "GEOMETRYCOLLECTION"})
_KEYWORDS = frozenset({"AND", "OR", "NOT", "LIKE", "BETWEEN", "IN", "IS", "DIV"})
_BINARY = frozenset({"AND", "OR", "DIV", "+", "-", "*", "/", "^", "%"})
# However the settings are set, the Rust parser's recursion is kept far from the thread's stack
# (measured: 1,000 nested NOTs or parentheses parse, 2,000 overflow an 8 MiB stack).
_HARD_DEPTH = 500
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _is_operand(token: str | None) -> bool:
    """Whether the token ends an operand, so a following - or NOT is infix or postfix, not a prefix."""
    if token is None:
        return False
    if token[0] in "'\")" or token[0].isdigit() or token[0] == ".":
        return True
    return (token[0].isalpha() or token[0] == "_") and token.upper() not in _KEYWORDS


def prepare_text(text: str, parameter: str, max_depth: int, max_operators: int) -> tuple[str, list[str]]:
    """The text with `\\'` in string literals written `''`, after a lexical bound on how deep it nests.

    The depth counted is parentheses plus runs of prefix operators (NOT, unary minus): what makes the
    parser recurse. Binary operators (AND, OR, arithmetic) are counted too: long chains of them recurse
    when the tree is built. Minus signs inside WKT coordinates are neither.
    Also returns the text of each WKT literal, in order.
    """
    out: list[str] = []
    depth = deepest = run = operators = last = 0
    wkt_from: int | None = None  # the parenthesis depth a WKT literal's coordinates start at
    wkt_next = False
    wkt_start = 0
    wkts: list[str] = []
    previous: str | None = None
    limit = min(max_depth, _HARD_DEPTH)
    for match in _TOKEN.finditer(text):
        token = match.group()
        upper = token.upper()
        out.append(text[last:match.start()])
        last = match.end()
        if token[0] == "'" and len(token) >= 2 and token.endswith("'"):
            token = "'" + _ESCAPE.sub(lambda m: "''" if m.group(1) == "'" else m.group(0), token[1:-1]) + "'"
        out.append(token)
        if token == "(":
            depth += 1
            if wkt_next and wkt_from is None:
                wkt_from = depth
                wkts.append("")
        elif token == ")":
            if wkt_from is not None and depth == wkt_from:
                wkt_from = None
                wkts[-1] = text[wkt_start:match.end()]
            depth -= 1
        if upper in _WKT and wkt_from is None and not wkt_next:
            wkt_start = match.start()
        wkt_next = upper in _WKT or (wkt_next and upper in ("Z", "M", "ZM"))
        if wkt_from is None:
            if (upper == "NOT" or token in ("-", "+")) and not _is_operand(previous):
                run += 1
            elif upper in _BINARY:
                operators += 1
                run = 0
            elif token != "(":
                run = 0
        deepest = max(deepest, depth + run)
        if deepest > limit:
            raise _too_deep(deepest, limit, parameter)
        if operators > max_operators:
            raise InvalidInput(parameter, f"too complex: more than {max_operators} operators")
        previous = token
    out.append(text[last:])
    return "".join(out), wkts


def _as_lists(value: Any) -> Any:
    """shapely's mapping with its coordinate tuples as lists, as a decoded JSON document has them."""
    if isinstance(value, dict):
        return {key: _as_lists(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_as_lists(item) for item in value]
    return value


def _with_exact_geometries(tree: Any, wkts: list[str], parameter: str) -> Any:
    """The tree with each geometry literal (in text order) replaced by shapely's reading of its WKT."""
    geometries = iter(wkts)

    def visit(node: Any) -> Any:
        if isinstance(node, dict) and node.get("type") in GEOMETRY_TYPES:
            wkt = next(geometries, None)
            if not wkt:
                raise InvalidInput(parameter, "a geometry literal that is not WKT")
            try:
                return _as_lists(shapely.geometry.mapping(shapely.from_wkt(wkt)))
            except (GEOSException, ValueError, TypeError) as exc:
                raise InvalidInput(parameter, f"not a WKT geometry: {wkt[:80]!r} ({str(exc)[:120]})") from None
        if isinstance(node, dict):
            return {key: visit(value) for key, value in node.items()}
        if isinstance(node, list):
            return [visit(item) for item in node]
        return node

    return visit(tree)


def from_text(text: str, parameter: str = "filter", max_depth: int = 30, max_operators: int = 2000) -> Filter:
    if len(text) > MAX_LENGTH:
        raise InvalidInput(parameter, f"longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise InvalidInput(parameter, "empty")
    if "\x00" in text:
        raise InvalidInput(parameter, _NUL)
    prepared, wkts = prepare_text(text, parameter, max_depth, max_operators)
    try:
        tree = cql2.parse_text(prepared).to_json()
    except (cql2.ParseError, cql2.ValidationError, ValueError) as exc:
        raise InvalidInput(parameter, f"not CQL2 text: {_problem(exc)}") from None
    return _with_exact_geometries(tree, wkts, parameter) if wkts else tree


def depth_of(obj: object) -> int:
    """How deeply JSON arrays and objects nest (a scalar is 0); iterative, so any depth is safe."""
    deepest = 0
    stack: list[tuple[object, int]] = [(obj, 0)]
    while stack:
        current, level = stack.pop()
        if isinstance(current, dict):
            current = list(current.values())
        if isinstance(current, list):
            deepest = max(deepest, level + 1)
            stack.extend((item, level + 1) for item in current)
    return deepest


def from_json(text: str | bytes, parameter: str = "filter", max_depth: int = 30) -> Filter:
    if len(text) > MAX_LENGTH:
        raise InvalidInput(parameter, f"longer than {MAX_LENGTH} characters")
    try:
        obj = orjson.loads(text)  # orjson refuses nesting past 1024 levels itself
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(parameter, f"not valid JSON: {str(exc)[:200]}") from None
    if isinstance(obj, dict) and "filter" in obj and "op" not in obj:  # {"filter-lang": ..., "filter": ...}
        obj = obj["filter"]
    # An {"op", "args"} level is two JSON levels (the object and its array of arguments).
    depth = depth_of(obj)
    if depth > 2 * max_depth:
        raise _too_deep(depth // 2, max_depth, parameter)
    try:
        document = orjson.dumps(obj)
    except TypeError:  # orjson writes at most 254 levels, whatever the settings allow
        raise _too_deep(depth // 2, max_depth, parameter) from None
    if b"\\u0000" in document:
        raise InvalidInput(parameter, _NUL)
    try:
        cql2.parse_json(document.decode())
    except (cql2.ParseError, cql2.ValidationError, ValueError) as exc:
        raise InvalidInput(parameter, f"not CQL2 JSON: {_problem(exc)}") from None
    if not isinstance(obj, dict | bool):
        raise InvalidInput(parameter, "a CQL2 JSON filter is an object ({\"op\": ..., \"args\": [...]}) or a boolean")
    return obj
