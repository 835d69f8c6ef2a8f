"""Refresh of a raster layer: validate the delivered GeoTIFF, reproject it into a Cloud-Optimised GeoTIFF
with overviews, and make it the current version, all or nothing.

The COG is written to a temporary name in the layer's folder and renamed into place (atomic on one file
system); only then is its version committed (ops.raster_versions, with the refresh's ops.refresh_log row)
in one transaction that also closes the previous version. A failed or killed refresh leaves the served
version as it was: at worst an uncommitted file nobody points at. Old versions stay for `datetime`.
"""

import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.shutil import copy as gdal_copy
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds

from gis.errors import GisError, SourceError
from gis.layers import RasterSpec
from gis.refresh import record
from gis.refresh.runner import acquire_layer_lock
from gis.refresh.validate import Extent

# GDAL's warper approximates the reprojection to 0.125 cell by default; a DEM sampled for pipe cover wants
# the exact one (0 is refused by WarpedVRT, a millionth of a cell is exact for every purpose here).
EXACT = 1e-6
COG_OPTIONS = {"COMPRESS": "DEFLATE", "BLOCKSIZE": "256", "OVERVIEWS": "AUTO", "BIGTIFF": "IF_SAFER",
               "NUM_THREADS": "1"}


@dataclass(frozen=True)
class RasterRefreshRequest:
    spec: RasterSpec
    source_path: Path
    city_extent: Extent
    rasters_dir: Path
    force: bool = False


@dataclass(frozen=True)
class RasterRefreshResult:
    layer_id: str
    refresh_id: int
    source_unchanged: bool
    version_id: int | None
    path: Path | None
    seconds: float

    def summary(self) -> str:
        if self.source_unchanged:
            return f"{self.layer_id}: source unchanged since the last refresh, nothing to do"
        return (f"{self.layer_id}: version {self.version_id} written to {self.path} in {self.seconds:.1f}s "
                f"(refresh {self.refresh_id})")


def checksum(path: Path, spec: RasterSpec) -> str:
    """The delivery's bytes and the layer's definition: either changing means a new version."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror}") from None
    digest.update(spec.model_dump_json().encode())
    return digest.hexdigest()


def _inside(bounds: tuple[float, float, float, float], extent: Extent) -> bool:
    return bounds[0] >= extent[0] and bounds[1] >= extent[1] and bounds[2] <= extent[2] and bounds[3] <= extent[3]


def validate(path: Path, spec: RasterSpec, city_extent: Extent) -> None:
    """The delivery's CRS, nodata, bands, type and bounds against the layer; a SourceError in one line if not."""
    try:
        src = rasterio.open(path)
    except RasterioIOError:
        raise SourceError(f"{path.name}: not a readable GeoTIFF") from None
    with src:
        if src.driver != "GTiff":
            raise SourceError(f"{path.name}: a {src.driver} file; the layer takes GeoTIFF")
        declared = CRS.from_user_input(spec.source.crs)
        if src.crs is None:
            raise SourceError(f"{path.name}: declares no CRS; the layer's deliveries are in {spec.source.crs}")
        if src.crs != declared:
            raise SourceError(f"{path.name}: CRS is {src.crs.to_string()[:80]}, the layer's deliveries are in "
                              f"{spec.source.crs}")
        if src.nodata is None:
            raise SourceError(f"{path.name}: declares no nodata value; the layer's is {spec.nodata:g}")
        if src.nodata != spec.nodata:
            raise SourceError(f"{path.name}: nodata is {src.nodata:g}, the layer's is {spec.nodata:g}")
        if src.count != len(spec.bands):
            raise SourceError(f"{path.name}: {src.count} band(s), the layer has {len(spec.bands)} "
                              f"({', '.join(b.name for b in spec.bands)})")
        if src.dtypes[0] != spec.data_type.value:
            raise SourceError(f"{path.name}: cells are {src.dtypes[0]}, the layer's are {spec.data_type.value}")
        if not src.transform.is_rectilinear:
            raise SourceError(f"{path.name}: a rotated grid; deliveries are north-up")
        lonlat = transform_bounds(src.crs, "EPSG:4490", *src.bounds, densify_pts=21)
        if not _inside(lonlat, city_extent):
            shown = ", ".join(f"{v:.4f}" for v in lonlat)
            raise SourceError(f"{path.name}: bounds ({shown}, lon/lat) leave the city extent "
                              f"{', '.join(f'{v:g}' for v in city_extent)}")


