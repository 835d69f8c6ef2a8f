"""CRS policy: everything is stored in CGCS2000 (EPSG:4490); sources arrive in EPSG codes or GCJ-02.

GCJ-02 (Amap, Tencent) is WGS 84 plus a deliberate non-linear offset. It has no EPSG code: the
forward formula is published, the inverse is found by fixed-point iteration (centimetre accuracy in
a few steps). WGS 84 and CGCS2000 agree to within centimetres at this accuracy, so GCJ-02 converted
to WGS 84 is taken as EPSG:4490.
"""

from functools import lru_cache
from typing import overload

import numpy as np
import pyproj
import shapely
from numpy.typing import NDArray

from gis.errors import SourceError

STORAGE_SRID = 4490
GCJ02 = "GCJ-02"
_GCJ02_ALIASES = frozenset({"gcj-02", "gcj02", "gcj_02"})

# Krasovsky 1940 ellipsoid, as the published formula uses it.
_A = 6378245.0
_EE = 0.00669342162296594323
# Outside this box the offset is not applied (the formula's own convention).
_CHINA = (72.004, 0.8293, 137.8347, 55.8271)

Coordinates = NDArray[np.float64]


def _offset_lat(x: Coordinates, y: Coordinates) -> Coordinates:
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    ret += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    ret += (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    ret += (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    return ret


def _offset_lon(x: Coordinates, y: Coordinates) -> Coordinates:
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    ret += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    ret += (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    ret += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    return ret


def _in_china(lon: Coordinates, lat: Coordinates) -> NDArray[np.bool_]:
    return (lon > _CHINA[0]) & (lon < _CHINA[2]) & (lat > _CHINA[1]) & (lat < _CHINA[3])


def wgs84_to_gcj02(lonlat: Coordinates) -> Coordinates:
    """Apply the GCJ-02 offset to an (N, 2) array of WGS 84 lon/lat degrees."""
    lon, lat = lonlat[:, 0], lonlat[:, 1]
    dlat = _offset_lat(lon - 105.0, lat - 35.0)
    dlon = _offset_lon(lon - 105.0, lat - 35.0)
    radlat = lat / 180.0 * np.pi
    magic = 1.0 - _EE * np.sin(radlat) ** 2
    sqrtmagic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrtmagic) * np.pi)
    dlon = (dlon * 180.0) / (_A / sqrtmagic * np.cos(radlat) * np.pi)
    inside = _in_china(lon, lat)
    return np.column_stack([np.where(inside, lon + dlon, lon), np.where(inside, lat + dlat, lat)])


def gcj02_to_wgs84(lonlat: Coordinates, tolerance_deg: float = 1e-10, max_iterations: int = 30) -> Coordinates:
    """Remove the GCJ-02 offset: iterate w <- w - (gcj(w) - g) until gcj(w) matches g."""
    target = np.asarray(lonlat, dtype=np.float64)
    guess = target.copy()
    for _ in range(max_iterations):
        error = wgs84_to_gcj02(guess) - target
        guess -= error
        if np.max(np.abs(error), initial=0.0) < tolerance_deg:
            break
    return guess


def is_gcj02(name: str) -> bool:
    return name.strip().lower() in _GCJ02_ALIASES


@lru_cache(maxsize=32)
def parse_crs(name: str) -> pyproj.CRS | None:
    """The pyproj CRS of a source CRS name; None for GCJ-02. Unknown names raise SourceError."""
    if is_gcj02(name):
        return None
    try:
        return pyproj.CRS.from_user_input(name)
    except pyproj.exceptions.CRSError as exc:
        raise SourceError(f"unknown CRS '{name}': use EPSG:NNNN or GCJ-02") from exc


@lru_cache(maxsize=32)
def _to_storage(source: pyproj.CRS) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(source, STORAGE_SRID, always_xy=True)


def to_storage_crs(geometries: NDArray[np.object_], source_crs: str) -> NDArray[np.object_]:
    """Geometries in source_crs (x = easting/longitude) transformed to EPSG:4490 lon/lat."""
    crs = parse_crs(source_crs)
    if crs is None:
        return shapely.transform(geometries, gcj02_to_wgs84)
    if crs.to_epsg() == STORAGE_SRID:
        return geometries
    return reproject(geometries, _to_storage(crs))


@overload
def reproject[G: shapely.Geometry](geometries: G, transformer: pyproj.Transformer) -> G: ...
@overload
def reproject(geometries: NDArray[np.object_], transformer: pyproj.Transformer) -> NDArray[np.object_]: ...


def reproject(geometries: NDArray[np.object_] | shapely.Geometry, transformer: pyproj.Transformer
              ) -> NDArray[np.object_] | shapely.Geometry:
    """Geometries (an array, or one) through an always_xy transformer (x = easting/longitude in and out)."""
    return shapely.transform(geometries, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def from_storage_to_gcj02(geometries: NDArray[np.object_]) -> NDArray[np.object_]:
    """EPSG:4490 geometries as Amap would draw them (for writing GCJ-02 deliveries)."""
    return shapely.transform(geometries, wgs84_to_gcj02)
