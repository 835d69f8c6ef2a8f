"""Cells to colours: the colour ramp, relief shading, class palettes and true colour, as RGBA arrays.

Pure numpy; the map tiles (services/routers/map_tiles.py) and the sample generator's imagery use it.
"""

import numpy as np
from numpy.typing import NDArray

from gis.layers import RasterSpec, RenderingKind

RGBA = NDArray[np.uint8]
SUN_AZIMUTH = 315.0  # north-west light, the cartographic convention
SUN_ALTITUDE = 45.0


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def hillshade(elevation: NDArray[np.floating], cell_x: float, cell_y: float) -> NDArray[np.float64]:
    """Lambertian shading in 0..1 of a grid whose first row is north; cell sizes in the elevation's unit."""
    dz_south, dz_east = np.gradient(elevation.astype(np.float64), cell_y, cell_x)  # rows run south
    slope = np.arctan(np.hypot(dz_east, dz_south))
    # The direction the slope faces, as a mathematical angle (x east, y north): down the gradient.
    aspect = np.arctan2(dz_south, -dz_east)
    azimuth, altitude = np.radians(360.0 - SUN_AZIMUTH + 90.0), np.radians(SUN_ALTITUDE)
    shade = np.sin(altitude) * np.cos(slope) + np.cos(altitude) * np.sin(slope) * np.cos(azimuth - aspect)
    clipped: NDArray[np.float64] = np.clip(shade, 0.0, 1.0)
    return clipped


def ramp(values: NDArray[np.floating], spec: RasterSpec) -> NDArray[np.float64]:
    """RGB (0..255, float) of each value along the layer's stops; beyond the ends, the end colours."""
    stops = spec.rendering.stops
    at = np.array([s.value for s in stops], dtype=np.float64)
    colours = np.array([hex_rgb(s.colour) for s in stops], dtype=np.float64)
    flat = values.astype(np.float64).ravel()
    channels = [np.interp(flat, at, colours[:, k]) for k in range(3)]
    return np.stack(channels, axis=-1).reshape((*values.shape, 3))


def classes(values: NDArray[np.number], spec: RasterSpec) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """RGB of each class code, and where the code is one the layer knows (others stay transparent)."""
    rgb = np.zeros((*values.shape, 3), dtype=np.float64)
    known = np.zeros(values.shape, dtype=bool)
    for stop in spec.rendering.stops:
        hit = values == stop.value
        rgb[hit] = hex_rgb(stop.colour)
        known |= hit
    return rgb, known


def render(bands: NDArray[np.number], valid: NDArray[np.bool_], spec: RasterSpec,
           cell: tuple[float, float] = (1.0, 1.0)) -> RGBA:
    """An RGBA image (rows, cols, 4) of the layer's bands (bands, rows, cols); `valid` False is transparent.

    `cell` is the cell size in the elevation's unit (metres), for relief shading.
    """
    kind = spec.rendering.kind
    opaque = valid.copy()
    if kind is RenderingKind.rgb:
        rgb = np.moveaxis(bands[:3].astype(np.float64), 0, -1)
    elif kind is RenderingKind.classes:
        rgb, known = classes(bands[0], spec)
        opaque &= known
    else:
        values = bands[0].astype(np.float64)
        rgb = ramp(values, spec)
        if kind is RenderingKind.hillshade:
            filled = np.where(valid, values, np.nanmean(values[valid]) if valid.any() else 0.0)
            shade = hillshade(filled, *cell)
            rgb = rgb * (0.45 + 0.75 * shade[..., None])
    image = np.zeros((*bands.shape[1:], 4), dtype=np.uint8)
    image[..., :3] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    image[..., 3] = np.where(opaque, 255, 0).astype(np.uint8)
    image[~opaque, :3] = 0
    return image
