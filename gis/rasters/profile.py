"""Elevation at points, and the longitudinal profile along pipes or a line: ground from the DEM against the
pipe top from the pipes' depths, as data and as a chart (SVG, in an HTML page with the route drawn).

Depths are cover to the pipe top at each end of a segment (depth_start_m at its first vertex); the pipe is
straight between, so its top elevation is interpolated linearly between ground(start) - depth_start and
ground(end) - depth_end. Distances are measured in EPSG:4550 (Gauss-Krüger CM 123E), where Shenyang sits on
the central meridian and a metre is a metre.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import pyproj
import shapely
from psycopg import sql
from shapely.geometry import LineString

from gis import identifiers as ids
from gis.errors import InvalidInput, NotFound
from gis.layers import LayerSpec, RasterSpec
from gis.rasters import read
from gis.rasters.versions import RasterVersion
from gis.rendering import Drawing, Shape, render, svg

METRIC_CRS = "EPSG:4550"
MAX_STATIONS = 20_000
MAX_PIPES = 500


@dataclass(frozen=True)
class Segment:
    fid: str
    line: LineString  # METRIC_CRS, oriented along the profile
    depth_start_m: float | None  # at the oriented line's start
    depth_end_m: float | None
    utility: str | None
    diameter_mm: int | None


@dataclass(frozen=True)
class Station:
    distance_m: float
    lon: float
    lat: float
    ground_m: float | None
    pipe: str | None = None
    pipe_top_m: float | None = None

    @property
    def cover_m(self) -> float | None:
        if self.ground_m is None or self.pipe_top_m is None:
            return None
        return self.ground_m - self.pipe_top_m


@dataclass(frozen=True)
class Profile:
    layer_id: str
    version_id: int
    step_m: float
    length_m: float
    stations: list[Station]
    pipes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        covers = [s.cover_m for s in self.stations if s.cover_m is not None]
        grounds = [s.ground_m for s in self.stations if s.ground_m is not None]
        return {
            "dem": self.layer_id, "dem_version": self.version_id, "step_m": self.step_m,
            "length_m": round(self.length_m, 2), "pipes": self.pipes,
            "summary": {"ground_min_m": _r(min(grounds)) if grounds else None,
                        "ground_max_m": _r(max(grounds)) if grounds else None,
                        "cover_min_m": _r(min(covers)) if covers else None,
                        "cover_max_m": _r(max(covers)) if covers else None},
            "points": [{"distance_m": _r(s.distance_m), "lon": round(s.lon, 7), "lat": round(s.lat, 7),
                        "ground_m": _r(s.ground_m), "pipe": s.pipe, "pipe_top_m": _r(s.pipe_top_m),
                        "cover_m": _r(s.cover_m)} for s in self.stations],
        }


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _transformer(source: str, target: str) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(source, target, always_xy=True)


def values_at(version: RasterVersion, spec: RasterSpec, lonlat: np.ndarray, bilinear: bool) -> list[float | None]:
    """The raster's first band at lon/lat points (EPSG:4490)."""
    xs, ys = lonlat[:, 0], lonlat[:, 1]
    if spec.crs != "EPSG:4490":
        xs, ys = _transformer("EPSG:4490", spec.crs).transform(xs, ys)
    return read.sample(version, np.asarray(xs), np.asarray(ys), bilinear)


# -- the route ----------------------------------------------------------------------------------------

def pipe_segments(conn: psycopg.Connection, pipelines: LayerSpec, fids: Sequence[str]) -> list[Segment]:
    """The pipes in the order given, each turned to continue from the previous one's end."""
    if not fids:
        raise InvalidInput("pipes", "name at least one pipe fid")
    if len(fids) > MAX_PIPES:
        raise InvalidInput("pipes", f"{len(fids)} pipes; at most {MAX_PIPES}")
    query = sql.SQL("SELECT fid, ST_AsBinary(ST_Transform(geom, 4550)), {}, {}, {}, {} FROM {} "
                    "WHERE fid = ANY(%s)").format(
        ids.column(pipelines, "depth_start_m"), ids.column(pipelines, "depth_end_m"),
        ids.column(pipelines, "utility"), ids.column(pipelines, "diameter_mm"), ids.current_table(pipelines))
    rows = {r[0]: r for r in conn.execute(query, (list(fids),)).fetchall()}
    missing = [f for f in fids if f not in rows]
    if missing:
        raise NotFound(f"pipes: no pipe '{missing[0][:80]}'")
    segments: list[Segment] = []
    for fid in fids:
        _, wkb, d0, d1, utility, diameter = rows[fid]
        line = shapely.from_wkb(bytes(wkb))
        assert isinstance(line, LineString)  # the pipelines layer's geometry type
        if segments:
            end = shapely.Point(segments[-1].line.coords[-1])
            first, last = shapely.Point(line.coords[0]), shapely.Point(line.coords[-1])
            if last.distance(end) < first.distance(end):
                line, d0, d1 = shapely.reverse(line), d1, d0
        segments.append(Segment(fid, line, d0, d1, utility, diameter))
    return segments


