"""A CQL2 tree -> one SQL boolean expression over a layer's columns, values as named parameters.

Every property name is looked up in the layer's queryables (unknown names are refused), every
operand's type is checked against the operator before SQL sees it, and literals travel as typed
parameters (`%(f0)s::text`), so a filter can fail only with an InvalidQuery naming `filter`.
"""

from datetime import date, timedelta

from psycopg import sql

from gis.features import crs as crs_
from gis.features.cql2 import ast
from gis.features.errors import InvalidQuery
from gis.features.queryables import Queryable, queryables
from gis.features.temporal import day_start, parse_timestamp
from gis.layers import LayerSpec

_SPATIAL_SQL = {
    "s_intersects": "ST_Intersects", "s_disjoint": "ST_Disjoint", "s_contains": "ST_Contains",
    "s_within": "ST_Within", "s_touches": "ST_Touches", "s_crosses": "ST_Crosses",
    "s_overlaps": "ST_Overlaps", "s_equals": "ST_Equals",
}
# Allen's relations on closed intervals [s1, e1] and [s2, e2], as CQL2 defines the temporal functions.
_TEMPORAL_SQL = {
    "t_after": "{s1} > {e2}",
    "t_before": "{e1} < {s2}",
    "t_contains": "({s1} < {s2} AND {e1} > {e2})",
    "t_disjoint": "NOT ({s1} <= {e2} AND {e1} >= {s2})",
    "t_during": "({s1} > {s2} AND {e1} < {e2})",
    "t_equals": "({s1} = {s2} AND {e1} = {e2})",
    "t_finishedby": "({s1} < {s2} AND {e1} = {e2})",
    "t_finishes": "({s1} > {s2} AND {e1} = {e2})",
    "t_intersects": "({s1} <= {e2} AND {e1} >= {s2})",
    "t_meets": "{e1} = {s2}",
    "t_metby": "{s1} = {e2}",
    "t_overlappedby": "({s1} > {s2} AND {s1} < {e2} AND {e1} > {e2})",
    "t_overlaps": "({s1} < {s2} AND {e1} > {s2} AND {e1} < {e2})",
    "t_startedby": "({s1} = {s2} AND {e1} > {e2})",
    "t_starts": "({s1} = {s2} AND {e1} < {e2})",
}
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
_CITY_ZONE = sql.Literal("Asia/Shanghai")  # a constant of ours (temporal.CITY_TIME), never client input

