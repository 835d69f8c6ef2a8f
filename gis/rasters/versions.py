"""ops.raster_versions (migration 008): which COG file holds a raster layer now, or at an instant."""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

COLUMNS = sql.SQL(
    "version_id, layer_id, refresh_id, valid_from, valid_to, checksum, path, crs, bounds, lonlat_bounds, "
    "width, height, bands, resolution, nodata, overviews")
# The version in force at %(at)s (now when NULL): valid_from <= at < valid_to.
AT_SQL = sql.SQL(
    "SELECT {} FROM ops.raster_versions WHERE layer_id = %(layer)s "
    "AND valid_from <= coalesce(%(at)s, now()) AND (valid_to IS NULL OR valid_to > coalesce(%(at)s, now())) "
    "ORDER BY valid_from DESC LIMIT 1").format(COLUMNS)
CURRENT_SQL = sql.SQL("SELECT {} FROM ops.raster_versions WHERE valid_to IS NULL ORDER BY layer_id").format(COLUMNS)
HISTORY_SQL = sql.SQL("SELECT {} FROM ops.raster_versions WHERE layer_id = %(layer)s ORDER BY valid_from").format(
    COLUMNS)


@dataclass(frozen=True)
class RasterVersion:
    version_id: int
    layer_id: str
    refresh_id: int
    valid_from: datetime
    valid_to: datetime | None
    checksum: str
    path: Path
    crs: str
    bounds: tuple[float, float, float, float]
    lonlat_bounds: tuple[float, float, float, float]
    width: int
    height: int
    bands: int
    resolution: tuple[float, float]
    nodata: float | None
    overviews: tuple[int, ...]

    @property
    def etag(self) -> str:
        """Changes with every version, and only then (the checksum tells files apart across databases)."""
        return f"{self.layer_id}-v{self.version_id}-{self.checksum[:12]}"


def from_row(row: tuple[Any, ...]) -> RasterVersion:
    (version_id, layer_id, refresh_id, valid_from, valid_to, checksum, path, crs, bounds, lonlat, width, height,
     bands, resolution, nodata, overviews) = row
    return RasterVersion(int(version_id), layer_id, int(refresh_id), valid_from, valid_to, checksum, Path(path), crs,
                         tuple(bounds), tuple(lonlat), int(width), int(height), int(bands), tuple(resolution),
                         nodata, tuple(overviews))


def version_at(conn: psycopg.Connection, layer_id: str, at: datetime | None = None) -> RasterVersion | None:
    row = conn.execute(AT_SQL, {"layer": layer_id, "at": at}).fetchone()
    return from_row(row) if row else None


def history(conn: psycopg.Connection, layer_id: str) -> list[RasterVersion]:
    return [from_row(r) for r in conn.execute(HISTORY_SQL, {"layer": layer_id}).fetchall()]