def line_in_metres(geometry: LineString) -> LineString:
    """A lon/lat (EPSG:4490) line in METRIC_CRS."""
    return shapely.transform(geometry, lambda c: np.column_stack(
        _transformer("EPSG:4490", METRIC_CRS).transform(c[:, 0], c[:, 1])))


def _stations_along(line: LineString, step_m: float) -> np.ndarray:
    length = line.length
    along = np.arange(0.0, length, step_m)
    return np.append(along, length) if length > 0 else np.array([0.0])


def profile(version: RasterVersion, spec: RasterSpec, parts: Sequence[Segment | LineString],
            step_m: float) -> Profile:
    """Ground every `step_m` along the parts (and at each part's ends); pipe top where a part is a pipe."""
    pieces: list[tuple[Segment | None, LineString, np.ndarray, float]] = []
    offset = 0.0
    for part in parts:
        line = part.line if isinstance(part, Segment) else part
        along = _stations_along(line, step_m)
        pieces.append((part if isinstance(part, Segment) else None, line, along, offset))
        offset += line.length
    total = sum(len(p[2]) for p in pieces)
    if total > MAX_STATIONS:
        raise InvalidInput("step_m", f"{total:,} points along {offset:,.0f} m; at most {MAX_STATIONS:,}: "
                                        "use a larger step")
    xy = np.vstack([shapely.get_coordinates(shapely.line_interpolate_point(line, along))
                    for _, line, along, _ in pieces])
    lon, lat = _transformer(METRIC_CRS, "EPSG:4490").transform(xy[:, 0], xy[:, 1])
    lonlat = np.column_stack([lon, lat])
    ground = values_at(version, spec, lonlat, bilinear=True)
    stations: list[Station] = []
    k = 0
    pipes = []
    for segment, line, along, start in pieces:
        g = ground[k:k + len(along)]
        top0 = top1 = None
        if segment is not None:
            if g[0] is not None and segment.depth_start_m is not None:
                top0 = g[0] - segment.depth_start_m
            if g[-1] is not None and segment.depth_end_m is not None:
                top1 = g[-1] - segment.depth_end_m
            pipes.append({"fid": segment.fid, "utility": segment.utility, "diameter_mm": segment.diameter_mm,
                          "from_m": _r(start), "to_m": _r(start + line.length),
                          "depth_start_m": segment.depth_start_m, "depth_end_m": segment.depth_end_m})
        for j, distance in enumerate(along):
            top = None
            if top0 is not None and top1 is not None:
                share = distance / line.length if line.length > 0 else 0.0
                top = top0 + (top1 - top0) * share
            stations.append(Station(start + float(distance), float(lon[k + j]), float(lat[k + j]), g[j],
                                    segment.fid if segment else None, top))
        k += len(along)
    return Profile(spec.id, version.version_id, step_m, offset, stations, pipes)


# -- chart ----------------------------------------------------------------------------------------------

