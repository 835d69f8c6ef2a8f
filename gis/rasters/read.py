"""Reading a raster version: coverage subsets as GeoTIFF, map tiles as PNG, values at points.

Every read opens the version's COG (cheap: the header and the blocks it needs) in the calling thread;
rasterio datasets are not shared between threads.
"""

import io
import math
from dataclasses import dataclass

import numpy as np
import rasterio
from numpy.typing import NDArray
from PIL import Image
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds
from rasterio.warp import reproject
from rasterio.windows import Window
from rasterio.windows import from_bounds as window_from_bounds

from gis.errors import InvalidInput
from gis.layers import RasterSpec, RenderingKind
from gis.rasters import render
from gis.rasters.versions import RasterVersion

TILE_SIZE = 256
WEB_MERCATOR_HALF = 20037508.342789244  # metres from the origin to the edge of the square world
MAX_COVERAGE_CELLS = 4096 * 4096 * 3  # a subset larger than this is refused: ask for a smaller bbox
Bounds = tuple[float, float, float, float]


def window_of(dataset: rasterio.io.DatasetReader, bounds: Bounds) -> Window:
    """The cells that meet `bounds` (in the dataset's CRS), whole cells outward, cut to the dataset."""
    # Cut to the dataset first: a box of +-1e308 would overflow the cell arithmetic into inf and NaN.
    left, bottom, right, top = dataset.bounds
    x0, y0, x1, y1 = max(bounds[0], left), max(bounds[1], bottom), min(bounds[2], right), min(bounds[3], top)
    if not (x0 < x1 and y0 < y1):
        raise InvalidInput("bbox", "does not meet the coverage's extent")
    wanted = window_from_bounds(x0, y0, x1, y1, transform=dataset.transform)
    col0, row0 = math.floor(wanted.col_off + 1e-9), math.floor(wanted.row_off + 1e-9)
    col1 = math.ceil(wanted.col_off + wanted.width - 1e-9)
    row1 = math.ceil(wanted.row_off + wanted.height - 1e-9)
    col0, row0 = max(col0, 0), max(row0, 0)
    col1, row1 = min(col1, dataset.width), min(row1, dataset.height)
    if col1 <= col0 or row1 <= row0:
        raise InvalidInput("bbox", "does not meet the coverage's extent")
    return Window(col0, row0, col1 - col0, row1 - row0)


def coverage_geotiff(version: RasterVersion, bounds: Bounds | None) -> bytes:
    """The cells inside `bounds` (the layer's CRS; None: all), as a GeoTIFF with the layer's CRS and nodata."""
    with rasterio.open(version.path) as src:
        window = window_of(src, bounds) if bounds is not None else Window(0, 0, src.width, src.height)
        if window.width * window.height * src.count > MAX_COVERAGE_CELLS:
            raise InvalidInput("bbox", f"asks for {int(window.width)} x {int(window.height)} cells; at most "
                                       f"{MAX_COVERAGE_CELLS // src.count:,} per band, ask for a smaller area")
        data = src.read(window=window)
        profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": src.count,
                   "dtype": data.dtype, "crs": src.crs, "transform": src.window_transform(window),
                   "nodata": src.nodata, "compress": "deflate", "tiled": data.shape[1] >= 256 and data.shape[2] >= 256}
        with MemoryFile() as memory:
            with memory.open(**profile) as dst:
                dst.write(data)
                dst.colorinterp = src.colorinterp
            return bytes(memory.read())


# -- map tiles -----------------------------------------------------------------------------------------

def tile_bounds(z: int, x: int, y: int) -> Bounds:
    """WebMercatorQuad tile (tileMatrix z, tileCol x, tileRow y from the top) in EPSG:3857 metres."""
    size = 2 * WEB_MERCATOR_HALF / (1 << z)
    left, top = -WEB_MERCATOR_HALF + x * size, WEB_MERCATOR_HALF - y * size
    return left, top - size, left + size, top


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    """(tileCol, tileRow) of the WebMercatorQuad tile holding a lon/lat point at zoom z."""
    n = 1 << z
    col = int((lon + 180.0) / 360.0 * n)
    row = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return min(max(col, 0), n - 1), min(max(row, 0), n - 1)


def _overview_level(src: rasterio.io.DatasetReader, version: RasterVersion, tile_metres: float) -> int | None:
    """The coarsest overview still at least as fine as the tile's cells (None: full resolution)."""
    lat = math.radians((version.lonlat_bounds[1] + version.lonlat_bounds[3]) / 2)
    degrees = src.crs.is_geographic
    cell = src.res[0] * (111_320.0 * math.cos(lat) if degrees else 1.0)
    ground = tile_metres * math.cos(lat)  # a Web Mercator metre is 1/cos(lat) ground metres
    level = None
    for index, factor in enumerate(src.overviews(1)):
        if cell * factor <= ground:
            level = index
    return level


