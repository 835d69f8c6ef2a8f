"""Geometry literals of a filter (WKT in CQL2 text, GeoJSON in CQL2 JSON), checked before SQL sees them."""

import math
from typing import Any

import shapely
from shapely.errors import GEOSException

from gis.features.cql2 import ast
from gis.features.errors import InvalidQuery

MAX_VERTICES = 100_000


def _checked(geom: shapely.Geometry, parameter: str) -> ast.Geometry:
    if geom.is_empty:
        raise InvalidQuery(parameter, "empty geometry")
    coords = shapely.get_coordinates(geom)
    if len(coords) > MAX_VERTICES:
        raise InvalidQuery(parameter, f"geometry has more than {MAX_VERTICES} vertices")
    if not all(math.isfinite(v) for v in coords.ravel()):
        raise InvalidQuery(parameter, "geometry coordinates must be finite numbers")
    if not shapely.is_valid(geom):
        raise InvalidQuery(parameter, f"invalid geometry: {shapely.is_valid_reason(geom)}")
    return ast.Geometry(shapely.to_wkb(geom, output_dimension=2), geom.geom_type)


def from_wkt(text: str, parameter: str) -> ast.Geometry:
    try:
        geom = shapely.from_wkt(text)
    except (GEOSException, ValueError, TypeError) as exc:
        raise InvalidQuery(parameter, f"not a WKT geometry: {text[:80]!r} ({exc})") from None
    return _checked(geom, parameter)


def from_geojson(obj: dict[str, Any], parameter: str) -> ast.Geometry:
    try:
        geom = shapely.geometry.shape(obj)
    except (GEOSException, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise InvalidQuery(parameter, f"not a GeoJSON geometry ({exc})") from None
    return _checked(geom, parameter)


def bbox(values: list[Any], parameter: str) -> ast.BBox:
    if len(values) not in (4, 6) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise InvalidQuery(parameter, "a bbox has 4 (or 6) finite numbers")
    nums = [float(v) for v in values]
    box = (nums[0], nums[1], nums[2], nums[3]) if len(nums) == 4 else (nums[0], nums[1], nums[3], nums[4])
    if box[0] > box[2] or box[1] > box[3]:
        raise InvalidQuery(parameter, "a bbox is lower corner, then upper corner")
    return ast.BBox(box)