def write_cog(source: Path, spec: RasterSpec, target: Path) -> None:
    """Reproject into the layer's CRS and write a COG with overviews at `target` (atomically: temp + rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.part"
    resampling = Resampling[spec.resampling.value]
    overview = "NEAREST" if spec.resampling.value == "nearest" else "AVERAGE"
    try:
        with rasterio.Env(GDAL_NUM_THREADS="1"), rasterio.open(source) as src:
            crs = CRS.from_user_input(spec.crs)
            transform, width, height = calculate_default_transform(
                src.crs, crs, src.width, src.height, *src.bounds, resolution=spec.resolution)
            with WarpedVRT(src, crs=crs, transform=transform, width=width, height=height, resampling=resampling,
                           src_nodata=src.nodata, nodata=spec.nodata, tolerance=EXACT) as vrt:
                gdal_copy(vrt, partial, driver="COG", OVERVIEW_RESAMPLING=overview, PREDICTOR="YES",
                          **COG_OPTIONS)
        with partial.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        partial.unlink(missing_ok=True)


def _record_version(conn: psycopg.Connection, spec: RasterSpec, refresh_id: int, started_at: datetime,
                    source: Path, digest: str, path: Path, seconds: float) -> int:
    """The refresh log row, the previous version closed and this one opened: the caller's one transaction."""
    with rasterio.open(path) as cog:
        lonlat = transform_bounds(cog.crs, "EPSG:4326", *cog.bounds, densify_pts=21)
        values = {"layer": spec.id, "refresh": refresh_id, "checksum": digest, "path": str(path.resolve()),
                  "crs": spec.crs, "bounds": list(cog.bounds), "lonlat": list(lonlat), "width": cog.width,
                  "height": cog.height, "bands": cog.count, "res": list(cog.res), "nodata": cog.nodata,
                  "overviews": cog.overviews(1)}
    conn.execute(
        "INSERT INTO ops.refresh_log (refresh_id, layer_id, status, started_at, source_path, source_checksum, "
        "inserted, updated, closed, unchanged, rejected, timings) VALUES (%s, %s, 'succeeded', %s, %s, %s, "
        "1, 0, 0, 0, 0, jsonb_build_object('cog', %s::float8))",
        (refresh_id, spec.id, started_at, str(source), digest, round(seconds, 3)))
    conn.execute("UPDATE ops.raster_versions SET valid_to = now() WHERE layer_id = %s AND valid_to IS NULL",
                 (spec.id,))
    row = conn.execute(
        "INSERT INTO ops.raster_versions (layer_id, refresh_id, valid_from, checksum, path, crs, bounds, "
        "lonlat_bounds, width, height, bands, resolution, nodata, overviews) VALUES (%(layer)s, %(refresh)s, "
        "now(), %(checksum)s, %(path)s, %(crs)s, %(bounds)s, %(lonlat)s, %(width)s, %(height)s, %(bands)s, "
        "%(res)s, %(nodata)s, %(overviews)s) RETURNING version_id", values).fetchone()
    assert row is not None
    return int(row[0])


def _record_unchanged(conn: psycopg.Connection, spec: RasterSpec, started_at: datetime, source: Path,
                      digest: str) -> int:
    refresh_id = record.next_refresh_id(conn)
    conn.execute(
        "INSERT INTO ops.refresh_log (refresh_id, layer_id, status, started_at, source_path, source_checksum, "
        "inserted, updated, closed, unchanged, rejected, timings, message) VALUES (%s, %s, 'succeeded', %s, %s, "
        "%s, 0, 0, 0, 1, 0, '{\"skipped\": 0}', 'source unchanged')",
        (refresh_id, spec.id, started_at, str(source), digest))
    return refresh_id


def _record_failure(url: str, spec: RasterSpec, started_at: datetime, source: Path, message: str) -> None:
    """On its own connection: the refresh's transaction has been rolled back."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO ops.refresh_log (layer_id, status, started_at, source_path, message) "
                     "VALUES (%s, 'failed', %s, %s, %s)", (spec.id, started_at, str(source), message))


def version_file(rasters_dir: Path, spec: RasterSpec, refresh_id: int, digest: str) -> Path:
    return rasters_dir / spec.domain.value / spec.id / f"{spec.id}-r{refresh_id}-{digest[:12]}.tif"


def run_raster_refresh(url: str, request: RasterRefreshRequest) -> RasterRefreshResult:
    """Refresh one raster layer. Raises SourceError with a one-line reason; the served version stays then."""
    spec, source, started_at = request.spec, request.source_path, datetime.now(UTC)
    clock = time.perf_counter()
    try:
        digest = checksum(source, spec)
        with psycopg.connect(url, application_name=f"gis-refresh:{spec.id}") as conn:
            acquire_layer_lock(conn, spec.id)
            if not request.force and record.last_success_checksum(conn, spec.id) == digest:
                refresh_id = _record_unchanged(conn, spec, started_at, source, digest)
                return RasterRefreshResult(spec.id, refresh_id, True, None, None, _since(clock))
            validate(source, spec, request.city_extent)
            refresh_id = record.next_refresh_id(conn)
            target = version_file(request.rasters_dir, spec, refresh_id, digest)
            try:
                write_cog(source, spec, target)
            except rasterio.errors.RasterioError as exc:
                raise SourceError(f"{source.name}: cannot be reprojected: {str(exc).splitlines()[0][:200]}") from None
            try:
                version_id = _record_version(conn, spec, refresh_id, started_at, source, digest, target,
                                             _since(clock))
                conn.commit()
            except BaseException:
                target.unlink(missing_ok=True)  # never committed: nobody points at it
                raise
        return RasterRefreshResult(spec.id, refresh_id, False, version_id, target, _since(clock))
    except SourceError as exc:
        _record_failure(url, spec, started_at, source, str(exc))
        raise
    except OSError as exc:
        raise GisError(f"{spec.id}: cannot write under {request.rasters_dir}: {exc.strerror}") from None


def _since(clock: float) -> float:
    return time.perf_counter() - clock
