"""The CQL2 expression tree both encodings (text and JSON) parse into; to_sql.py translates it."""

from dataclasses import dataclass
from datetime import date, datetime

# Operator names as CQL2 JSON spells them (lower case); the text parser maps its keywords to these.
COMPARISONS = ("=", "<>", "<", "<=", ">", ">=")
SPATIAL = ("s_intersects", "s_disjoint", "s_contains", "s_within", "s_touches", "s_crosses", "s_overlaps",
           "s_equals")
TEMPORAL = ("t_after", "t_before", "t_contains", "t_disjoint", "t_during", "t_equals", "t_finishedby",
            "t_finishes", "t_intersects", "t_meets", "t_metby", "t_overlappedby", "t_overlaps", "t_startedby",
            "t_starts")


@dataclass(frozen=True)
class Property:
    name: str


@dataclass(frozen=True)
class Literal:
    """A string, number or boolean."""

    value: str | int | float | bool


@dataclass(frozen=True)
class DateLiteral:
    value: date


@dataclass(frozen=True)
class TimestampLiteral:
    value: datetime  # time-zone aware


@dataclass(frozen=True)
class Interval:
    """INTERVAL(start, end); None is an open end ('..')."""

    start: "DateLiteral | TimestampLiteral | Property | None"
    end: "DateLiteral | TimestampLiteral | Property | None"


@dataclass(frozen=True)
class Geometry:
    """A geometry literal as WKB, its coordinates in the filter CRS's axis order."""

    wkb: bytes
    kind: str


@dataclass(frozen=True)
class BBox:
    coords: tuple[float, float, float, float]


@dataclass(frozen=True)
class CaseI:
    arg: "Expression"


@dataclass(frozen=True)
class AccentI:
    arg: "Expression"


@dataclass(frozen=True)
class Function:
    """A function call; none is supported beyond CASEI, but the parser keeps it for a clear error."""

    name: str
    args: tuple["Expression", ...]


@dataclass(frozen=True)
class And:
    args: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    args: tuple["Node", ...]


@dataclass(frozen=True)
class Not:
    arg: "Node"


@dataclass(frozen=True)
class Comparison:
    op: str
    left: "Expression"
    right: "Expression"


@dataclass(frozen=True)
class Like:
    arg: "Expression"
    pattern: "Expression"
    negated: bool = False


@dataclass(frozen=True)
class Between:
    arg: "Expression"
    low: "Expression"
    high: "Expression"
    negated: bool = False


@dataclass(frozen=True)
class In:
    arg: "Expression"
    items: tuple["Expression", ...]
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    arg: "Expression"
    negated: bool = False


@dataclass(frozen=True)
class Spatial:
    op: str
    left: "Expression"
    right: "Expression"


@dataclass(frozen=True)
class DWithin:
    """S_DWITHIN(a, b, distance): within `distance` metres on the ellipsoid (an extension of CQL2)."""

    left: "Expression"
    right: "Expression"
    distance: float


@dataclass(frozen=True)
class Temporal:
    op: str
    left: "Expression"
    right: "Expression"


Expression = (
    Property | Literal | DateLiteral | TimestampLiteral | Interval | Geometry | BBox | CaseI | AccentI | Function
)
Node = And | Or | Not | Comparison | Like | Between | In | IsNull | Spatial | DWithin | Temporal | Literal | Function
