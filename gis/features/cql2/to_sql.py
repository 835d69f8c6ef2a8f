"""A filter in the CQL2 JSON form -> one SQL boolean expression over a layer's columns, values as parameters.

Every property name is looked up in the layer's queryables (unknown names are refused), every operand's
type is checked against the operator before SQL sees it, and literals travel as typed parameters
(`%(f0)s::text`), so a filter can fail only with an InvalidInput naming `filter`.

Semantics, as CQL2 has them:
- three-valued logic: a NULL operand makes a comparison or a temporal function unknown, which NOT keeps
  unknown, and a row is selected only when the filter is true (SQL's own NULL rules give exactly this);
- CASEI and ACCENTI change only the operand they wrap (lower(), PostgreSQL's unaccent());
- timestamps are instants; a DATE literal or a date property is its whole UTC day; an interval's ends are
  instants (a date end is its UTC midnight, as cql2-rs reads it), '..' an open end;
- S_EQUALS compares geometries at the precision the service serves them in the filter's CRS, so a
  geometry copied from a response finds its feature.
"""

import math
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from psycopg import sql

from gis.errors import InvalidInput
from gis.features import crs as crs_
from gis.features.cql2 import geometry as geometry_
from gis.features.queryables import Queryable, queryables
from gis.features.temporal import parse_date, parse_timestamp
from gis.layers import LayerSpec

COMPARISONS = frozenset({"=", "<>", "<", "<=", ">", ">="})
_SPATIAL_SQL = {
    "s_intersects": "ST_Intersects", "s_disjoint": "ST_Disjoint", "s_contains": "ST_Contains",
    "s_within": "ST_Within", "s_touches": "ST_Touches", "s_crosses": "ST_Crosses",
    "s_overlaps": "ST_Overlaps", "s_equals": "ST_Equals",
}
# Allen's relations on closed intervals [s1, e1] and [s2, e2], as CQL2 defines the temporal functions.
_TEMPORAL_SQL = {
    "t_after": "({s1} > {e2})",
    "t_before": "({e1} < {s2})",
    "t_contains": "({s1} < {s2} AND {e1} > {e2})",
    "t_disjoint": "(NOT ({s1} <= {e2} AND {e1} >= {s2}))",
    "t_during": "({s1} > {s2} AND {e1} < {e2})",
    "t_equals": "({s1} = {s2} AND {e1} = {e2})",
    "t_finishedby": "({s1} < {s2} AND {e1} = {e2})",
    "t_finishes": "({s1} > {s2} AND {e1} = {e2})",
    "t_intersects": "({s1} <= {e2} AND {e1} >= {s2})",
    "t_meets": "({e1} = {s2})",
    "t_metby": "({s1} = {e2})",
    "t_overlappedby": "({s1} > {s2} AND {s1} < {e2} AND {e1} > {e2})",
    "t_overlaps": "({s1} < {s2} AND {e1} > {s2} AND {e1} < {e2})",
    "t_startedby": "({s1} = {s2} AND {e1} > {e2})",
    "t_starts": "({s1} = {s2} AND {e1} < {e2})",
}
_ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^", "div"})
_ARRAY = frozenset({"a_equals", "a_contains", "a_containedby", "a_overlaps"})
_CASTS = {
    "text": sql.SQL("text"),
    "integer": sql.SQL("bigint"),
    "number": sql.SQL("double precision"),
    "boolean": sql.SQL("boolean"),
    "date": sql.SQL("date"),
    "timestamp": sql.SQL("timestamptz"),
}
_ORDERED = frozenset({"text", "integer", "number", "date", "timestamp"})
_NUMERIC = frozenset({"integer", "number"})
_TEMPORAL_KINDS = frozenset({"date", "timestamp"})
_ONE_DAY_LESS = timedelta(days=1, microseconds=-1)
_UTC = sql.Literal("UTC")
# unaccent() is installed by migration 012; named with its schema so a caller's search_path cannot move it.
_UNACCENT = sql.SQL("public.unaccent")
# Relations decided by a boundary (equal, touching, inside...) are sensitive to the last digits of the
# coordinates: against a literal they are decided on the geometry as served, as a client sees it.
_AT_SERVED_PRECISION = frozenset({"s_equals", "s_touches", "s_overlaps", "s_within", "s_contains", "s_crosses"})
_SNAP_TOLERANCE = 1e-6  # degrees (~0.1 m): wider than any rounding of served coordinates, for the index test

