"""Request parameters of /items -> one typed ItemsQuery; every refusal names its parameter.

Pure functions over strings: the web layer hands in the query parameters it received.
"""

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from gis.errors import InvalidInput
from gis.features import crs as crs_
from gis.features.cql2 import Filter, parse_filter
from gis.features.cql2.complexity import DEFAULT_LIMITS, Cql2Limits
from gis.features.queryables import GEOMETRY, queryables, response_properties
from gis.features.temporal import TimeRange, parse_date, parse_datetime, parse_timestamp
from gis.layers import LayerSpec

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_OFFSET = 2**53

_INTEGER = re.compile(r"^\+?\d{1,20}$")
_CURSOR_PREFIX = "k1"


@dataclass(frozen=True)
class ItemsQuery:
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    after: str | None = None  # keyset cursor: the fid of the previous page's last feature
    bbox: tuple[float, float, float, float] | None = None  # numbers in bbox_crs's axis order
    bbox_crs: crs_.Crs = crs_.CRS84
    time: TimeRange | None = None
    filter: Filter | None = None  # CQL2 (its JSON form) and property=value filters, combined
    # The caller's row rule (CQL2, in filter_crs), set by the service, never by the request: the rows are read
    # with it first and the filter is applied only to what it lets through (gis.features.queries.source).
    rows: Filter | None = None
    filter_crs: crs_.Crs = crs_.CRS84
    properties: tuple[str, ...] | None = None  # None: all
    sortby: tuple[tuple[str, bool], ...] = ()  # (queryable, descending)
    crs: crs_.Crs = crs_.CRS84
    skip_geometry: bool = False

    @property
    def selects_all(self) -> bool:
        """No bbox, filter or datetime: the layer's recorded row count is numberMatched."""
        return self.bbox is None and self.time is None and self.filter is None and self.rows is None

    @property
    def keyset(self) -> bool:
        """Pages by fid, so the next page can start after the last fid instead of an offset."""
        return not self.sortby


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not _INTEGER.match(value.strip()):
        raise InvalidInput("limit", f"'{value[:40]}' is not a positive integer")
    number = int(value)
    if number < 1:
        raise InvalidInput("limit", "the minimum is 1")
    return min(number, MAX_LIMIT)  # above the maximum: served as the maximum (Part 1, /req/core/fc-limit)


def parse_offset(value: str | None) -> int:
    if value is None:
        return 0
    if not _INTEGER.match(value.strip()) or int(value) > MAX_OFFSET:
        raise InvalidInput("offset", f"'{value[:40]}' is not a non-negative integer")
    return int(value)


def encode_cursor(fid: str) -> str:
    raw = base64.urlsafe_b64encode(fid.encode("utf-8")).decode("ascii").rstrip("=")
    return f"{_CURSOR_PREFIX}{raw}"


def decode_cursor(value: str) -> str:
    text = value.strip()
    if not text.startswith(_CURSOR_PREFIX) or len(text) > 4000:
        raise InvalidInput("cursor", "not a cursor this service issued (take it from a 'next' link)")
    raw = text[len(_CURSOR_PREFIX):]
    try:
        fid = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("cursor", "not a cursor this service issued (take it from a 'next' link)") from None
    if "\x00" in fid:
        raise InvalidInput("cursor", "not a cursor this service issued")
    return fid


def parse_bbox(value: str, crs: crs_.Crs) -> tuple[float, float, float, float]:
    parts = value.split(",")
    if len(parts) not in (4, 6):
        raise InvalidInput("bbox", "four numbers (or six with heights): lower corner, then upper corner")
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise InvalidInput("bbox", f"'{value[:80]}' is not a list of numbers") from None
    if not all(math.isfinite(n) for n in nums):
        raise InvalidInput("bbox", "numbers must be finite")
    box = (nums[0], nums[1], nums[2], nums[3]) if len(nums) == 4 else (nums[0], nums[1], nums[3], nums[4])
    check_box_range(box, crs, "bbox")
    if box[1] > box[3] or (box[0] > box[2] and crs is not crs_.CRS84):
        raise InvalidInput("bbox", "the lower corner comes first")
    return box


MAX_METRES = 1e8  # past any projected coordinate on Earth (the equator is 4e7 m long)


def check_box_range(box: tuple[float, ...] | list[float], crs: crs_.Crs, parameter: str) -> None:
    """A box's numbers (in `crs` axis order) are ones that CRS can hold: degrees on the globe, metres under
    MAX_METRES, never NaN; so no extreme value (1e308) overflows the arithmetic downstream."""
    if not all(math.isfinite(v) for v in box):
        raise InvalidInput(parameter, "numbers must be finite")
    if not crs.geographic:
        if not all(abs(v) <= MAX_METRES for v in box):
            raise InvalidInput(parameter, f"coordinates in {crs.title} lie within ±{MAX_METRES:g} m")
        return
    # Axis order is the CRS's: lon/lat for CRS84, lat/lon for EPSG:4326 and 4490.
    (lat_low, lat_high), lons = ((box[0], box[2]), (box[1], box[3])) if crs.northing_first else \
        ((box[1], box[3]), (box[0], box[2]))
    if not -90 <= lat_low <= lat_high <= 90:
        raise InvalidInput(parameter, "latitudes lie between -90 and 90, the lower corner first")
    if not all(-180 <= v <= 180 for v in lons):
        raise InvalidInput(parameter, "longitudes lie between -180 and 180")