def _nice_step(span: float, ticks: int = 6) -> float:
    raw = max(span, 1e-9) / ticks
    power = 10 ** np.floor(np.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def chart(found: Profile, width: int = 960, height: int = 360) -> Drawing:
    """Ground (brown, filled) and pipe top (blue) against distance, with axes."""
    left, right, top, bottom = 64, 16, 16, 40
    d = [s.distance_m for s in found.stations]
    values = [v for s in found.stations for v in (s.ground_m, s.pipe_top_m) if v is not None]
    if not values:
        return Drawing(400, 40, [Shape("text", {"x": 8, "y": 24},
                                       text="no elevation along this route (outside the DEM)")], background=None)
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.1, 1.0)
    lo, hi = lo - pad, hi + pad
    x_max = max(d[-1], 1e-9)

    def x(v: float) -> float:
        return left + (width - left - right) * v / x_max

    def y(v: float) -> float:
        return top + (height - top - bottom) * (hi - v) / (hi - lo)

    def path(key: str) -> str:
        runs: list[list[str]] = []
        current: list[str] = []
        for s in found.stations:
            value = getattr(s, key)
            if value is None:
                if current:
                    runs.append(current)
                current = []
            else:
                current.append(f"{x(s.distance_m):.1f},{y(value):.1f}")
        if current:
            runs.append(current)
        return "".join(f"M{' L'.join(run)}" for run in runs)

    def label(at_x: float, at_y: float, text: str, **attrs: Any) -> Shape:
        return Shape("text", {"x": f"{at_x:.1f}", "y": f"{at_y:.1f}", "font-size": 11, "font-family": "sans-serif",
                              **attrs}, text=text)

    ground = path("ground_m")
    shapes: list[Shape] = []
    if ground and all(s.ground_m is not None for s in found.stations):
        shapes.append(Shape("path", {"d": f"{ground} L{x(d[-1]):.1f},{height - bottom} L{x(0):.1f},{height - bottom} Z",
                                     "fill": "#e6d3b3", "stroke": "none"}))
    step = _nice_step(hi - lo)
    for tick in np.arange(np.ceil(lo / step) * step, hi, step):
        shapes += [Shape("line", {"x1": left, "x2": width - right, "y1": f"{y(tick):.1f}", "y2": f"{y(tick):.1f}",
                                  "stroke": "#ddd"}),
                   label(left - 6, y(tick) + 4, f"{tick:g}", **{"text-anchor": "end"})]
    xstep = _nice_step(x_max, 8)
    for tick in np.arange(0, x_max + 1e-9, xstep):
        shapes.append(label(x(tick), height - bottom + 16, f"{tick:g}", **{"text-anchor": "middle"}))
    for pipe in found.pipes[1:]:
        shapes.append(Shape("line", {"x1": f"{x(pipe['from_m']):.1f}", "x2": f"{x(pipe['from_m']):.1f}", "y1": top,
                                     "y2": height - bottom, "stroke": "#999", "stroke-dasharray": "3,3"}))
    middle = (top + height - bottom) / 2
    shapes += [Shape("path", {"d": ground, "fill": "none", "stroke": "#8b5a2b", "stroke-width": 2}),
               Shape("path", {"d": path("pipe_top_m"), "fill": "none", "stroke": "#1f5fbf", "stroke-width": 2}),
               Shape("line", {"x1": left, "x2": left, "y1": top, "y2": height - bottom, "stroke": "#333"}),
               Shape("line", {"x1": left, "x2": width - right, "y1": height - bottom, "y2": height - bottom,
                              "stroke": "#333"}),
               label((left + width - right) / 2, height - 6, "distance (m)", **{"text-anchor": "middle"}),
               label(14, middle, "elevation (m)", transform=f"rotate(-90 14 {middle})", **{"text-anchor": "middle"}),
               label(width - right - 4, top + 12, "ground 地面", fill="#8b5a2b", **{"text-anchor": "end"}),
               label(width - right - 4, top + 26, "pipe top 管顶", fill="#1f5fbf", **{"text-anchor": "end"})]
    return Drawing(width, height, shapes, background=None)


def chart_svg(found: Profile) -> str:
    """The chart as a self-contained SVG document (the process's `svg` format)."""
    return svg(chart(found))


def route(found: Profile, size: int = 360) -> Drawing:
    """The route in plan view (north up), start marked, so the chart can be placed on the ground."""
    lon = np.array([s.lon for s in found.stations])
    lat = np.array([s.lat for s in found.stations])
    scale_x = np.cos(np.radians(lat.mean()))
    w, h = max(np.ptp(lon) * scale_x, 1e-9), max(np.ptp(lat), 1e-9)
    k = (size - 20) / max(w, h)
    xs = 10 + (lon - lon.min()) * scale_x * k
    ys = size - 10 - (lat - lat.min()) * k
    points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys, strict=True))
    return Drawing(size, size, [
        Shape("rect", {"width": size, "height": size, "fill": "#f8faf8", "stroke": "#ccc"}),
        Shape("polyline", {"points": points, "fill": "none", "stroke": "#1f5fbf", "stroke-width": 3}),
        Shape("circle", {"cx": f"{xs[0]:.1f}", "cy": f"{ys[0]:.1f}", "r": 5, "fill": "#2a2"}),
        Shape("circle", {"cx": f"{xs[-1]:.1f}", "cy": f"{ys[-1]:.1f}", "r": 5, "fill": "#c22"}),
        Shape("text", {"x": size - 14, "y": 20, "font-size": 14}, text="N↑")], background=None)


def to_html(found: Profile, title: str) -> str:
    return render("reports/profile.html", title=title, found=found, data=found.as_dict(), chart=chart(found),
                  route=route(found))