# A typed SQL operand: (expression, kind); kind "null" is a NULL literal, typed after its counterpart.
Operand = tuple[sql.Composable, str]


def utc_day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), UTC)


class Translator:
    def __init__(self, spec: LayerSpec, filter_crs: crs_.Crs, params: dict[str, object],
                 parameter: str = "filter", prefix: str = "f") -> None:
        self.spec = spec
        self.crs = filter_crs
        self.params = params
        self.parameter = parameter
        self.prefix = prefix
        self.queryables = queryables(spec)

    # -- helpers ----------------------------------------------------------------------------------
    def fail(self, problem: str) -> InvalidInput:
        return InvalidInput(self.parameter, problem)

    def placeholder(self, value: object) -> sql.Placeholder:
        name = f"{self.prefix}{len(self.params)}"
        self.params[name] = value
        return sql.Placeholder(name)

    def param(self, value: object, kind: str) -> sql.Composable:
        return sql.SQL("{}::{}").format(self.placeholder(value), _CASTS[kind])

    def property(self, name: Any) -> Queryable:
        if not isinstance(name, str):
            raise self.fail("a property name is a string")
        found = self.queryables.get(name)
        if found is None:
            known = ", ".join(self.queryables)
            raise self.fail(f"unknown property '{name[:60]}'; the queryables are: {known}")
        return found

    def args(self, node: dict[str, Any], n: int | tuple[int, ...]) -> list[Any]:
        args = node.get("args")
        counts = (n,) if isinstance(n, int) else n
        if not isinstance(args, list) or len(args) not in counts:
            want = " or ".join(str(c) for c in counts)
            raise self.fail(f"'{node.get('op')}' takes {want} argument{'' if counts == (1,) else 's'}")
        return args

    def unsupported(self, op: str) -> InvalidInput:
        if op in _ARITHMETIC:
            return self.fail("arithmetic expressions are not supported")
        if op in _ARRAY:
            return self.fail(f"array functions ({op}) are not supported")
        return self.fail(f"function '{op[:40]}' is not supported")

    @staticmethod
    def op_of(node: Any) -> str | None:
        op = node.get("op") if isinstance(node, dict) else None
        return op.lower() if isinstance(op, str) else None

    # -- predicates -------------------------------------------------------------------------------
    def predicate(self, node: Any) -> sql.Composable:
        if isinstance(node, bool):
            return sql.SQL("TRUE" if node else "FALSE")
        op = self.op_of(node)
        if op is None:
            raise self.fail("expected a predicate ({\"op\": ..., \"args\": [...]}) or a boolean")
        if op in ("and", "or"):
            args = node.get("args")
            if not isinstance(args, list) or len(args) < 2:
                raise self.fail(f"'{op}' takes at least two arguments")
            joiner = sql.SQL(" AND " if op == "and" else " OR ")
            return sql.SQL("({})").format(joiner.join(self.predicate(a) for a in args))
        if op == "not":
            return sql.SQL("(NOT {})").format(self.predicate(self.args(node, 1)[0]))
        if op in COMPARISONS:
            left, right = self.args(node, 2)
            return self.comparison(op, left, right)
        if op == "like":
            return self.like(*self.args(node, 2))
        if op == "between":
            return self.between(*self.args(node, 3))
        if op == "in":
            return self.in_list(*self.args(node, 2))
        if op == "isnull":
            return sql.SQL("({} IS NULL)").format(self.any_operand(self.args(node, 1)[0]))
        if op in _AT_SERVED_PRECISION:
            return self.at_served_precision(op, *self.args(node, 2))
        if op in _SPATIAL_SQL:
            left, right = self.args(node, 2)
            return sql.SQL("{}({}, {})").format(sql.SQL(_SPATIAL_SQL[op]), self.geometry(left), self.geometry(right))
        if op == "s_dwithin":
            return self.dwithin(self.args(node, (3, 4)))
        if op in _TEMPORAL_SQL:
            left, right = self.args(node, 2)
            return self.temporal(op, left, right)
        if op in ("casei", "accenti"):
            raise self.fail(f"{op.upper()} gives text, not a predicate")
        raise self.unsupported(op)

    def comparison(self, op: str, left: Any, right: Any) -> sql.Composable:
        (lexpr, rexpr), kind = self.pair(left, right)
        if op not in ("=", "<>") and kind not in _ORDERED:
            raise self.fail(f"'{op}' does not apply to {kind} values")
        return sql.SQL("({} {} {})").format(lexpr, sql.SQL(op), rexpr)

    def like(self, arg: Any, pattern: Any) -> sql.Composable:
        literal = pattern
        while self.op_of(literal) in ("casei", "accenti") and isinstance(literal.get("args"), list) and literal["args"]:
            literal = literal["args"][0]
        if isinstance(literal, str) and (len(literal) - len(literal.rstrip("\\"))) % 2:
            raise self.fail("a LIKE pattern cannot end with its escape character (\\)")
        (expr, pat), kind = self.pair(arg, pattern)
        if kind != "text":
            raise self.fail("LIKE compares text")
        return sql.SQL("({} LIKE {})").format(expr, pat)

    def between(self, arg: Any, low: Any, high: Any) -> sql.Composable:
        (expr, lo), kind = self.pair(arg, low)
        (_, hi), high_kind = self.pair(arg, high)
        if kind not in _NUMERIC | _TEMPORAL_KINDS or high_kind not in _NUMERIC | _TEMPORAL_KINDS:
            raise self.fail("BETWEEN compares numbers (or dates and timestamps)")
        return sql.SQL("({} BETWEEN {} AND {})").format(expr, lo, hi)

    def in_list(self, arg: Any, items: Any) -> sql.Composable:
        if not isinstance(items, list) or not items:
            raise self.fail("IN takes a value and a non-empty list")
        if len(items) > 10_000:
            raise self.fail("IN takes at most 10000 values")
        values = []
        expr: sql.Composable = sql.SQL("")
        for item in items:
            (expr, value), _ = self.pair(arg, item)
            values.append(value)
        return sql.SQL("({} IN ({}))").format(expr, sql.SQL(", ").join(values))

    def any_operand(self, node: Any) -> sql.Composable:
        """IS NULL's operand: any property, the geometry included, or a scalar."""
        if isinstance(node, dict) and "property" in node:
            return self.property(node["property"]).identifier
        if geometry_.is_geometry(node) or geometry_.is_bbox(node):
            return self.geometry(node)
        expr, kind = self.scalar(node)
        return expr if kind != "null" else sql.SQL("NULL")

    # -- scalar operands --------------------------------------------------------------------------
    def scalar(self, node: Any, want: str | None = None) -> Operand:
        """The operand's SQL and kind; a literal is typed after `want` (its counterpart's kind)."""
        if node is None:
            return (self.param(None, want) if want in _CASTS else sql.SQL("NULL")), "null"
        if isinstance(node, bool | int | float | str):
            return self.literal(node, want)
        op = self.op_of(node)
        if op in ("casei", "accenti"):
            expr, kind = self.scalar(self.args(node, 1)[0], "text")
            if kind != "text":
                raise self.fail(f"{op.upper()} applies to text")
            if op == "casei":
                return sql.SQL("lower({})").format(expr), "text"
            return sql.SQL("{}({})").format(_UNACCENT, expr), "text"
        if op is not None:
            raise self.unsupported(op)
        if not isinstance(node, dict):
            raise self.fail("a list is only allowed as the values of IN")
        if "property" in node:
            q = self.property(node["property"])
            if q.kind == "geometry":
                raise self.fail(f"'{q.name}' is the geometry: compare it with a spatial function (S_INTERSECTS...)")
            return q.identifier, q.kind
        if "date" in node:
            day = self.date_value(node["date"])
            if want == "timestamp":
                return self.param(utc_day_start(day), "timestamp"), "timestamp"
            return self.param(day, "date"), "date"
        if "timestamp" in node:
            return self.param(self.timestamp_value(node["timestamp"]), "timestamp"), "timestamp"
        if geometry_.is_geometry(node) or geometry_.is_bbox(node):
            raise self.fail("a geometry is compared with a spatial function (S_INTERSECTS...)")
        if "interval" in node:
            raise self.fail("an interval is compared with a temporal function (T_INTERSECTS...)")
        raise self.fail(f"unexpected operand {str(node)[:60]}")

    def date_value(self, value: Any) -> date:
        if not isinstance(value, str):
            raise self.fail("a date is a string (YYYY-MM-DD)")
        return parse_date(value, self.parameter)

    def timestamp_value(self, value: Any) -> datetime:
        if not isinstance(value, str):
            raise self.fail("a timestamp is a string (RFC 3339)")
        return parse_timestamp(value, self.parameter, UTC)

    def literal(self, value: str | int | float | bool, want: str | None) -> Operand:
        if isinstance(value, bool):
            return self.param(value, "boolean"), "boolean"
        if isinstance(value, int | float):
            if not math.isfinite(value):
                raise self.fail("numbers must be finite")
            # cql2 reads every number as a float: a whole one against an integer stays an integer (indexes)
            if want == "integer" and float(value).is_integer() and -(2**63) <= value < 2**63:
                return self.param(int(value), "integer"), "integer"
            if isinstance(value, int) and -(2**63) <= value < 2**63:
                return self.param(value, "integer"), "integer"
            return self.param(float(value), "number"), "number"
        if want == "date":  # lenient: '2024-05-01' against a date field
            return self.param(parse_date(value, self.parameter), "date"), "date"
        if want == "timestamp":
            try:
                day = date.fromisoformat(value)
            except ValueError:
                return self.param(self.timestamp_value(value), "timestamp"), "timestamp"
            return self.param(utc_day_start(day), "timestamp"), "timestamp"
        return self.param(value, "text"), "text"

    def pair(self, left: Any, right: Any) -> tuple[tuple[sql.Composable, sql.Composable], str]:
        """Two operands of one comparison, literals typed after the other side; their common kind."""
        lhint, rhint = self.kind_hint(left), self.kind_hint(right)
        lexpr, lk = self.scalar(left, rhint)
        rexpr, rk = self.scalar(right, lhint or lk)
        if lk == "null" and rk == "null":
            return (lexpr, rexpr), "null"
        kind = self.common(lk, rk)
        if lk == "date" and rk == "timestamp":
            lexpr = self.date_as_timestamp(lexpr)
        elif rk == "date" and lk == "timestamp":
            rexpr = self.date_as_timestamp(rexpr)
        return (lexpr, rexpr), kind

    def kind_hint(self, node: Any) -> str | None:
        """An operand's kind where it is fixed (properties, typed literals); None for a string literal."""
        op = self.op_of(node)
        if op in ("casei", "accenti"):
            return "text"
        if isinstance(node, bool):
            return "boolean"
        if isinstance(node, int | float):
            return "number"
        if isinstance(node, dict):
            if "property" in node and isinstance(node["property"], str):
                q = self.queryables.get(node["property"])
                return q.kind if q else None
            if "date" in node:
                return "date"
            if "timestamp" in node:
                return "timestamp"
        return None

    def common(self, left: str, right: str) -> str:
        if left == right or right == "null":
            return left
        if left == "null":
            return right
        if {left, right} <= _NUMERIC:
            return "number"
        if {left, right} <= _TEMPORAL_KINDS:
            return "timestamp"
        raise self.fail(f"cannot compare {left} with {right}")

    def date_as_timestamp(self, expr: sql.Composable) -> sql.Composable:
        """A date as the instant its UTC day starts."""
        return sql.SQL("({}::timestamp AT TIME ZONE {})").format(expr, _UTC)

    # -- spatial ----------------------------------------------------------------------------------
    def literal_geometry(self, node: Any) -> sql.Composable | None:
        """A geometry or BBOX literal in the filter CRS's numbers and axis order (no SRID); None otherwise."""
        if geometry_.is_geometry(node):
            return sql.SQL("ST_GeomFromWKB({})").format(self.placeholder(geometry_.to_wkb(node, self.parameter)))
        if geometry_.is_bbox(node):
            corners = [sql.SQL("{}::float8").format(self.placeholder(v))
                       for v in geometry_.bbox(node["bbox"], self.parameter)]
            return sql.SQL("ST_MakeEnvelope({})").format(sql.SQL(", ").join(corners))
        return None

    def geometry(self, node: Any) -> sql.Composable:
        if isinstance(node, dict) and "property" in node:
            q = self.property(node["property"])
            if q.kind != "geometry":
                raise self.fail(f"'{q.name}' is not a geometry")
            return q.identifier
        found = self.literal_geometry(node)
        if found is None:
            raise self.fail("spatial functions compare geometries (the 'geometry' property or a WKT/GeoJSON literal)")
        return sql.SQL("({})").format(crs_.to_storage(self.crs, found))

    def rounded(self, geom: sql.Composable) -> sql.Composable:
        """A geometry in the filter CRS's numbers with its coordinates rounded as a response rounds them."""
        return sql.SQL("ST_GeomFromGeoJSON(ST_AsGeoJSON({}, {}, 0))").format(geom, sql.Literal(int(self.crs.digits)))

    def at_served_precision(self, op: str, left: Any, right: Any) -> sql.Composable:
        """A relation between the geometry and a literal, both at the precision of a response in the filter CRS:
        a geometry copied from a response equals, touches or lies within what was served."""
        is_column = [isinstance(a, dict) and "property" in a for a in (left, right)]
        literals = [self.literal_geometry(a) if not c else None for a, c in zip((left, right), is_column, strict=True)]
        if sorted(is_column) != [False, True] or all(lit is None for lit in literals):
            return sql.SQL("{}({}, {})").format(sql.SQL(_SPATIAL_SQL[op]), self.geometry(left), self.geometry(right))
        column = self.geometry(left if is_column[0] else right)
        literal = literals[1] if is_column[0] else literals[0]
        assert literal is not None
        served = self.rounded(crs_.to_output(self.crs, column))
        sides = (served, self.rounded(literal)) if is_column[0] else (self.rounded(literal), served)
        # each of these relations implies the two intersect: the box test lets the index narrow the rows first
        return sql.SQL("({c} && ST_Expand({s}, {t}) AND {f}({a}, {b}))").format(
            c=column, s=crs_.to_storage(self.crs, literal), t=sql.Literal(_SNAP_TOLERANCE),
            f=sql.SQL(_SPATIAL_SQL[op]), a=sides[0], b=sides[1])

    def dwithin(self, args: list[Any]) -> sql.Composable:
        left, right, distance = args[:3]
        if len(args) == 4 and (not isinstance(args[3], str) or args[3].lower() not in (
                "m", "meter", "meters", "metre", "metres")):
            raise self.fail("s_dwithin's distance is in metres ('meters')")
        if not isinstance(distance, int | float) or isinstance(distance, bool) or not math.isfinite(distance) \
                or distance < 0:
            raise self.fail("s_dwithin's third argument is a distance in metres, not negative")
        if isinstance(right, dict) and "property" in right and not (isinstance(left, dict) and "property" in left):
            left, right = right, left  # the column first, so the box test can use its index
        a, b = self.geometry(left), self.geometry(right)
        metres = self.param(float(distance), "number")
        # Index-friendly box first (a degree of longitude is at least 1/3 of 111 km below 70 degrees
        # latitude, so metres / 37000 covers the distance), then the exact ellipsoidal distance.
        return sql.SQL(
            "({a} && ST_Expand({b}, {m} / 37000.0) AND "
            "ST_DWithin(ST_SetSRID({a}, 4326)::geography, ST_SetSRID({b}, 4326)::geography, {m}))"
        ).format(a=a, b=b, m=metres)

    # -- temporal ---------------------------------------------------------------------------------
    def interval(self, node: Any) -> tuple[sql.Composable, sql.Composable]:
        """(start, end) as timestamptz SQL, both inclusive: instants are [t, t], dates their whole UTC day."""
        if isinstance(node, dict) and "interval" in node:
            ends = node["interval"]
            if not isinstance(ends, list) or len(ends) != 2:
                raise self.fail("an interval has two ends")
            return self.interval_end(ends[0], is_end=False), self.interval_end(ends[1], is_end=True)
        if isinstance(node, dict) and "date" in node:
            start = utc_day_start(self.date_value(node["date"]))
            return self.param(start, "timestamp"), self.param(start + _ONE_DAY_LESS, "timestamp")
        if isinstance(node, dict) and "timestamp" in node:
            expr = self.param(self.timestamp_value(node["timestamp"]), "timestamp")
            return expr, expr
        if isinstance(node, dict) and "property" in node:
            q = self.property(node["property"])
            if q.kind == "timestamp":
                return q.identifier, q.identifier
            if q.kind == "date":
                start_expr = self.date_as_timestamp(q.identifier)
                return start_expr, sql.SQL("({} + interval '1 day' - interval '1 microsecond')").format(start_expr)
            raise self.fail(f"'{q.name}' is not a date or timestamp")
        if isinstance(node, str):
            raise self.fail("temporal functions take DATE('...'), TIMESTAMP('...') or INTERVAL(...)")
        raise self.fail("temporal functions compare dates, timestamps and intervals")

    def temporal(self, op: str, left: Any, right: Any) -> sql.Composable:
        s1, e1 = self.interval(left)
        s2, e2 = self.interval(right)
        found = sql.SQL(_TEMPORAL_SQL[op]).format(s1=s1, e1=e1, s2=s2, e2=e2)
        # A relation may read one end of an INTERVAL(a, b) only (T_METBY reads its start): where the other is
        # NULL the relation is still unknown, as a NULL operand makes it, not decided by the end it reads.
        ends = [self.property(end["property"]).identifier for node in (left, right)
                if isinstance(node, dict) and isinstance(node.get("interval"), list)
                for end in node["interval"] if isinstance(end, dict) and "property" in end]
        if not ends:
            return found
        unknown = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(e) for e in ends)
        return sql.SQL("(CASE WHEN {} THEN NULL ELSE {} END)").format(unknown, found)

    def interval_end(self, end: Any, is_end: bool) -> sql.Composable:
        """One end of INTERVAL(...): an instant; '..' is open; a date is its UTC midnight."""
        if end == "..":
            return sql.SQL("'infinity'::timestamptz" if is_end else "'-infinity'::timestamptz")
        if isinstance(end, str):
            try:
                day = date.fromisoformat(end) if len(end) == 10 else None
            except ValueError:
                day = None
            if day is not None:
                return self.param(utc_day_start(day), "timestamp")
            return self.param(self.timestamp_value(end), "timestamp")
        if isinstance(end, dict) and "date" in end:
            return self.param(utc_day_start(self.date_value(end["date"])), "timestamp")
        if isinstance(end, dict) and "timestamp" in end:
            return self.param(self.timestamp_value(end["timestamp"]), "timestamp")
        if isinstance(end, dict) and "property" in end:
            q = self.property(end["property"])
            if q.kind == "timestamp":
                return q.identifier
            if q.kind == "date":
                return self.date_as_timestamp(q.identifier)
            raise self.fail(f"'{q.name}' is not a date or timestamp")
        raise self.fail("an interval end is a date, a timestamp, '..' or a property")


def translate(tree: Any, spec: LayerSpec, filter_crs: crs_.Crs, params: dict[str, object],
              parameter: str = "filter") -> sql.Composable:
    """The filter (CQL2 JSON) as an SQL boolean expression; its values are added to `params`."""
    return Translator(spec, filter_crs, params, parameter).predicate(tree)
