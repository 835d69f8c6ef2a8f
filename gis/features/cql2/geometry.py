"""Geometry literals of a filter (GeoJSON in the CQL2 JSON form, BBOX), checked before SQL sees them.

A literal need not be a valid geometry (CQL2 does not ask it to be, and the OGC examples have
self-intersecting ones): PostGIS's predicates answer for those too.
"""

import math
from typing import Any

import shapely
from shapely.errors import GEOSException

from gis.errors import InvalidInput

GEOMETRY_TYPES = frozenset({"Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon",
                            "GeometryCollection"})


def is_geometry(value: Any) -> bool:
    """A GeoJSON geometry object; a `bbox` member beside its `type` is only its box, not a BBOX literal."""
    return isinstance(value, dict) and value.get("type") in GEOMETRY_TYPES


def is_bbox(value: Any) -> bool:
    return isinstance(value, dict) and "bbox" in value and "type" not in value


def to_wkb(obj: dict[str, Any], parameter: str) -> bytes:
    """The literal as 2D WKB (a Z coordinate is dropped: the layers are 2D)."""
    try:
        geom = shapely.geometry.shape(obj)
    except (GEOSException, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise InvalidInput(parameter, f"not a GeoJSON geometry ({str(exc)[:120]})") from None
    if geom.is_empty:
        raise InvalidInput(parameter, "empty geometry")
    if not all(math.isfinite(v) for v in shapely.get_coordinates(geom).ravel()):
        raise InvalidInput(parameter, "geometry coordinates must be finite numbers")
    return shapely.to_wkb(geom, output_dimension=2)


def bbox(values: Any, parameter: str) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of a BBOX literal of 4 or 6 numbers (the heights of 6 are dropped)."""
    if not isinstance(values, list) or len(values) not in (4, 6) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise InvalidInput(parameter, "a bbox is 4 (or 6) finite numbers")
    nums = [float(v) for v in values]
    box = (nums[0], nums[1], nums[2], nums[3]) if len(nums) == 4 else (nums[0], nums[1], nums[3], nums[4])
    if box[0] > box[2] or box[1] > box[3]:
        raise InvalidInput(parameter, "a bbox is lower corner, then upper corner")
    return box
