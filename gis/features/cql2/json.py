"""CQL2 JSON (OGC 21-065) -> ast: the same tree the text encoding gives."""

import re
from typing import Any

import orjson

from gis.features.cql2 import ast
from gis.features.cql2.geometry import bbox, from_geojson
from gis.features.errors import InvalidQuery
from gis.features.temporal import parse_date, parse_timestamp

MAX_DEPTH = 100
_GEOMETRY_TYPES = frozenset({"Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon",
                             "GeometryCollection"})
_ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^", "div"})
_ARRAY = frozenset({"a_equals", "a_contains", "a_containedby", "a_overlaps"})


class _Reader:
    def __init__(self, parameter: str) -> None:
        self.parameter = parameter

    def fail(self, problem: str) -> InvalidQuery:
        return InvalidQuery(self.parameter, problem)

    def node(self, obj: Any, depth: int = 0) -> ast.Node:
        if depth > MAX_DEPTH:
            raise self.fail("the filter is nested too deeply")
        if isinstance(obj, bool):
            return ast.Literal(obj)
        if not isinstance(obj, dict) or "op" not in obj:
            raise self.fail(f"expected a predicate ({{\"op\": ..., \"args\": [...]}}), found {_short(obj)}")
        op, args = self.op_args(obj)
        if op in ("and", "or"):
            if len(args) < 2:
                raise self.fail(f"'{op}' takes at least two arguments")
            parts = tuple(self.node(a, depth + 1) for a in args)
            return ast.And(parts) if op == "and" else ast.Or(parts)
        if op == "not":
            self.count(op, args, 1)
            return ast.Not(self.node(args[0], depth + 1))
        if op in ast.COMPARISONS:
            self.count(op, args, 2)
            return ast.Comparison(op, self.expr(args[0]), self.expr(args[1]))
        if op == "like":
            self.count(op, args, 2)
            return ast.Like(self.expr(args[0]), self.expr(args[1]))
        if op == "between":
            if len(args) == 2 and isinstance(args[1], list) and len(args[1]) == 2:  # pre-1.0 drafts
                args = [args[0], *args[1]]
            self.count(op, args, 3)
            return ast.Between(self.expr(args[0]), self.expr(args[1]), self.expr(args[2]))
        if op == "in":
            self.count(op, args, 2)
            if not isinstance(args[1], list) or not args[1]:
                raise self.fail("'in' takes a value and a non-empty list")
            return ast.In(self.expr(args[0]), tuple(self.expr(a) for a in args[1]))
        if op == "isnull":
            self.count(op, args, 1)
            return ast.IsNull(self.expr(args[0]))
        if op in ast.SPATIAL:
            self.count(op, args, 2)
            return ast.Spatial(op, self.expr(args[0]), self.expr(args[1]))
        if op == "s_dwithin":
            if len(args) == 4:
                units = args[3]
                if not isinstance(units, str) or units.lower() not in ("m", "meter", "meters", "metre", "metres"):
                    raise self.fail("s_dwithin's distance is in metres ('meters')")
                args = args[:3]
            self.count(op, args, 3)
            distance = args[2]
            if not isinstance(distance, int | float) or isinstance(distance, bool) or distance < 0:
                raise self.fail("s_dwithin's third argument is a distance in metres, not negative")
            return ast.DWithin(self.expr(args[0]), self.expr(args[1]), float(distance))
        if op in ast.TEMPORAL:
            self.count(op, args, 2)
            return ast.Temporal(op, self.expr(args[0]), self.expr(args[1]))
        if op in _ARITHMETIC:
            raise self.fail("arithmetic expressions are not supported")
        if op in _ARRAY:
            raise self.fail(f"array functions ({op}) are not supported")
        return ast.Function(op, tuple(self.expr(a) for a in args))

    def op_args(self, obj: dict[str, Any]) -> tuple[str, list[Any]]:
        op = obj.get("op")
        args = obj.get("args", [])
        if not isinstance(op, str):
            raise self.fail("'op' is a string")
        if not isinstance(args, list):
            raise self.fail(f"'{op}': 'args' is an array")
        return op.lower(), args

    def count(self, op: str, args: list[Any], n: int) -> None:
        if len(args) != n:
            raise self.fail(f"'{op}' takes {n} argument{'s' if n > 1 else ''}, not {len(args)}")

    def expr(self, obj: Any) -> ast.Expression:
        if isinstance(obj, bool | str):
            return ast.Literal(obj)
        if isinstance(obj, int | float):
            if obj != obj or obj in (float("inf"), float("-inf")):
                raise self.fail("numbers must be finite")
            return ast.Literal(obj)
        if isinstance(obj, list):
            raise self.fail("arrays are only allowed as the list of 'in'")
        if not isinstance(obj, dict):
            raise self.fail(f"unexpected value {_short(obj)}")
        if "property" in obj:
            name = obj["property"]
            if not isinstance(name, str):
                raise self.fail("a property name is a string")
            return ast.Property(name)
        if "date" in obj:
            return ast.DateLiteral(parse_date(self.string(obj["date"], "date"), self.parameter))
        if "timestamp" in obj:
            return ast.TimestampLiteral(parse_timestamp(self.string(obj["timestamp"], "timestamp"), self.parameter))
        if "interval" in obj:
            ends = obj["interval"]
            if not isinstance(ends, list) or len(ends) != 2:
                raise self.fail("an interval has two ends")
            return ast.Interval(self.interval_end(ends[0]), self.interval_end(ends[1]))
        if "bbox" in obj:
            if not isinstance(obj["bbox"], list):
                raise self.fail("a bbox is an array of numbers")
            return bbox(obj["bbox"], self.parameter)
        if obj.get("type") in _GEOMETRY_TYPES:
            return from_geojson(obj, self.parameter)
        if "casei" in obj:  # pre-1.0 drafts
            return ast.CaseI(self.expr(obj["casei"]))
        if "op" in obj:
            op, args = self.op_args(obj)
            if op == "casei":
                self.count(op, args, 1)
                return ast.CaseI(self.expr(args[0]))
            if op == "accenti":
                self.count(op, args, 1)
                return ast.AccentI(self.expr(args[0]))
            if op in _ARITHMETIC:
                raise self.fail("arithmetic expressions are not supported")
            return ast.Function(op, tuple(self.expr(a) for a in args))
        raise self.fail(f"unexpected value {_short(obj)}")

    def string(self, value: Any, what: str) -> str:
        if not isinstance(value, str):
            raise self.fail(f"a {what} is a string")
        return value

    def interval_end(self, value: Any) -> ast.DateLiteral | ast.TimestampLiteral | ast.Property | None:
        if value == "..":
            return None
        if isinstance(value, str):
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                return ast.DateLiteral(parse_date(value, self.parameter))
            return ast.TimestampLiteral(parse_timestamp(value, self.parameter))
        end = self.expr(value)
        if isinstance(end, ast.DateLiteral | ast.TimestampLiteral | ast.Property):
            return end
        raise self.fail("an interval end is a date, a timestamp, '..' or a property")


def _short(obj: Any) -> str:
    text = orjson.dumps(obj).decode() if not isinstance(obj, bytes) else repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."


def parse(text: str | bytes, parameter: str = "filter") -> ast.Node:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidQuery(parameter, f"not valid JSON: {exc}") from None
    if isinstance(obj, dict) and "filter" in obj and "op" not in obj:  # {"filter-lang": ..., "filter": ...}
        obj = obj["filter"]
    try:
        return _Reader(parameter).node(obj)
    except RecursionError:
        raise InvalidQuery(parameter, "the filter is nested too deeply") from None