@dataclass(frozen=True)
class TileStyle:
    id: str
    title: str


def styles(spec: RasterSpec) -> tuple[TileStyle, ...]:
    """The map styles of a layer: its rendering first (the default), and the plain ramp of a shaded DEM."""
    kind = spec.rendering.kind
    found = [TileStyle("default", {RenderingKind.hillshade: "colour ramp with relief shading",
                                   RenderingKind.ramp: "colour ramp", RenderingKind.rgb: "true colour",
                                   RenderingKind.classes: "class palette"}[kind])]
    if kind is RenderingKind.hillshade:
        found.append(TileStyle("ramp", "colour ramp without shading"))
    return tuple(found)


def tile_png(version: RasterVersion, spec: RasterSpec, z: int, x: int, y: int, style: str = "default") -> bytes:
    """One 256 x 256 PNG map tile, transparent where there is no data."""
    bounds = tile_bounds(z, x, y)
    tile_metres = (bounds[2] - bounds[0]) / TILE_SIZE
    with rasterio.open(version.path) as probe:
        level = _overview_level(probe, version, tile_metres)
    options = {"overview_level": level} if level is not None else {}
    bands = np.full((len(spec.bands), TILE_SIZE, TILE_SIZE), spec.nodata, dtype=spec.data_type.value)
    with rasterio.open(version.path, **options) as src:
        reproject(rasterio.band(src, list(range(1, src.count + 1))), bands, src_nodata=src.nodata,
                  dst_transform=from_bounds(*bounds, TILE_SIZE, TILE_SIZE), dst_crs="EPSG:3857",
                  dst_nodata=spec.nodata, resampling=Resampling[spec.resampling.value])
    valid = np.all(bands != spec.nodata, axis=0)
    lat = math.radians((version.lonlat_bounds[1] + version.lonlat_bounds[3]) / 2)
    ground = tile_metres * math.cos(lat)
    shown = spec if style == "default" else spec.model_copy(
        update={"rendering": spec.rendering.model_copy(update={"kind": RenderingKind.ramp})})
    image = render.render(bands, valid, shown, (ground, ground))
    out = io.BytesIO()
    Image.fromarray(image, "RGBA").save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


# -- values at points ----------------------------------------------------------------------------------

def sample(version: RasterVersion, xs: NDArray[np.float64], ys: NDArray[np.float64], bilinear: bool,
           band: int = 1) -> list[float | None]:
    """The band's value at each point (the layer's CRS): the cell's value, or bilinear between the four
    nearest cell centres; None outside the raster or where a cell used is nodata."""
    with rasterio.open(version.path) as src:
        inverse = ~src.transform
        cols, rows = inverse @ (np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
        cols, rows = np.atleast_1d(cols), np.atleast_1d(rows)
        inside = np.isfinite(cols) & np.isfinite(rows) & (cols >= 0) & (rows >= 0)
        inside &= (cols < src.width) & (rows < src.height)
        values = np.full(len(cols), np.nan)
        if not inside.any():
            return [None] * len(cols)
        # Cell centres sit at .5: the four around a point start at floor(c - .5); the cell itself at floor(c).
        shift = 0.5 if bilinear else 0.0
        c0 = np.floor(np.where(inside, cols, 0) - shift).astype(np.int64)
        r0 = np.floor(np.where(inside, rows, 0) - shift).astype(np.int64)
        span = 2 if bilinear else 1
        left, top = int(c0[inside].min()), int(r0[inside].min())
        width, height = int(c0[inside].max()) - left + span, int(r0[inside].max()) - top + span
        # Only the window around the points inside is read (boundless: a point on the edge has neighbours).
        data = src.read(band, window=Window(left, top, width, height), boundless=True,
                        fill_value=src.nodata).astype(np.float64)
        nodata = src.nodata
    ci, ri = np.where(inside, c0 - left, 0), np.where(inside, r0 - top, 0)
    if bilinear:
        fx, fy = cols - 0.5 - c0, rows - 0.5 - r0
        corners = np.stack([data[ri, ci], data[ri, ci + 1], data[ri + 1, ci], data[ri + 1, ci + 1]])
        weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
        ok = inside & np.all(corners != nodata, axis=0)
        values[ok] = np.sum(corners * weights, axis=0)[ok]
    else:
        cell = data[ri, ci]
        ok = inside & (cell != nodata)
        values[ok] = cell[ok]
    return [float(v) if k else None for v, k in zip(values, ok, strict=True)]