# A typed SQL operand: (expression, kind)
Operand = tuple[sql.Composable, str]


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
    def fail(self, problem: str) -> InvalidQuery:
        return InvalidQuery(self.parameter, problem)

    def param(self, value: object, kind: str) -> sql.Composable:
        name = f"{self.prefix}{len(self.params)}"
        self.params[name] = value
        return sql.SQL("{}::{}").format(sql.Placeholder(name), _CASTS[kind])

    def property(self, name: str) -> Queryable:
        found = self.queryables.get(name)
        if found is None:
            known = ", ".join(self.queryables)
            raise self.fail(f"unknown property '{name[:60]}'; the queryables are: {known}")
        return found

    # -- predicates -------------------------------------------------------------------------------
    def predicate(self, node: ast.Node) -> sql.Composable:
        match node:
            case ast.And(args):
                return sql.SQL("({})").format(sql.SQL(" AND ").join(self.predicate(a) for a in args))
            case ast.Or(args):
                return sql.SQL("({})").format(sql.SQL(" OR ").join(self.predicate(a) for a in args))
            case ast.Not(arg):
                return sql.SQL("(NOT {})").format(self.predicate(arg))
            case ast.Literal(value) if isinstance(value, bool):
                return sql.SQL("TRUE" if value else "FALSE")
            case ast.Comparison(op, left, right):
                return self.comparison(op, left, right)
            case ast.Like(arg, pattern, negated):
                return self.like(arg, pattern, negated)
            case ast.Between(arg, low, high, negated):
                return self.between(arg, low, high, negated)
            case ast.In(arg, items, negated):
                return self.in_list(arg, items, negated)
            case ast.IsNull(arg, negated):
                expr, _ = self.scalar(arg)
                return sql.SQL("({} IS {}NULL)").format(expr, sql.SQL("NOT " if negated else ""))
            case ast.Spatial(op, left, right):
                return sql.SQL("{}({}, {})").format(
                    sql.SQL(_SPATIAL_SQL[op]), self.geometry(left), self.geometry(right))
            case ast.DWithin(left, right, distance):
                return self.dwithin(left, right, distance)
            case ast.Temporal(op, left, right):
                return self.temporal(op, left, right)
            case ast.Function(name, _):
                raise self.fail(f"function '{name[:40]}' is not supported")
        raise self.fail(f"not a predicate: {type(node).__name__}")

    def comparison(self, op: str, left: ast.Expression, right: ast.Expression) -> sql.Composable:
        (lexpr, rexpr), kind = self.pair(left, right)
        if op not in ("=", "<>") and kind not in _ORDERED:
            raise self.fail(f"'{op}' does not apply to {kind} values")
        return sql.SQL("({} {} {})").format(lexpr, sql.SQL(op), rexpr)

    def like(self, arg: ast.Expression, pattern: ast.Expression, negated: bool) -> sql.Composable:
        (expr, pat), kind = self.pair(arg, pattern)
        if kind != "text":
            raise self.fail("LIKE compares text")
        return sql.SQL("({} {}LIKE {})").format(expr, sql.SQL("NOT " if negated else ""), pat)

    def between(self, arg: ast.Expression, low: ast.Expression, high: ast.Expression,
                negated: bool) -> sql.Composable:
        (expr, lo), kind = self.pair(arg, low)
        (_, hi), _ = self.pair(arg, high)
        if kind not in _NUMERIC and kind not in _TEMPORAL_KINDS:
            raise self.fail("BETWEEN compares numbers, dates or timestamps")
        return sql.SQL("({} {}BETWEEN {} AND {})").format(expr, sql.SQL("NOT " if negated else ""), lo, hi)

    def in_list(self, arg: ast.Expression, items: tuple[ast.Expression, ...], negated: bool) -> sql.Composable:
        if len(items) > 10_000:
            raise self.fail("IN takes at most 10000 values")
        values = []
        expr: sql.Composable = sql.SQL("")
        for item in items:
            (expr, value), _ = self.pair(arg, item)
            values.append(value)
        return sql.SQL("({} {}IN ({}))").format(expr, sql.SQL("NOT " if negated else ""), sql.SQL(", ").join(values))

    # -- scalar operands --------------------------------------------------------------------------
    def scalar(self, node: ast.Expression, want: str | None = None) -> Operand:
        """The operand's SQL and kind; a literal is typed after `want` (its counterpart's kind)."""
        match node:
            case ast.Property(name):
                q = self.property(name)
                if q.kind == "geometry":
                    raise self.fail(f"'{name}' is the geometry: compare it with a spatial function (S_INTERSECTS...)")
                return q.identifier, q.kind
            case ast.CaseI(arg):
                expr, kind = self.scalar(arg, "text")
                if kind != "text":
                    raise self.fail("CASEI applies to text")
                return sql.SQL("lower({})").format(expr), "text"
            case ast.AccentI():
                raise self.fail("ACCENTI is not supported")
            case ast.Literal(value):
                return self.literal(value, want)
            case ast.DateLiteral(value):
                if want == "timestamp":
                    return self.param(day_start(value), "timestamp"), "timestamp"
                return self.param(value, "date"), "date"
            case ast.TimestampLiteral(value):
                return self.param(value, "timestamp"), "timestamp"
            case ast.Geometry() | ast.BBox():
                raise self.fail("a geometry is compared with a spatial function (S_INTERSECTS...)")
            case ast.Interval():
                raise self.fail("an interval is compared with a temporal function (T_INTERSECTS...)")
            case ast.Function(name, _):
                raise self.fail(f"function '{name[:40]}' is not supported")
        raise self.fail(f"unexpected operand {type(node).__name__}")

    def literal(self, value: str | int | float | bool, want: str | None) -> Operand:
        if isinstance(value, bool):
            return self.param(value, "boolean"), "boolean"
        if isinstance(value, int):
            if -(2**63) <= value < 2**63:
                return self.param(value, "integer"), "integer"
            return self.param(float(value), "number"), "number"
        if isinstance(value, float):
            return self.param(value, "number"), "number"
        if want == "date":  # lenient: '2024-05-01' against a date field
            try:
                return self.param(date.fromisoformat(value), "date"), "date"
            except ValueError:
                raise self.fail(f"'{value[:40]}' is not a date (YYYY-MM-DD)") from None
        if want == "timestamp":
            try:
                day = date.fromisoformat(value)
            except ValueError:
                return self.param(parse_timestamp(value, self.parameter), "timestamp"), "timestamp"
            return self.param(day_start(day), "timestamp"), "timestamp"
        return self.param(value, "text"), "text"

    def pair(self, left: ast.Expression, right: ast.Expression) -> tuple[tuple[sql.Composable, sql.Composable], str]:
        """Two operands of one comparison, literals typed after the other side; their common kind."""
        casei = isinstance(left, ast.CaseI) or isinstance(right, ast.CaseI)
        lhint, rhint = self._kind_hint(left), self._kind_hint(right)
        lexpr, lk = self.scalar(left, rhint)
        rexpr, rk = self.scalar(right, lhint or lk)
        kind = self._common(lk, rk)
        if casei:
            if kind != "text":
                raise self.fail("CASEI applies to text")
            lexpr = lexpr if isinstance(left, ast.CaseI) else sql.SQL("lower({})").format(lexpr)
            rexpr = rexpr if isinstance(right, ast.CaseI) else sql.SQL("lower({})").format(rexpr)
        if lk == "date" and rk == "timestamp":
            lexpr = self.date_as_timestamp(lexpr)
        elif rk == "date" and lk == "timestamp":
            rexpr = self.date_as_timestamp(rexpr)
        return (lexpr, rexpr), kind

    def _kind_hint(self, node: ast.Expression) -> str | None:
        """An operand's kind where it is fixed (properties, typed literals); None for a string literal."""
        match node:
            case ast.CaseI():
                return "text"
            case ast.Property(name):
                q = self.queryables.get(name)
                return q.kind if q else None
            case ast.DateLiteral():
                return "date"
            case ast.TimestampLiteral():
                return "timestamp"
            case ast.Literal(value) if not isinstance(value, str):
                return "boolean" if isinstance(value, bool) else "integer" if isinstance(value, int) else "number"
        return None

    def _common(self, left: str, right: str) -> str:
        if left == right:
            return left
        if {left, right} <= _NUMERIC:
            return "number"
        if {left, right} <= _TEMPORAL_KINDS:
            return "timestamp"
        raise self.fail(f"cannot compare {left} with {right}")

    def date_as_timestamp(self, expr: sql.Composable) -> sql.Composable:
        """A date as the instant its day starts in the city."""
        return sql.SQL("({}::timestamp AT TIME ZONE {})").format(expr, _CITY_ZONE)

    # -- spatial ----------------------------------------------------------------------------------
    def geometry(self, node: ast.Expression) -> sql.Composable:
        match node:
            case ast.Property(name):
                q = self.property(name)
                if q.kind != "geometry":
                    raise self.fail(f"'{name}' is not a geometry")
                return q.identifier
            case ast.Geometry(wkb, _):
                name = f"{self.prefix}{len(self.params)}"
                self.params[name] = wkb
                return sql.SQL("({})").format(crs_.to_storage(
                    self.crs, sql.SQL("ST_GeomFromWKB({})").format(sql.Placeholder(name))))
            case ast.BBox(coords):
                corners = []
                for value in coords:
                    name = f"{self.prefix}{len(self.params)}"
                    self.params[name] = value
                    corners.append(sql.SQL("{}::float8").format(sql.Placeholder(name)))
                return sql.SQL("({})").format(crs_.to_storage(
                    self.crs, sql.SQL("ST_MakeEnvelope({})").format(sql.SQL(", ").join(corners))))
        raise self.fail("spatial functions compare geometries (the 'geometry' property or a WKT/GeoJSON literal)")

    def dwithin(self, left: ast.Expression, right: ast.Expression, distance: float) -> sql.Composable:
        if isinstance(right, ast.Property) and not isinstance(left, ast.Property):
            left, right = right, left  # the column first, so the box test can use its index
        a, b = self.geometry(left), self.geometry(right)
        name = f"{self.prefix}{len(self.params)}"
        self.params[name] = distance
        metres = sql.SQL("{}::float8").format(sql.Placeholder(name))
        # Index-friendly box first (a degree of longitude is at least 1/3 of 111 km below 70 degrees
        # latitude, so metres / 37000 covers the distance), then the exact ellipsoidal distance.
        return sql.SQL(
            "({a} && ST_Expand({b}, {m} / 37000.0) AND "
            "ST_DWithin(ST_SetSRID({a}, 4326)::geography, ST_SetSRID({b}, 4326)::geography, {m}))"
        ).format(a=a, b=b, m=metres)

    # -- temporal ---------------------------------------------------------------------------------
    def interval(self, node: ast.Expression) -> tuple[sql.Composable, sql.Composable]:
        """(start, end) as timestamptz SQL, both inclusive: instants are [t, t], dates their whole day."""
        match node:
            case ast.Interval(start, end):
                return self.interval_end(start, is_end=False), self.interval_end(end, is_end=True)
            case ast.DateLiteral(value):
                start = day_start(value)
                return self.param(start, "timestamp"), self.param(start + _ONE_DAY_LESS, "timestamp")
            case ast.TimestampLiteral(value):
                expr = self.param(value, "timestamp")
                return expr, expr
            case ast.Property(name):
                q = self.property(name)
                if q.kind == "timestamp":
                    col = q.identifier
                    if q.column == "valid_to":
                        return sql.SQL("coalesce(valid_to, 'infinity'::timestamptz)"), \
                            sql.SQL("coalesce(valid_to, 'infinity'::timestamptz)")
                    return col, col
                if q.kind == "date":
                    start_expr = self.date_as_timestamp(q.identifier)
                    return start_expr, sql.SQL("({} + interval '1 day' - interval '1 microsecond')").format(start_expr)
                raise self.fail(f"'{name}' is not a date or timestamp")
            case ast.Literal(value) if isinstance(value, str):
                raise self.fail("temporal functions take DATE('...'), TIMESTAMP('...') or INTERVAL(...)")
        raise self.fail("temporal functions compare dates, timestamps and intervals")

    def interval_end(self, end: ast.DateLiteral | ast.TimestampLiteral | ast.Property | None,
                     is_end: bool) -> sql.Composable:
        if end is None:
            return sql.SQL("'infinity'::timestamptz" if is_end else "'-infinity'::timestamptz")
        start, finish = self.interval(end)
        return finish if is_end else start

    def temporal(self, op: str, left: ast.Expression, right: ast.Expression) -> sql.Composable:
        s1, e1 = self.interval(left)
        s2, e2 = self.interval(right)
        return sql.SQL(_TEMPORAL_SQL[op]).format(s1=s1, e1=e1, s2=s2, e2=e2)


def translate(node: ast.Node, spec: LayerSpec, filter_crs: crs_.Crs, params: dict[str, object],
              parameter: str = "filter") -> sql.Composable:
    """The filter as an SQL boolean expression; its values are added to `params`."""
    return Translator(spec, filter_crs, params, parameter).predicate(node)
