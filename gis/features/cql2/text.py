"""CQL2 text (OGC 21-065) -> ast, by recursive descent over a small tokenizer.

Covers basic CQL2, the advanced comparison operators (LIKE, BETWEEN, IN), CASEI, the spatial and
temporal functions, property-property comparisons, and S_DWITHIN(a, b, metres) as an extension.
Arithmetic and array functions are refused with a message saying so. Every failure is an
InvalidQuery naming the parameter and, where it helps, the position in the text.
"""

import re
from dataclasses import dataclass

from gis.features.cql2 import ast
from gis.features.cql2.geometry import bbox, from_wkt
from gis.features.errors import InvalidQuery
from gis.features.temporal import parse_date, parse_timestamp

MAX_LENGTH = 100_000
MAX_DEPTH = 100

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<quoted>"(?:[^"]|"")*")
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_:.]*)
  | (?P<op><>|<=|>=|!=|[=<>(),+\-*/])
    """,
    re.VERBOSE,
)
_WKT_TYPES = frozenset({"POINT", "LINESTRING", "POLYGON", "MULTIPOINT", "MULTILINESTRING", "MULTIPOLYGON",
                        "GEOMETRYCOLLECTION"})
_LOGICAL = frozenset({"AND", "OR", "NOT"})
_NOT_PROPERTIES = frozenset({"AND", "OR", "NOT", "LIKE", "BETWEEN", "IN", "IS", "NULL"})
_ARRAY = frozenset({"A_EQUALS", "A_CONTAINS", "A_CONTAINEDBY", "A_OVERLAPS"})


@dataclass(frozen=True)
class Token:
    kind: str  # string, quoted, number, word, op, end
    text: str
    pos: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""


class _Parser:
    def __init__(self, text: str, parameter: str) -> None:
        self.text = text
        self.parameter = parameter
        self.pos = 0
        self.depth = 0
        self._peeked: Token | None = None

    # -- tokens ---------------------------------------------------------------------------------
    def error(self, problem: str, token: Token | None = None) -> InvalidQuery:
        at = token.pos if token is not None else self.pos
        return InvalidQuery(self.parameter, f"{problem} (at character {at + 1})")

    def peek(self) -> Token:
        if self._peeked is None:
            self._peeked = self._scan()
        return self._peeked

    def _scan(self) -> Token:
        while True:
            if self.pos >= len(self.text):
                return Token("end", "", self.pos)
            match = _TOKEN.match(self.text, self.pos)
            if match is None:
                raise self.error(f"unexpected character {self.text[self.pos]!r}")
            kind = match.lastgroup or ""
            start, self.pos = self.pos, match.end()
            if kind != "ws":
                return Token(kind, match.group(), start)

    def next(self) -> Token:
        token = self.peek()
        self._peeked = None
        return token

    def expect_op(self, op: str) -> Token:
        token = self.next()
        if token.kind != "op" or token.text != op:
            raise self.error(f"expected '{op}' but found {self._describe(token)}", token)
        return token

    def at_op(self, op: str) -> bool:
        token = self.peek()
        return token.kind == "op" and token.text == op

    def at_word(self, *words: str) -> bool:
        return self.peek().upper in words

    def _describe(self, token: Token) -> str:
        return "the end of the filter" if token.kind == "end" else repr(token.text)

    def _after_word_is_paren(self) -> bool:
        """Whether the word just peeked is followed by '(' (a function call or literal constructor)."""
        match = re.compile(r"\s*\(").match(self.text, self.pos)
        return match is not None

    # -- grammar ----------------------------------------------------------------------------------
    def parse(self) -> ast.Node:
        node = self.boolean_expression()
        token = self.peek()
        if token.kind != "end":
            raise self.error(f"unexpected {self._describe(token)}", token)
        return node

    def boolean_expression(self) -> ast.Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error("the filter is nested too deeply")
        terms = [self.boolean_term()]
        while self.at_word("OR"):
            self.next()
            terms.append(self.boolean_term())
        self.depth -= 1
        return terms[0] if len(terms) == 1 else ast.Or(tuple(terms))

    def boolean_term(self) -> ast.Node:
        factors = [self.boolean_factor()]
        while self.at_word("AND"):
            self.next()
            factors.append(self.boolean_factor())
        return factors[0] if len(factors) == 1 else ast.And(tuple(factors))

    def boolean_factor(self) -> ast.Node:
        if self.at_word("NOT"):
            self.next()
            return ast.Not(self.boolean_factor())
        return self.boolean_primary()

    def boolean_primary(self) -> ast.Node:
        token = self.peek()
        if token.kind == "op" and token.text == "(":
            self.next()
            node = self.boolean_expression()
            self.expect_op(")")
            return node
        word = token.upper
        if word and self._after_word_is_paren():
            if word.lower() in ast.SPATIAL:
                self.next()
                left, right = self.arguments(2, word)
                return ast.Spatial(word.lower(), left, right)
            if word == "S_DWITHIN":
                return self.dwithin()
            if word.lower() in ast.TEMPORAL:
                self.next()
                left, right = self.arguments(2, word)
                return ast.Temporal(word.lower(), left, right)
            if word in _ARRAY:
                raise self.error(f"array functions ({word}) are not supported", token)
            if word == "BBOX" and re.compile(r"\s*\(\s*[A-Za-z_\"]").match(self.text, self.pos):
                self.next()  # the ECQL form BBOX(property, minx, miny, maxx, maxy)
                self.expect_op("(")
                prop = self.scalar()
                self.expect_op(",")
                return ast.Spatial("s_intersects", prop, self.bbox_numbers())
        if word in ("TRUE", "FALSE") and not self._continues_as_predicate():
            self.next()
            return ast.Literal(word == "TRUE")
        left = self.scalar()
        return self.predicate_after(left)

    def _continues_as_predicate(self) -> bool:
        """After TRUE/FALSE: is a comparison coming (TRUE = x), or is it a predicate on its own?"""
        saved_pos, saved_peek = self.pos, self._peeked
        self.next()
        following = self.peek()
        self.pos, self._peeked = saved_pos, saved_peek
        return following.kind == "op" and following.text in (*ast.COMPARISONS, "!=")

    def dwithin(self) -> ast.DWithin:
        start = self.next()
        self.expect_op("(")
        left = self.scalar()
        self.expect_op(",")
        right = self.scalar()
        self.expect_op(",")
        distance = self.scalar()
        if not isinstance(distance, ast.Literal) or isinstance(distance.value, bool | str):
            raise self.error("S_DWITHIN's third argument is a distance in metres", start)
        if self.at_op(","):
            self.next()
            units = self.next()
            if units.kind not in ("word", "string") or units.text.strip("'").lower() not in _METRES:
                raise self.error("S_DWITHIN's distance is in metres ('meters')", units)
        self.expect_op(")")
        if float(distance.value) < 0:
            raise self.error("S_DWITHIN's distance cannot be negative", start)
        return ast.DWithin(left, right, float(distance.value))

    def arguments(self, count: int, name: str) -> list[ast.Expression]:
        self.expect_op("(")
        args = [self.scalar()]
        while self.at_op(","):
            self.next()
            args.append(self.scalar())
        self.expect_op(")")
        if len(args) != count:
            raise self.error(f"{name} takes {count} arguments, not {len(args)}")
        return args

    def predicate_after(self, left: ast.Expression) -> ast.Node:
        token = self.peek()
        if token.kind == "op" and token.text in (*ast.COMPARISONS, "!="):
            self.next()
            op = "<>" if token.text == "!=" else token.text
            return ast.Comparison(op, left, self.scalar())
        negated = False
        if token.upper == "NOT":
            self.next()
            negated = True
            token = self.peek()
        word = token.upper
        if word == "LIKE":
            self.next()
            return ast.Like(left, self.scalar(), negated)
        if word == "BETWEEN":
            self.next()
            low = self.scalar()
            if not self.at_word("AND"):
                raise self.error("BETWEEN needs 'AND' between its bounds", self.peek())
            self.next()
            return ast.Between(left, low, self.scalar(), negated)
        if word == "IN":
            self.next()
            self.expect_op("(")
            items = [self.scalar()]
            while self.at_op(","):
                self.next()
                items.append(self.scalar())
            self.expect_op(")")
            return ast.In(left, tuple(items), negated)
        if word == "IS" and not negated:
            self.next()
            is_not = False
            if self.at_word("NOT"):
                self.next()
                is_not = True
            if not self.at_word("NULL"):
                raise self.error("expected NULL after IS", self.peek())
            self.next()
            return ast.IsNull(left, is_not)
        if isinstance(left, ast.Function):
            return left
        raise self.error(
            f"expected a comparison (=, <>, <, <=, >, >=, LIKE, BETWEEN, IN, IS NULL) but found "
            f"{self._describe(token)}", token)

    def scalar(self) -> ast.Expression:
        value = self.scalar_term()
        token = self.peek()
        if token.kind == "op" and token.text in "+-*/" and token.text:
            raise self.error("arithmetic expressions are not supported", token)
        return value

    def scalar_term(self) -> ast.Expression:
        token = self.next()
        if token.kind == "string":
            return ast.Literal(token.text[1:-1].replace("''", "'"))
        if token.kind == "number":
            return ast.Literal(_number(token.text))
        if token.kind == "op" and token.text == "-":
            following = self.next()
            if following.kind != "number":
                raise self.error("arithmetic expressions are not supported", token)
            return ast.Literal(-_number(following.text))
        if token.kind == "quoted":
            return ast.Property(token.text[1:-1].replace('""', '"'))
        if token.kind != "word":
            raise self.error(f"expected a value or a property but found {self._describe(token)}", token)
        word = token.upper
        if word in ("TRUE", "FALSE"):
            return ast.Literal(word == "TRUE")
        if word in _WKT_TYPES:
            return self.wkt(token)
        if not (self.at_op("(")):
            if word in _NOT_PROPERTIES:
                raise self.error(f"expected a value or a property but found {token.text!r}", token)
            return ast.Property(token.text)
        if word == "DATE":
            return ast.DateLiteral(parse_date(self.string_argument(), self.parameter))
        if word == "TIMESTAMP":
            return ast.TimestampLiteral(parse_timestamp(self.string_argument(), self.parameter))
        if word == "INTERVAL":
            return self.interval()
        if word == "BBOX":
            return self.bbox()
        if word == "CASEI":
            (arg,) = self.arguments(1, "CASEI")
            return ast.CaseI(arg)
        if word == "ACCENTI":
            (arg,) = self.arguments(1, "ACCENTI")
            return ast.AccentI(arg)
        self.expect_op("(")
        args: list[ast.Expression] = []
        if not self.at_op(")"):
            args.append(self.scalar())
            while self.at_op(","):
                self.next()
                args.append(self.scalar())
        self.expect_op(")")
        return ast.Function(token.text, tuple(args))

    def string_argument(self) -> str:
        self.expect_op("(")
        token = self.next()
        if token.kind != "string":
            raise self.error("expected a quoted string", token)
        self.expect_op(")")
        return token.text[1:-1].replace("''", "'")

    def interval(self) -> ast.Interval:
        self.expect_op("(")
        ends = [self.interval_end(), None]
        self.expect_op(",")
        ends[1] = self.interval_end()
        self.expect_op(")")
        return ast.Interval(ends[0], ends[1])

    def interval_end(self) -> ast.DateLiteral | ast.TimestampLiteral | ast.Property | None:
        token = self.peek()
        if token.kind == "string":
            self.next()
            text = token.text[1:-1]
            if text == "..":
                return None
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                return ast.DateLiteral(parse_date(text, self.parameter))
            return ast.TimestampLiteral(parse_timestamp(text, self.parameter))
        value = self.scalar()
        if isinstance(value, ast.DateLiteral | ast.TimestampLiteral | ast.Property):
            return value
        raise self.error("an INTERVAL end is a date, a timestamp, '..' or a property", token)

    def bbox(self) -> ast.BBox:
        self.expect_op("(")
        return self.bbox_numbers()

    def bbox_numbers(self) -> ast.BBox:
        """The numbers of a BBOX after its '(' up to and including its ')'."""
        numbers: list[float] = []
        while True:
            value = self.scalar()
            if not isinstance(value, ast.Literal) or isinstance(value.value, bool | str):
                raise self.error("BBOX takes 4 or 6 numbers")
            numbers.append(float(value.value))
            if not self.at_op(","):
                break
            self.next()
        self.expect_op(")")
        return bbox(list(numbers), self.parameter)

    def wkt(self, token: Token) -> ast.Geometry:
        """From the geometry keyword to its closing parenthesis (or EMPTY), handed to GEOS whole."""
        depth, i = 0, self.pos
        while i < len(self.text):
            char = self.text[i]
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    i += 1
                    break
                if depth < 0:
                    break
            elif depth == 0 and self.text[i:].upper().lstrip().startswith("EMPTY"):
                raise self.error("empty geometries cannot be compared", token)
            i += 1
        if depth != 0:
            raise self.error(f"unbalanced parentheses in the {token.upper} geometry", token)
        self._peeked = None
        self.pos = i
        return from_wkt(self.text[token.pos:i], self.parameter)


_METRES = frozenset({"m", "meter", "meters", "metre", "metres"})


def _number(text: str) -> int | float:
    if re.fullmatch(r"\d+", text):
        return int(text)
    return float(text)


def parse(text: str, parameter: str = "filter") -> ast.Node:
    if len(text) > MAX_LENGTH:
        raise InvalidQuery(parameter, f"longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise InvalidQuery(parameter, "empty filter")
    try:
        return _Parser(text, parameter).parse()
    except RecursionError:
        raise InvalidQuery(parameter, "the filter is nested too deeply") from None