def parse_properties(value: str, spec: LayerSpec) -> tuple[str, ...]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    allowed = response_properties(spec)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise InvalidInput("properties", f"unknown propert{'ies' if len(unknown) > 1 else 'y'} "
                           f"{', '.join(repr(u[:40]) for u in unknown[:5])}; this layer has: {', '.join(allowed)}")
    return tuple(dict.fromkeys(names))


def parse_sortby(value: str, spec: LayerSpec) -> tuple[tuple[str, bool], ...]:
    keys: list[tuple[str, bool]] = []
    sortable = [n for n, q in queryables(spec).items() if q.kind != "geometry"]
    for raw in value.split(","):
        # '+' in a URL query decodes to a space, so " name" is "+name"
        item = raw.strip()
        if not item:
            raise InvalidInput("sortby", "an empty sort key")
        descending = item.startswith("-")
        name = item.lstrip("+-").strip()
        if name not in sortable:
            raise InvalidInput("sortby", f"cannot sort by '{name[:40]}'; sortable: {', '.join(sortable)}")
        if any(k == name for k, _ in keys):
            raise InvalidInput("sortby", f"'{name}' is named twice")
        keys.append((name, descending))
    return tuple(keys)


def parse_boolean(value: str, parameter: str) -> bool:
    text = value.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise InvalidInput(parameter, "true or false")


def equality_filter(spec: LayerSpec, name: str, value: str) -> Filter:
    """`?utility=water`: a queryable compared for equality, the value read after the property's type."""
    kind = queryables(spec)[name].kind
    literal: object
    if kind == "integer":
        if not re.fullmatch(r"[+-]?\d{1,19}", value.strip()):
            raise InvalidInput(name, f"'{value[:40]}' is not an integer")
        literal = int(value)
    elif kind == "number":
        try:
            number = float(value)
        except ValueError:
            raise InvalidInput(name, f"'{value[:40]}' is not a number") from None
        if not math.isfinite(number):
            raise InvalidInput(name, "numbers must be finite")
        literal = number
    elif kind == "boolean":
        literal = parse_boolean(value, name)
    elif kind == "date":
        literal = {"date": parse_date(value.strip(), name).isoformat()}
    elif kind == "timestamp":
        literal = {"timestamp": parse_timestamp(value, name).isoformat()}  # with its offset
    else:
        literal = value
    return {"op": "=", "args": [{"property": name}, literal]}


def property_parameters(spec: LayerSpec, reserved: frozenset[str] = frozenset()) -> frozenset[str]:
    """Queryables usable as `?name=value`: all but the geometry, and none that would shadow one of the endpoint's
    own parameters (`reserved`: the web layer declares them)."""
    return frozenset(n for n in queryables(spec) if n != GEOMETRY and n not in reserved)


def parse_items_query(spec: LayerSpec, params: Mapping[str, str], filter_limits: Cql2Limits = DEFAULT_LIMITS,
                      reserved: frozenset[str] = frozenset()) -> ItemsQuery:
    """The /items parameters (already checked to be known ones) -> ItemsQuery; the queryables named in `params`
    (but those `reserved` as the endpoint's own parameters) filter for equality. A filter past `filter_limits` is
    refused like a malformed one."""
    get = params.get
    crs = crs_.parse_crs(get("crs", ""), "crs") if get("crs") is not None else crs_.CRS84
    bbox_crs = crs_.parse_crs(get("bbox-crs", ""), "bbox-crs") if get("bbox-crs") is not None else crs_.CRS84
    filter_crs = crs_.parse_crs(get("filter-crs", ""), "filter-crs") if get("filter-crs") is not None else crs_.CRS84
    box = parse_bbox(get("bbox", ""), bbox_crs) if get("bbox") is not None else None
    if get("bbox-crs") is not None and box is None:
        raise InvalidInput("bbox-crs", "given without bbox")
    time = parse_datetime(get("datetime", "")) if get("datetime") is not None else None
    nodes: list[Filter] = []
    language = get("filter-lang")
    if get("filter") is not None:
        nodes.append(parse_filter(get("filter", ""), language, limits=filter_limits))
    elif language is not None:
        parse_filter("TRUE" if language == "cql2-text" else "true", language)  # an unknown language is a 400
    for name in sorted(property_parameters(spec, reserved) & params.keys()):
        nodes.append(equality_filter(spec, name, get(name, "")))
    combined: Filter | None = None if not nodes else nodes[0] if len(nodes) == 1 else {"op": "and", "args": nodes}
    cursor = get("cursor")
    if cursor is not None and get("sortby") is not None:
        raise InvalidInput("cursor", "pages sorted with sortby are reached by offset (see the 'next' link)")
    offset = parse_offset(get("offset"))
    return ItemsQuery(
        limit=parse_limit(get("limit")),
        offset=offset,
        after=decode_cursor(cursor) if cursor is not None else None,
        bbox=box,
        bbox_crs=bbox_crs,
        time=time,
        filter=combined,
        filter_crs=filter_crs,
        properties=parse_properties(get("properties", ""), spec) if get("properties") is not None else None,
        sortby=parse_sortby(get("sortby", ""), spec) if get("sortby") is not None else (),
        crs=crs,
        skip_geometry=parse_boolean(get("skipGeometry", ""), "skipGeometry") if get("skipGeometry") else False,
    )
