#!/usr/bin/env python3
"""A deterministic synthetic city inside the real Shenyang boundaries, delivered as the departments would.

Streets, pipelines, buildings, plans, environment and policing data are laid out in a local metric frame
around the urban core, then every layer's source file is written in the format, CRS and column names its
`layers/<domain>/<layer>.yml` declares (the registry is the contract, read through gis.layers).

    python data-samples/generate.py --scale small --out data-samples/generated/small [--seed 2026]
    python data-samples/generate.py --scale bench --out data-samples/generated/bench
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyogrio
import pyproj
import shapely
from numpy.typing import NDArray
from pyogrio.raw import write as ogr_write
from shapely.geometry.base import BaseGeometry

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from the repo root, `gis` is not on the path otherwise
    sys.path.insert(0, str(REPO))

from gis.crs import gcj02_to_wgs84, is_gcj02, wgs84_to_gcj02  # noqa: E402
from gis.layers import FieldSpec, FieldType, LayerRegistry, LayerSpec, SourceFormat, load_registry  # noqa: E402
from gis.sensing.readings import reading_fid  # noqa: E402

# All layout happens in CGCS2000 / 3-degree Gauss-Kruger CM 123E: Shenyang sits on its central meridian,
# so a metre here is a metre on the ground and clearances of a few decimetres mean what they say.
FRAME_CRS = "EPSG:4550"
STORAGE_CRS = "EPSG:4490"
REFERENCE = REPO / "data-samples" / "reference" / "shenyang_admin_boundaries_gcj02.geojson"

OBS_START = np.datetime64("2025-11-01")
OBS_DAYS = 365
AS_OF = np.datetime64("2026-11-01T00:00:00")  # the delivery date: incident status and ages count from it

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Objects = NDArray[np.object_]
Bools = NDArray[np.bool_]


# ----------------------------------------------------------------------------------------------------------
# Scales


@dataclass(frozen=True)
class Scale:
    name: str
    window: tuple[float, float, float, float]  # lon/lat box of the street grid (CGCS2000)
    fringe_m: float  # how far beyond the grid the fringe (farmland, red line, satellite town) reaches
    spacing_m: float  # mean distance between parallel streets
    segment_m: float  # longest pipe segment between survey points, before the per-utility factor
    max_buildings_per_block: int
    rings: tuple[tuple[str, float], ...]  # ring expressways: name and half size in metres
    park_radius_m: float
    farmland_cell_m: tuple[float, float]
    ponds: int
    future_clusters: int
    police_stations: int
    air_stations: int
    water_stations: int
    noise_stations: int
    incidents: int
    projects: int
    pollution_sources: int
    sensors: int


SCALES = {
    "small": Scale(
        name="small",
        window=(123.370, 41.725, 123.470, 41.795),
        fringe_m=6000.0,
        spacing_m=450.0,
        segment_m=400.0,
        max_buildings_per_block=12,
        rings=(("二环", 2600.0),),
        park_radius_m=420.0,
        farmland_cell_m=(520.0, 330.0),
        ponds=15,
        future_clusters=2,
        police_stations=15,
        air_stations=8,
        water_stations=3,
        noise_stations=3,
        incidents=3000,
        projects=60,
        pollution_sources=60,
        sensors=120,
    ),
    "bench": Scale(
        name="bench",
        window=(123.250, 41.700, 123.600, 41.920),
        fringe_m=8000.0,
        spacing_m=200.0,
        segment_m=36.0,
        max_buildings_per_block=16,
        rings=(("二环", 4200.0), ("三环", 10000.0)),
        park_radius_m=380.0,
        farmland_cell_m=(420.0, 260.0),
        ponds=60,
        future_clusters=5,
        police_stations=60,
        air_stations=11,
        water_stations=4,
        noise_stations=3,
        incidents=60000,
        projects=400,
        pollution_sources=600,
        sensors=3000,
    ),
}


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent generator per purpose, so adding or reordering a layer leaves the others unchanged."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


# ----------------------------------------------------------------------------------------------------------
# Coordinates


class Projector:
    """Transforms between the layout frame, CGCS2000 lon/lat and the CRS each delivery is written in."""

    def __init__(self) -> None:
        self._transformers: dict[tuple[str, str], pyproj.Transformer] = {}

    def _transformer(self, source: str, target: str) -> pyproj.Transformer:
        key = (source, target)
        if key not in self._transformers:
            self._transformers[key] = pyproj.Transformer.from_crs(source, target, always_xy=True)
        return self._transformers[key]

    def xy(self, x: Floats, y: Floats, source: str, target: str) -> tuple[Floats, Floats]:
        tx, ty = self._transformer(source, target).transform(x, y)
        return np.asarray(tx, dtype=np.float64), np.asarray(ty, dtype=np.float64)

    def geometries(self, geoms: Objects, source: str, target: str) -> Objects:
        if source == target:
            return geoms
        if is_gcj02(source):
            return self.geometries(shapely.transform(geoms, gcj02_to_wgs84), STORAGE_CRS, target)
        if is_gcj02(target):
            return shapely.transform(self.geometries(geoms, source, STORAGE_CRS), wgs84_to_gcj02)
        transformer = self._transformer(source, target)
        return shapely.transform(geoms, lambda c: np.column_stack(transformer.transform(c[:, 0], c[:, 1])))

    def frame_from_lonlat(self, lon: float, lat: float) -> tuple[float, float]:
        x, y = self.xy(np.array([lon]), np.array([lat]), STORAGE_CRS, FRAME_CRS)
        return float(x[0]), float(y[0])


# ----------------------------------------------------------------------------------------------------------
# Geography: the real boundaries


@dataclass(frozen=True)
class Geography:
    reference_gcj: Objects  # the delivered boundaries as they are, GCJ-02
    adcode: Objects
    name: Objects
    level: Objects
    city: BaseGeometry  # frame
    city_inner: BaseGeometry  # a margin inside the outline, so nothing touches it
    district_name: Objects
    district_code: Objects
    district_geom: Objects  # frame

    def district_of(self, x: Floats, y: Floats) -> tuple[Objects, Objects]:
        """District name and adcode of each point; points outside every district get the nearest one."""
        index = np.full(len(x), -1, dtype=np.int64)
        for k, geom in enumerate(self.district_geom):
            index[(index < 0) & shapely.contains_xy(geom, x, y)] = k
        lost = np.flatnonzero(index < 0)
        if len(lost):
            points = shapely.points(x[lost], y[lost])
            index[lost] = np.argmin(shapely.distance(points[:, None], self.district_geom[None, :]), axis=1)
        return self.district_name[index], self.district_code[index]


def load_geography(projector: Projector) -> Geography:
    frame = pyogrio.read_dataframe(REFERENCE)
    gcj = np.asarray(frame.geometry.values, dtype=object)
    local = projector.geometries(gcj, "GCJ-02", FRAME_CRS)
    level = np.asarray(frame["level"], dtype=object)
    city_rows = np.flatnonzero(level == "市")
    if len(city_rows) != 1:
        raise SystemExit(f"{REFERENCE}: expected one city outline (level 市), found {len(city_rows)}")
    city = shapely.make_valid(local[city_rows[0]])
    districts = np.flatnonzero(level != "市")
    city_inner = city.buffer(-200.0)
    shapely.prepare(city)
    shapely.prepare(city_inner)
    for geom in local[districts]:
        shapely.prepare(geom)
    return Geography(
        reference_gcj=gcj,
        adcode=np.asarray(frame["adcode"].astype(str), dtype=object),
        name=np.asarray(frame["name"], dtype=object),
        level=level,
        city=city,
        city_inner=city_inner,
        district_name=np.asarray(frame["name"], dtype=object)[districts],
        district_code=np.asarray(frame["adcode"].astype(str), dtype=object)[districts],
        district_geom=local[districts],
    )


# ----------------------------------------------------------------------------------------------------------
# Names


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


V_POOL = words("""
北京 南京 太原 天津 重庆 长春 吉林 大连 丹东 抚顺 本溪 铁岭 营口 鞍山 锦州 阜新 辽阳 盘锦 承德
保定 济南 青岛 烟台 郑州 洛阳 西安 兰州 银川 西宁 成都 贵阳 昆明 南宁 广州 福州 厦门 杭州 宁波
苏州 无锡 合肥 南昌 长沙 武汉 拉萨 包头 延吉 通化 四平 辽源 白城 开原 海城 凤城 庄河 瓦房店
新民 法库 康平 辽中 桓仁 宽甸 岫岩 北票 凌源 兴城 黑山 义县 绥中 建平 喀左 昌图 西丰""")
H_POOL = words("""
中华 中山 和平 民主 文化 青年 市府 光荣 胜利 团结 建设 工农 友好 南湖 北陵 长青 新华 兴华 振兴
复兴 滨河 黄河 长江 珠江 松花江 嫩江 鸭绿江 辽河 浑河 太子河 大凌河 泰山 华山 衡山 嵩山 长白山
千山 医大 文艺 艺术 崇山 昆山 岐山 塔湾 陵东 陵西 宁山 银山 金山 松山 天山 燕山 泰和 保工 卫工
勋工 肇工 齐贤 重工 沈辽 小东 大东 东陵 望花 万柳 洪湖 南塔 北塔 白塔 砂山 五里 十里 长安 新开
平安 丰乐 兴工 启工""")
CN_DIGITS = "零一二三四五六七八九"


def chinese_number(n: int) -> str:
    """1..99 written the way street numbers are (十一, 二十, 三十五)."""
    if not 0 < n < 100:
        raise ValueError(f"no Chinese numeral for {n} here")
    if n < 10:
        return CN_DIGITS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else CN_DIGITS[tens]) + "十" + (CN_DIGITS[ones] if ones else "")


def street_names(
    classes: Objects,
    pool: tuple[str, ...],
    numbered: str,
    suffix: str,
    main_suffix: str,
    rng: np.random.Generator,
) -> Objects:
    """Unique names for parallel streets: pooled place names first, then the numbered 经街/纬路 of Heping."""
    prefixes = [str(p) for p in rng.permutation(pool)]
    prefixes += [chinese_number(n) for n in range(1, 100)]
    if len(classes) > len(prefixes):
        raise SystemExit(f"{len(classes)} streets but only {len(prefixes)} names")
    names = []
    for k, cls in enumerate(classes):
        prefix = prefixes[k]
        if k >= len(pool):
            names.append(prefix + numbered)
        else:
            names.append(prefix + (main_suffix if cls == "arterial" else suffix))
    return np.array(names, dtype=object)


COMPOUND_A = words("""
锦绣 阳光 翠湖 金桥 丽都 碧水 枫林 书香 长青 紫荆 春江 明珠 海棠 盛世 星河 瑞祥 雅居 怡景 嘉和
华府 御景 芳草 悦澜 和润 泰安 金域 龙湾 凤鸣 兰亭 云锦 银河 望湖""")
COMPOUND_B = ("小区", "花园", "家园", "公寓", "新村", "名苑", "嘉园", "华庭")
COMPANY_WORDS = words("""
华盛 东方 北方 辽沈 盛京 金城 宏达 兴隆 恒通 新阳 宝利 天成 鑫源 华宇 远航 振华 瑞丰 永泰""")
VILLAGE_NAMES = words("""
王家窝堡 小韩屯 李相屯 大潘 前进 红旗台 黄家 马三家 高坎 祝家 沙岭 杨士 老边 满堂 深井子 白清寨
桃仙 八家子 姚千户 兴隆台 五三 清水台 财落 黄家沟 永乐 佟沟 上木 大青 十里河 林盛""")


# ----------------------------------------------------------------------------------------------------------
# The street grid


ROAD_WIDTH = {"arterial": (32.0, 46.0), "secondary": (20.0, 28.0), "branch": (12.0, 18.0)}
EXPRESSWAY_WIDTH = (46.0, 60.0)


@dataclass(frozen=True)
class Ring:
    name: str
    west: int  # vertical line indices
    east: int
    south: int  # horizontal line indices
    north: int


@dataclass(frozen=True)
class Grid:
    """Straight streets: vertical lines first (index i), then horizontal ones (index nx + j)."""

    xs: Floats
    ys: Floats
    line_class: Objects
    line_width: Floats
    line_name: Objects
    rings: tuple[Ring, ...]

    @property
    def nx(self) -> int:
        return len(self.xs)

    @property
    def ny(self) -> int:
        return len(self.ys)

    def node_xy(self, node: Ints) -> tuple[Floats, Floats]:
        i, j = np.divmod(node, self.ny)
        return self.xs[i], self.ys[j]


def line_positions(lo: float, hi: float, spacing: float, rng: np.random.Generator) -> Floats:
    # Blocks in a real grid are uneven; +-15 % keeps them recognisably a grid.
    count = int((hi - lo) / (spacing * 0.85)) + 2
    positions = lo + np.concatenate([[0.0], np.cumsum(spacing * rng.uniform(0.85, 1.15, count))])
    return positions[positions <= hi]


def line_classes(count: int) -> Objects:
    index = np.arange(count)
    return np.where(index % 4 == 0, "arterial", np.where(index % 2 == 0, "secondary", "branch")).astype(
        object
    )


def pick_rings(
    xs: Floats, ys: Floats, v_class: Objects, h_class: Objects, rings: tuple[tuple[str, float], ...]
) -> tuple[Ring, ...]:
    """Ring expressways on the arterial lines nearest to the centre plus and minus each half size."""
    cx, cy = (xs[0] + xs[-1]) / 2, (ys[0] + ys[-1]) / 2
    v_art, h_art = np.flatnonzero(v_class == "arterial"), np.flatnonzero(h_class == "arterial")
    picked: list[Ring] = []
    used: set[int] = set()
    for name, half in rings:
        west = int(v_art[np.argmin(np.abs(xs[v_art] - (cx - half)))])
        east = int(v_art[np.argmin(np.abs(xs[v_art] - (cx + half)))])
        south = int(h_art[np.argmin(np.abs(ys[h_art] - (cy - half)))])
        north = int(h_art[np.argmin(np.abs(ys[h_art] - (cy + half)))])
        lines = {west, east, len(xs) + south, len(xs) + north}
        if west < east and south < north and not lines & used:
            picked.append(Ring(name, west, east, south, north))
            used |= lines
    return tuple(picked)


def build_grid(window: tuple[float, float, float, float], scale: Scale, rng: np.random.Generator) -> Grid:
    x0, y0, x1, y1 = window
    xs = line_positions(x0, x1, scale.spacing_m, rng)
    ys = line_positions(y0, y1, scale.spacing_m, rng)
    v_class, h_class = line_classes(len(xs)), line_classes(len(ys))
    rings = pick_rings(xs, ys, v_class, h_class, scale.rings)
    line_class = np.concatenate([v_class, h_class])
    width = np.array([rng.uniform(*ROAD_WIDTH[c]) for c in line_class])
    for ring in rings:
        for line in (ring.west, ring.east, len(xs) + ring.south, len(xs) + ring.north):
            width[line] = rng.uniform(*EXPRESSWAY_WIDTH)  # the whole line is built to the ring's section
    width = np.round(width * 2) / 2
    # Shenyang names north-south streets 街 (经街) and east-west roads 路 (纬路).
    v_name = street_names(v_class, V_POOL, "经街", "街", "大街", rng)
    h_name = street_names(h_class, H_POOL, "纬路", "路", "大路", rng)
    return Grid(xs, ys, line_class, width, np.concatenate([v_name, h_name]), rings)


# ----------------------------------------------------------------------------------------------------------
# Water, parks, red line, development boundary


HUN_RIVER = (
    (123.86, 41.885),
    (123.78, 41.862),
    (123.70, 41.842),
    (123.62, 41.815),
    (123.57, 41.800),
    (123.54, 41.784),
    (123.51, 41.766),
    (123.476, 41.752),
    (123.44, 41.746),
    (123.40, 41.739),
    (123.36, 41.729),
    (123.31, 41.713),
    (123.25, 41.697),
    (123.15, 41.668),
    (123.05, 41.640),
    (122.95, 41.610),
)
# Parks with a lake, at about their real places; only those inside the grid are laid out.
PARKS = (
    ("北陵公园", "北陵湖", 123.425, 41.845),
    ("青年公园", "青年湖", 123.432, 41.783),
    ("南湖公园", "南湖", 123.402, 41.768),
    ("万泉公园", "万泉湖", 123.472, 41.792),
    ("劳动公园", "劳动湖", 123.386, 41.800),
    ("丁香公园", "丁香湖", 123.300, 41.832),
    ("鹿鸣公园", "鹿鸣湖", 123.500, 41.860),
    ("仙子湖公园", "仙子湖", 123.330, 41.745),
)


@dataclass(frozen=True)
class Park:
    name: str
    lake_name: str
    rect: tuple[float, float, float, float]
    blocks: frozenset[tuple[int, int]]
    lake: BaseGeometry


@dataclass(frozen=True)
class Water:
    river: BaseGeometry
    river_line: BaseGeometry
    canal: BaseGeometry
    parks: tuple[Park, ...]
    extra_names: tuple[str, ...]  # reservoir and ponds, in the order of extra_geoms
    extra_kinds: tuple[str, ...]
    extra_geoms: tuple[BaseGeometry, ...]

    @property
    def all(self) -> BaseGeometry:
        return shapely.union_all([self.river, self.canal, *[p.lake for p in self.parks], *self.extra_geoms])


def chaikin(coords: Floats, rounds: int = 3) -> Floats:
    for _ in range(rounds):
        a, b = coords[:-1], coords[1:]
        inner = np.empty((2 * len(a), 2))
        inner[0::2], inner[1::2] = 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b
        coords = np.vstack([coords[:1], inner, coords[-1:]])
    return coords


def ribbon(centre: Floats, width: Floats) -> BaseGeometry:
    """A band of varying width around a polyline (a river is not a constant buffer)."""
    tangent = np.gradient(centre, axis=0)
    tangent /= np.hypot(tangent[:, 0], tangent[:, 1])[:, None]
    normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
    left, right = centre + normal * (width / 2)[:, None], centre - normal * (width / 2)[:, None]
    return shapely.make_valid(shapely.Polygon(np.vstack([left, right[::-1]]))).buffer(0)


def blob(
    cx: float, cy: float, rx: float, ry: float, rng: np.random.Generator, points: int = 48
) -> BaseGeometry:
    angle = np.linspace(0, 2 * np.pi, points, endpoint=False)
    radius = np.ones(points)
    for k in (2, 3, 5):
        radius += rng.uniform(0.03, 0.09) * np.sin(k * angle + rng.uniform(0, 2 * np.pi))
    return shapely.Polygon(
        np.column_stack([cx + rx * radius * np.cos(angle), cy + ry * radius * np.sin(angle)])
    )


def largest_part(geom: BaseGeometry) -> BaseGeometry:
    parts = shapely.get_parts(geom)
    polygons = parts[shapely.get_type_id(parts) == 3]
    if len(polygons) == 0:
        return shapely.Polygon()
    return polygons[int(np.argmax(shapely.area(polygons)))]


def polygon_parts(geoms: Objects, min_area: float) -> tuple[Objects, Ints]:
    """Single polygons of each geometry (clipping can split them), with the index of their source."""
    parts, index = shapely.get_parts(geoms, return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) >= min_area)
    return parts[keep], index[keep]


def build_river(
    projector: Projector, extent: BaseGeometry, rng: np.random.Generator
) -> tuple[BaseGeometry, BaseGeometry]:
    lon, lat = np.array(HUN_RIVER).T
    x, y = projector.xy(lon, lat, STORAGE_CRS, FRAME_CRS)
    centre = chaikin(
        shapely.get_coordinates(shapely.segmentize(shapely.LineString(np.column_stack([x, y])), 400.0))
    )
    along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(centre, axis=0).T))])
    phase = rng.uniform(0, 2 * np.pi, 2)
    width = 340 + 60 * np.sin(along / 2300 + phase[0]) + 30 * np.sin(along / 700 + phase[1])
    river = largest_part(ribbon(centre, width).intersection(extent))
    return river, shapely.LineString(centre)


def build_canal(
    river_line: BaseGeometry,
    river: BaseGeometry,
    window: tuple[float, float, float, float],
    rng: np.random.Generator,
) -> BaseGeometry:
    """The 南运河: leaves the Hun west of the centre, arcs north through the old city and rejoins it."""
    x0, _, x1, y1 = window
    xa, xb = x0 + 0.08 * (x1 - x0), x1 - 0.08 * (x1 - x0)
    xs = np.linspace(xa, xb, 120)
    river_xy = shapely.get_coordinates(river_line)
    order = np.argsort(river_xy[:, 0])
    base = np.interp(xs, river_xy[order, 0], river_xy[order, 1])
    t = (xs - xa) / (xb - xa)
    height = np.minimum(4200.0, 0.8 * (y1 - base.max()))
    meander = 250 * np.sin(2 * np.pi * 2.5 * t + rng.uniform(0, 2 * np.pi)) * t * (1 - t)
    ys = base + height * np.sin(np.pi * t) ** 0.6 + meander
    canal = shapely.LineString(chaikin(np.column_stack([xs, ys]), 2)).buffer(17.5, cap_style="flat")
    return largest_part(canal.difference(river))


def park_at(
    grid: Grid, i0: int, j0: int, span: int
) -> tuple[frozenset[tuple[int, int]], tuple[float, float, float, float]] | None:
    """The blocks and outline of a span x span park whose south-west block is (i0, j0), if it fits."""
    nx, ny = grid.nx, grid.ny
    i1, j1 = i0 + span - 1, j0 + span - 1
    if i0 < 1 or j0 < 1 or i1 >= nx - 2 or j1 >= ny - 2:  # keep parks off the grid's outer streets
        return None
    vw, hw = grid.line_width[:nx], grid.line_width[nx:]
    blocks = frozenset((i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1))
    rect = (
        grid.xs[i0] + vw[i0] / 2,
        grid.ys[j0] + hw[j0] / 2,
        grid.xs[i1 + 1] - vw[i1 + 1] / 2,
        grid.ys[j1 + 1] - hw[j1 + 1] / 2,
    )
    return blocks, rect


def build_parks(
    grid: Grid, projector: Projector, scale: Scale, barrier: BaseGeometry, rng: np.random.Generator
) -> tuple[Park, ...]:
    span = max(1, round(2 * scale.park_radius_m / scale.spacing_m))
    # Nearest free spot first: a park that would sit on the canal moves a block or two.
    shifts = sorted(
        ((di, dj) for di in range(-3, 4) for dj in range(-3, 4)), key=lambda d: (d[0] ** 2 + d[1] ** 2, d)
    )
    parks: list[Park] = []
    taken: set[tuple[int, int]] = set()
    for name, lake_name, lon, lat in PARKS:
        px, py = projector.frame_from_lonlat(lon, lat)
        if not (grid.xs[0] < px < grid.xs[-1] and grid.ys[0] < py < grid.ys[-1]):
            continue
        i0 = int(np.searchsorted(grid.xs, px)) - 1 - (span - 1) // 2
        j0 = int(np.searchsorted(grid.ys, py)) - 1 - (span - 1) // 2
        for di, dj in shifts:
            found = park_at(grid, i0 + di, j0 + dj, span)
            if found is None:
                continue
            blocks, rect = found
            if not blocks & taken and not shapely.box(*rect).buffer(60).intersects(barrier):
                w, h = rect[2] - rect[0], rect[3] - rect[1]
                lake = blob((rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2, 0.3 * w, 0.28 * h, rng)
                parks.append(Park(name, lake_name, rect, blocks, lake))
                taken |= blocks
                break
    return tuple(parks)


def build_water(
    grid: Grid,
    projector: Projector,
    extent: BaseGeometry,
    window: tuple[float, float, float, float],
    green: BaseGeometry,
    scale: Scale,
    rng: np.random.Generator,
) -> Water:
    river, river_line = build_river(projector, extent, rng)
    canal = build_canal(river_line, river, window, rng)
    parks = build_parks(grid, projector, scale, shapely.union_all([river, canal]), rng)
    names, kinds, geoms = [], [], []
    if not green.is_empty:
        c = green.centroid
        names.append("东陵水库")
        kinds.append("reservoir")
        geoms.append(blob(c.x, c.y, 700, 420, rng).intersection(green))
    occupied = shapely.union_all([river.buffer(300), canal.buffer(300), shapely.box(*window).buffer(800)])
    xmin, ymin, xmax, ymax = extent.bounds
    tries = 0
    while len(geoms) < scale.ponds + (1 if not green.is_empty else 0) and tries < 50 * scale.ponds:
        tries += 1
        x, y = rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)
        pond = blob(x, y, rng.uniform(40, 110), rng.uniform(30, 80), rng)
        if extent.contains(pond) and not pond.buffer(150).intersects(occupied):
            village = VILLAGE_NAMES[int(rng.integers(len(VILLAGE_NAMES)))]
            name = next(
                f"{village}{side}塘"
                for side in ("东", "西", "南", "北", "前", "后", *map(str, range(9)))
                if f"{village}{side}塘" not in names
            )
            names.append(name)
            kinds.append("lake")
            geoms.append(pond)
            occupied = occupied.union(pond.buffer(200))
    return Water(river, river_line, canal, parks, tuple(names), tuple(kinds), tuple(geoms))


@dataclass(frozen=True)
class RedLine:
    name: Objects
    level: Objects
    geom: Objects

    @property
    def union(self) -> BaseGeometry:
        return shapely.union_all(self.geom)


def build_green(
    window: tuple[float, float, float, float], extent: BaseGeometry, rng: np.random.Generator
) -> BaseGeometry:
    """The forested hills north-east of the city (the 棋盘山 area for the bench extent)."""
    x1, y1 = window[2], window[3]
    green = blob(x1 + 4200, y1 + 2600, 2600, 2000, rng, points=64).intersection(extent)
    return largest_part(green)


def build_redline(river: BaseGeometry, green: BaseGeometry, extent: BaseGeometry) -> RedLine:
    corridor = river.buffer(150.0).intersection(extent)
    xmin, ymin, xmax, ymax = corridor.bounds
    cuts = np.arange(xmin, xmax, 4000.0)
    strips = shapely.box(cuts, ymin - 1, np.minimum(cuts + 4000.0, xmax + 1), ymax + 1)
    reaches, _ = polygon_parts(shapely.intersection(strips, corridor), 20000.0)
    names = [f"浑河生态廊道{chinese_number(k + 1)}段" for k in range(len(reaches))]
    levels = ["provincial"] * len(reaches)
    geoms = list(reaches)
    if not green.is_empty:
        names.append("东部山林生态保护区")
        levels.append("national")
        geoms.append(green)
    return RedLine(
        np.array(names, dtype=object), np.array(levels, dtype=object), np.array(geoms, dtype=object)
    )


@dataclass(frozen=True)
class Boundary:
    names: tuple[str, ...]
    geoms: tuple[BaseGeometry, ...]

    @property
    def union(self) -> BaseGeometry:
        return shapely.union_all(self.geoms)


def wobble(polygon: BaseGeometry, reach: float, rng: np.random.Generator) -> BaseGeometry:
    """Push a boundary outwards by a smooth random amount: drawn boundaries follow roads and parcels."""
    ring = shapely.get_coordinates(shapely.segmentize(polygon.exterior, 200.0))
    centre = np.array(polygon.centroid.coords[0])
    angle = np.arctan2(ring[:, 1] - centre[1], ring[:, 0] - centre[0])
    push = np.full(len(ring), 0.5)
    for k in (2, 3, 5, 7):
        push += rng.uniform(0.08, 0.2) * np.sin(k * angle + rng.uniform(0, 2 * np.pi))
    direction = (ring - centre) / np.hypot(*(ring - centre).T)[:, None]
    return shapely.make_valid(shapely.Polygon(ring + direction * (reach * np.clip(push, 0, 1))[:, None]))


def build_boundary(
    window: tuple[float, float, float, float],
    extent: BaseGeometry,
    water: Water,
    redline: RedLine,
    rng: np.random.Generator,
) -> Boundary:
    core = shapely.box(*window)
    main = shapely.union_all([wobble(core.buffer(700, join_style="mitre"), 1200.0, rng), core])
    main = main.intersection(extent).difference(redline.union)
    x0, y0 = window[0], window[1]
    avoid = shapely.union_all([main.buffer(1500), water.all.buffer(200), redline.union.buffer(200)])
    satellite = shapely.Polygon()
    village = VILLAGE_NAMES[int(rng.integers(len(VILLAGE_NAMES)))]
    for _ in range(40):
        cx, cy = x0 - rng.uniform(2500, 5000), y0 - rng.uniform(1500, 4500)
        candidate = blob(cx, cy, rng.uniform(1200, 1800), rng.uniform(900, 1400), rng)
        if extent.contains(candidate) and not candidate.intersects(avoid):
            satellite = candidate
            break
    names = ["沈阳市中心城区城镇开发边界"]
    geoms = [main]
    if not satellite.is_empty:
        names.append(f"{village}组团城镇开发边界")
        geoms.append(satellite)
    return Boundary(tuple(names), tuple(geoms))


# ----------------------------------------------------------------------------------------------------------
# Road network


@dataclass(frozen=True)
class Edges:
    """Road edges between intersections (grid node ids i * ny + j); the low end first."""

    a: Ints
    b: Ints
    line: Ints
    road_class: Objects
    name: Objects
    width: Floats


def largest_component(a: Ints, b: Ints) -> Bools:
    """Which edges belong to the largest connected piece: networks are delivered connected."""
    if len(a) == 0:
        return np.zeros(0, dtype=bool)
    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    parent = list(range(len(nodes)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in zip(inverse[: len(a)].tolist(), inverse[len(a) :].tolist(), strict=True):
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    roots = np.array([find(x) for x in range(len(nodes))])
    labels, counts = np.unique(roots, return_counts=True)
    return roots[inverse[: len(a)]] == labels[int(np.argmax(counts))]


def ring_edges(grid: Grid, vertical: Bools, line: Ints, lo: Ints, hi: Ints) -> Objects:
    """The ring expressway's name for edges on a ring, None elsewhere."""
    names = np.full(len(line), None, dtype=object)
    nx = grid.nx
    for ring in grid.rings:
        sides = (
            (vertical & (line == ring.west) & (lo >= ring.south) & (hi <= ring.north), "西"),
            (vertical & (line == ring.east) & (lo >= ring.south) & (hi <= ring.north), "东"),
            (~vertical & (line == nx + ring.south) & (lo >= ring.west) & (hi <= ring.east), "南"),
            (~vertical & (line == nx + ring.north) & (lo >= ring.west) & (hi <= ring.east), "北"),
        )
        for mask, side in sides:
            names[mask] = f"{side}{ring.name}路"
    return names


def build_roads(grid: Grid, water: Water) -> Edges:
    nx, ny = grid.nx, grid.ny
    gx, gy = np.meshgrid(grid.xs, grid.ys, indexing="ij")
    wet = water.river.union(water.canal).buffer(12.0)
    shapely.prepare(wet)
    alive = ~shapely.contains_xy(wet, gx, gy)
    for park in water.parks:
        x0, y0, x1, y1 = park.rect
        alive &= ~((gx > x0) & (gx < x1) & (gy > y0) & (gy < y1))
    a_list, b_list, line_list, vertical_list, skipped_list = [], [], [], [], []
    for i in range(nx):  # streets: consecutive surviving intersections, a gap is a crossing
        js = np.flatnonzero(alive[i])
        a_list.append(i * ny + js[:-1])
        b_list.append(i * ny + js[1:])
        line_list.append(np.full(len(js) - 1, i))
        vertical_list.append(np.ones(len(js) - 1, dtype=bool))
        skipped_list.append(np.diff(js) > 1)
    for j in range(ny):
        is_ = np.flatnonzero(alive[:, j])
        a_list.append(is_[:-1] * ny + j)
        b_list.append(is_[1:] * ny + j)
        line_list.append(np.full(len(is_) - 1, nx + j))
        vertical_list.append(np.zeros(len(is_) - 1, dtype=bool))
        skipped_list.append(np.diff(is_) > 1)
    a, b = np.concatenate(a_list), np.concatenate(b_list)
    line, vertical = np.concatenate(line_list), np.concatenate(vertical_list)
    skipped = np.concatenate(skipped_list)
    ax, ay = grid.node_xy(a)
    bx, by = grid.node_xy(b)
    segments = shapely.linestrings(np.stack([np.column_stack([ax, ay]), np.column_stack([bx, by])], axis=1))
    parks = shapely.union_all([shapely.box(*p.rect).buffer(-1.0) for p in water.parks])
    river, canal = water.river.buffer(12.0), water.canal.buffer(12.0)
    for geom in (parks, river, canal):
        shapely.prepare(geom)
    hits_park = shapely.intersects(parks, segments)
    hits_river = shapely.intersects(river, segments)
    hits_canal = shapely.intersects(canal, segments)
    canal_run = np.where(hits_canal, shapely.length(shapely.intersection(segments, canal)), 0.0)
    base_class = grid.line_class[line]
    bridge_ok = vertical & (base_class == "arterial")  # only main north-south streets bridge the Hun
    keep = ~hits_park & (~hits_river | bridge_ok) & (canal_run < 150.0)
    keep &= ~skipped | hits_river | hits_canal
    a, b, line, vertical = a[keep], b[keep], line[keep], vertical[keep]
    lo = np.where(vertical, a % ny, a // ny)
    hi = np.where(vertical, b % ny, b // ny)
    ring_name = ring_edges(grid, vertical, line, lo, hi)
    on_ring = ring_name != None  # noqa: E711 (element-wise on an object array)
    road_class = np.where(on_ring, "expressway", grid.line_class[line]).astype(object)
    name = np.where(on_ring, ring_name, grid.line_name[line]).astype(object)
    connected = largest_component(a, b)
    return Edges(
        a[connected],
        b[connected],
        line[connected],
        road_class[connected],
        name[connected],
        grid.line_width[line][connected],
    )


# ----------------------------------------------------------------------------------------------------------
# Blocks, land use, buildings

ZONE_NAMES = {
    "R": "居住用地",
    "A": "公共管理与公共服务设施用地",
    "B": "商业服务业设施用地",
    "M": "工业用地",
    "W": "物流仓储用地",
    "S": "道路与交通设施用地",
    "U": "公用设施用地",
    "G": "绿地与广场用地",
    "E": "非建设用地",
}
ZONE_MIX = {  # GB 50137 classes by part of town: a commercial core, industrial Tiexi in the west
    "core": {"B": 0.42, "R": 0.3, "A": 0.16, "G": 0.06, "S": 0.03, "U": 0.03},
    "west": {"M": 0.4, "R": 0.32, "W": 0.1, "B": 0.06, "A": 0.06, "U": 0.04, "G": 0.02},
    "outer": {"R": 0.5, "M": 0.14, "W": 0.1, "A": 0.1, "B": 0.06, "U": 0.05, "G": 0.05},
    "middle": {"R": 0.6, "B": 0.12, "A": 0.12, "M": 0.05, "G": 0.04, "U": 0.03, "S": 0.02, "W": 0.02},
}
PLOT_RATIO = {
    "R": (1.8, 3.5),
    "A": (1.0, 2.5),
    "B": (3.0, 8.0),
    "M": (0.8, 1.5),
    "W": (0.8, 1.5),
    "S": (0.3, 1.0),
    "U": (0.5, 1.2),
    "G": (0.0, 0.2),
    "E": (0.0, 0.0),
}


@dataclass(frozen=True)
class Blocks:
    i: Ints
    j: Ints
    rect: Floats  # (n, 4): the block inside the road red lines
    geom: Objects  # rect minus water, one polygon or several
    zone: Objects
    district: Objects
    adcode: Objects
    clean: Bools  # untouched by water, parks and the red line


def zone_mix(rx: Floats, ry: Floats) -> list[str]:
    distance = np.hypot(rx, ry)
    return [
        "core" if d < 0.28 else "west" if x < -0.35 else "outer" if d > 0.9 else "middle"
        for x, d in zip(rx.tolist(), distance.tolist(), strict=True)
    ]


def build_blocks(
    grid: Grid, water: Water, redline: RedLine, geography: Geography, rng: np.random.Generator
) -> Blocks:
    nx, ny = grid.nx, grid.ny
    vw, hw = grid.line_width[:nx], grid.line_width[nx:]
    i, j = (g.ravel() for g in np.meshgrid(np.arange(nx - 1), np.arange(ny - 1), indexing="ij"))
    rect = np.column_stack(
        [
            grid.xs[i] + vw[i] / 2,
            grid.ys[j] + hw[j] / 2,
            grid.xs[i + 1] - vw[i + 1] / 2,
            grid.ys[j + 1] - hw[j + 1] / 2,
        ]
    )
    boxes = shapely.box(rect[:, 0], rect[:, 1], rect[:, 2], rect[:, 3])
    wet = water.all.buffer(5.0)
    red = redline.union
    shapely.prepare(wet)
    shapely.prepare(red)
    touches_water = shapely.intersects(wet, boxes)
    geom = boxes.copy()
    geom[touches_water] = shapely.difference(boxes[touches_water], wet)
    water_share = 1.0 - shapely.area(geom) / shapely.area(boxes)
    in_red = shapely.intersects(red, boxes)
    park_blocks = {ij for p in water.parks for ij in p.blocks}
    in_park = np.array(
        [(a, c) in park_blocks for a, c in zip(i.tolist(), j.tolist(), strict=True)], dtype=bool
    )
    cx, cy = (rect[:, 0] + rect[:, 2]) / 2, (rect[:, 1] + rect[:, 3]) / 2
    half_w, half_h = (grid.xs[-1] - grid.xs[0]) / 2, (grid.ys[-1] - grid.ys[0]) / 2
    mixes = zone_mix((cx - grid.xs[0] - half_w) / half_w, (cy - grid.ys[0] - half_h) / half_h)
    zone = np.array([rng.choice(list(ZONE_MIX[m]), p=_normalised(ZONE_MIX[m])) for m in mixes], dtype=object)
    zone[in_red | in_park] = "G"
    zone[water_share > 0.4] = "E"
    district, adcode = geography.district_of(cx, cy)
    clean = ~touches_water & ~in_red & ~in_park
    return Blocks(i, j, rect, geom, zone, district, adcode, clean)


def _normalised(weights: dict[str, float]) -> Floats:
    p = np.array(list(weights.values()), dtype=np.float64)
    return p / p.sum()


@dataclass(frozen=True)
class Template:
    """A way of filling a block: footprint range, spacing, storeys."""

    size_x: tuple[float, float]
    size_y: tuple[float, float]
    gap_x: float
    gap_y: float
    floors: tuple[int, int]
    storey_m: float
    years: tuple[int, int]


TEMPLATES = {
    "R_old": Template((50, 70), (10, 13), 12, 26, (5, 7), 2.9, (1975, 1999)),  # 板楼: rows facing south
    "R_new": Template((26, 40), (15, 20), 22, 45, (11, 33), 3.0, (2003, 2024)),
    "B": Template((40, 80), (30, 60), 20, 20, (5, 45), 4.0, (1995, 2024)),
    "A": Template((50, 80), (15, 25), 20, 25, (3, 12), 3.8, (1980, 2022)),
    "M": Template((60, 160), (40, 90), 20, 20, (1, 3), 7.0, (1958, 2015)),
    "U": Template((20, 40), (15, 25), 25, 25, (1, 3), 4.5, (1985, 2020)),
    "S": Template((30, 60), (20, 40), 25, 25, (1, 3), 5.0, (1990, 2020)),
}
BUILDING_USE = {
    "R_old": "residential",
    "R_new": "residential",
    "B": "commercial",
    "M": "industrial",
    "U": "public",
    "S": "public",
}


@dataclass(frozen=True)
class Buildings:
    x0: Floats
    y0: Floats
    x1: Floats
    y1: Floats
    use: Objects
    floors: Ints
    height: Floats
    year: Ints
    block: Ints  # index into Blocks

    @property
    def geom(self) -> Objects:
        return shapely.box(self.x0, self.y0, self.x1, self.y1)

    @property
    def cx(self) -> Floats:
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> Floats:
        return (self.y0 + self.y1) / 2


def template_for(zone: str, rng: np.random.Generator) -> str | None:
    if zone == "R":
        return "R_new" if rng.random() < 0.55 else "R_old"
    if zone == "W":
        return "M"
    return zone if zone in TEMPLATES else None


def lay_lots(rect: Floats, t: Template, cap: int, rng: np.random.Generator) -> Floats:
    """Footprints on a grid of lots in the block: one per lot, so they never overlap."""
    setback = rng.uniform(6.0, 12.0)  # from the road red line; keeps sewers 2.5 m clear of buildings
    x0, y0, x1, y1 = rect[0] + setback, rect[1] + setback, rect[2] - setback, rect[3] - setback
    width, height = x1 - x0, y1 - y0
    nx = int((width + t.gap_x) // (t.size_x[1] + t.gap_x))
    ny = int((height + t.gap_y) // (t.size_y[1] + t.gap_y))
    if nx < 1 or ny < 1:
        return np.empty((0, 4))
    # Each lot is a footprint's room plus the gap to the next lot; the last gap falls outside the block.
    cell_w, cell_h = (width + t.gap_x) / nx, (height + t.gap_y) / ny
    room_w, room_h = cell_w - t.gap_x, cell_h - t.gap_y  # at least the largest footprint, by nx and ny
    ci, cj = (g.ravel() for g in np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij"))
    bw = rng.uniform(t.size_x[0], min(t.size_x[1], room_w), len(ci))
    bh = rng.uniform(t.size_y[0], min(t.size_y[1], room_h), len(ci))
    lx = x0 + ci * cell_w + rng.random(len(ci)) * (room_w - bw)
    ly = y0 + cj * cell_h + rng.random(len(ci)) * (room_h - bh)
    lots = np.column_stack([lx, ly, lx + bw, ly + bh])
    lots = lots[rng.random(len(lots)) < 0.85]
    if len(lots) > cap:
        lots = lots[np.sort(rng.choice(len(lots), cap, replace=False))]
    return lots


def build_buildings(
    blocks: Blocks, water: Water, redline: RedLine, scale: Scale, rng: np.random.Generator
) -> Buildings:
    rows: list[Floats] = []
    uses: list[Objects] = []
    floors: list[Ints] = []
    heights: list[Floats] = []
    years: list[Ints] = []
    block_of: list[Ints] = []
    for k in range(len(blocks.zone)):
        name = template_for(blocks.zone[k], rng)
        if name is None:
            continue
        t = TEMPLATES[name]
        lots = lay_lots(blocks.rect[k], t, scale.max_buildings_per_block, rng)
        n = len(lots)
        if n == 0:
            continue
        if name == "A":
            use = np.full(
                n, rng.choice(["education", "medical", "public"], p=[0.45, 0.2, 0.35]), dtype=object
            )
        else:
            use = np.full(n, BUILDING_USE[name], dtype=object)
            if name.startswith("R"):
                use[rng.random(n) < 0.05] = "commercial"  # shops along the street
        storeys = rng.integers(t.floors[0], t.floors[1] + 1, n)
        rows.append(lots)
        uses.append(use)
        floors.append(storeys)
        heights.append(np.round(storeys * t.storey_m + rng.uniform(0.3, 2.5, n), 1))
        years.append(rng.integers(t.years[0], t.years[1] + 1, n))
        block_of.append(np.full(n, k))
    lots = np.vstack(rows)
    boxes = shapely.box(lots[:, 0], lots[:, 1], lots[:, 2], lots[:, 3])
    forbidden = shapely.union_all([water.all.buffer(10.0), redline.union])
    shapely.prepare(forbidden)
    keep = ~shapely.intersects(forbidden, boxes)
    return Buildings(
        lots[keep, 0],
        lots[keep, 1],
        lots[keep, 2],
        lots[keep, 3],
        np.concatenate(uses)[keep],
        np.concatenate(floors)[keep],
        np.concatenate(heights)[keep],
        np.concatenate(years)[keep],
        np.concatenate(block_of)[keep],
    )


# ----------------------------------------------------------------------------------------------------------
# Pipelines

UTILITIES = ("water", "sewer", "storm", "gas", "heat", "power", "telecom")
UTILITY_CODE = {
    "water": "JS",
    "sewer": "WS",
    "storm": "YS",
    "gas": "RQ",
    "heat": "RL",
    "power": "DL",
    "telecom": "TX",
}
# Position across the road as a share of the half width: drains under the carriageway, the rest under the
# pavements. On a 12 m branch road this still gives sewer-gas 1.8 m, storm-water 1.6 m (GB 50289 4.1.9).
CROSS_SECTION = {
    "telecom": -0.85,
    "gas": -0.55,
    "sewer": -0.18,
    "storm": 0.18,
    "water": 0.5,
    "heat": 0.68,
    "power": 0.88,
}
PRESENCE = {  # share of edges of each road class that carry the utility
    "water": {"expressway": 1.0, "arterial": 1.0, "secondary": 1.0, "branch": 0.9},
    "sewer": {"expressway": 1.0, "arterial": 1.0, "secondary": 1.0, "branch": 0.85},
    "storm": {"expressway": 1.0, "arterial": 1.0, "secondary": 1.0, "branch": 0.8},
    "gas": {"expressway": 1.0, "arterial": 1.0, "secondary": 0.95, "branch": 0.7},
    "heat": {"expressway": 1.0, "arterial": 1.0, "secondary": 0.8, "branch": 0.4},
    "power": {"expressway": 1.0, "arterial": 1.0, "secondary": 0.9, "branch": 0.6},
    "telecom": {"expressway": 1.0, "arterial": 1.0, "secondary": 0.9, "branch": 0.6},
}
SEGMENT_FACTOR = {
    "water": 1.25,
    "sewer": 1.0,
    "storm": 1.0,
    "gas": 1.5,
    "heat": 1.5,
    "power": 1.25,
    "telecom": 1.5,
}
# Pairs pushed closer than GB 50289 allows on a few streets, so clearance checks have something to find.
VIOLATIONS = (
    ("gas", "sewer", (0.45, 0.9)),
    ("water", "storm", (0.5, 0.9)),
    ("power", "storm", (0.15, 0.4)),
    ("telecom", "sewer", (0.4, 0.85)),
    ("gas", "storm", (0.45, 0.9)),
)
DEPTH = {  # cover to the pipe top: mean, smooth spatial amplitude, noise, the floor of normal practice
    "water": (1.8, 0.3, 0.1, 1.4),  # below Shenyang's ~1.2 m frost line
    "sewer": (3.0, 1.0, 0.25, 0.75),
    "storm": (2.2, 0.6, 0.2, 0.75),
    "gas": (1.3, 0.2, 0.1, 0.95),
    "heat": (1.4, 0.3, 0.1, 0.8),
    "power": (1.0, 0.2, 0.1, 0.7),
    "telecom": (0.9, 0.15, 0.08, 0.6),
}
SHALLOW = {"sewer": (0.015, 0.35, 0.68), "storm": (0.015, 0.35, 0.68), "gas": (0.02, 0.5, 0.88)}
DIAMETERS = {
    "water": {"arterial": (600, 800, 1000, 1200), "secondary": (300, 400, 500), "branch": (100, 150, 200)},
    "sewer": {"arterial": (800, 1000, 1200, 1500), "secondary": (500, 600, 800), "branch": (300, 400)},
    "storm": {"arterial": (1000, 1200, 1500, 2000), "secondary": (600, 800, 1000), "branch": (400, 500)},
    "heat": {"arterial": (500, 600, 800, 1000), "secondary": (300, 400), "branch": (150, 200, 250)},
    "power": {"arterial": (200,), "secondary": (150, 200), "branch": (150,)},
    "telecom": {"arterial": (110,), "secondary": (100, 110), "branch": (100,)},
}
GAS_PRESSURE = {
    "arterial": (("subhigh_a", "subhigh_b", "medium_a", "medium_b"), (0.1, 0.2, 0.5, 0.2)),
    "secondary": (("medium_a", "medium_b", "low"), (0.4, 0.4, 0.2)),
    "branch": (("medium_b", "low"), (0.3, 0.7)),
}
GAS_DIAMETER = {
    "subhigh_a": (400, 500),
    "subhigh_b": (400, 500),
    "medium_a": (300, 400),
    "medium_b": (200, 300),
    "low": (100, 150, 200),
}
MATERIALS = {
    "sewer": (("钢筋混凝土", "HDPE", "PVC-U"), (0.7, 0.2, 0.1)),
    "storm": (("钢筋混凝土", "HDPE"), (0.8, 0.2)),
    "heat": (("钢",), (1.0,)),
    "power": (("铜", "铝"), (0.8, 0.2)),
    "telecom": (("光纤", "铜"), (0.8, 0.2)),
}
OWNERS = {
    "water": ("沈阳市供水集团",),
    "sewer": ("沈阳市排水集团",),
    "storm": ("沈阳市排水集团",),
    "gas": ("沈阳市燃气集团",),
    "heat": ("沈阳市热力集团",),
    "power": ("沈阳市供电公司",),
    "telecom": ("中国电信沈阳分公司", "中国移动沈阳分公司", "中国联通沈阳分公司"),
}
FIRST_YEAR = {
    "water": 1958,
    "sewer": 1958,
    "storm": 1960,
    "gas": 1985,
    "heat": 1990,
    "power": 1980,
    "telecom": 1995,
}
NODE_TYPES = {  # (at intersections, along a street): types and weights
    "water": (
        (("valve", "hydrant", "meter", "junction"), (0.55, 0.15, 0.06, 0.24)),  # DMA meters on mains
        (("hydrant", "meter", "valve", "junction"), (0.3, 0.15, 0.1, 0.45)),
    ),
    "sewer": ((("manhole",), (1.0,)), (("manhole",), (1.0,))),
    "storm": ((("manhole",), (1.0,)), (("manhole",), (1.0,))),
    "gas": (
        (("valve", "meter", "junction"), (0.6, 0.06, 0.34)),
        (("junction", "meter", "valve"), (0.7, 0.15, 0.15)),
    ),
    "heat": ((("valve", "manhole", "junction"), (0.5, 0.2, 0.3)), (("manhole", "junction"), (0.4, 0.6))),
    "power": ((("manhole", "junction"), (0.8, 0.2)), (("manhole", "junction"), (0.6, 0.4))),
    "telecom": ((("manhole", "junction"), (0.8, 0.2)), (("manhole", "junction"), (0.6, 0.4))),
}
CLOSED_VALVES = {"water": 0.04, "gas": 0.03, "heat": 0.05}


def cross_section_offsets(grid: Grid, rng: np.random.Generator) -> dict[str, Floats]:
    """Each utility's distance from the centreline of every street (positive: east or north side)."""
    half = grid.line_width / 2 - 1.0
    offsets = {u: half * f + rng.uniform(-0.2, 0.2, len(half)) for u, f in CROSS_SECTION.items()}
    bad_lines = np.flatnonzero(rng.random(len(half)) < 0.1)
    for line in bad_lines.tolist():
        near, anchor, (lo, hi) = VIOLATIONS[int(rng.integers(len(VIOLATIONS)))]
        side = np.sign(offsets[near][line] - offsets[anchor][line]) or 1.0
        offsets[near][line] = offsets[anchor][line] + side * rng.uniform(lo, hi)
    return {u: np.round(o, 2) for u, o in offsets.items()}


@dataclass(frozen=True)
class Network:
    """All utilities' nodes and segments, concatenated; segment ends index into the node arrays."""

    node_id: Objects
    node_x: Floats
    node_y: Floats
    node_type: Objects
    node_utility: Objects
    node_state: Objects
    node_elev: Floats
    seg_id: Objects
    seg_from: Ints
    seg_to: Ints
    seg_fields: dict[str, NDArray[Any]]


def weighted(
    choices: tuple[Any, ...], weights: tuple[float, ...], n: int, rng: np.random.Generator
) -> Objects:
    picked = rng.choice(len(choices), n, p=np.array(weights) / np.sum(weights))
    return np.array(choices, dtype=object)[picked]


def line_attributes(utility: str, grid: Grid, rng: np.random.Generator) -> dict[str, NDArray[Any]]:
    """Diameter, pressure, material, owner and age belong to a whole street's main, not to one edge."""
    n = len(grid.line_class)
    cls = grid.line_class
    if utility == "gas":
        pressure = np.empty(n, dtype=object)
        for c, (values, weights) in GAS_PRESSURE.items():
            mask = cls == c
            pressure[mask] = weighted(values, weights, int(mask.sum()), rng)
        diameter = np.array([rng.choice(GAS_DIAMETER[p]) for p in pressure], dtype=np.int32)
        material = np.where(
            np.isin(pressure, ["subhigh_a", "subhigh_b", "medium_a"]) | (rng.random(n) < 0.4), "钢", "PE"
        ).astype(object)
    else:
        pressure = np.full(n, "none", dtype=object)
        diameter = np.array([rng.choice(DIAMETERS[utility][c]) for c in cls], dtype=np.int32)
        material = (
            weighted(*MATERIALS[utility], n, rng) if utility in MATERIALS else np.empty(n, dtype=object)
        )
    centre = np.concatenate([grid.xs - grid.xs.mean(), grid.ys - grid.ys.mean()])
    span = max(np.ptp(grid.xs), np.ptp(grid.ys)) / 2
    first = FIRST_YEAR[utility]
    year = first + (2024 - first) * np.clip(np.abs(centre) / span + rng.normal(0, 0.25, n), 0, 1)
    year = np.round(year).astype(np.int32)
    if utility == "water":  # the pipe material follows the era it was laid in
        material = np.where(
            year < 1990, "灰口铸铁", np.where((year > 2005) & (cls == "branch"), "PE", "球墨铸铁")
        )
        material = material.astype(object)
    owner = weighted(OWNERS[utility], (1.0,) * len(OWNERS[utility]), n, rng)
    return {
        "diameter_mm": diameter,
        "pressure_class": pressure,
        "material": material,
        "owner": owner,
        "install_year": year,
    }


def node_depth(utility: str, x: Floats, y: Floats, rng: np.random.Generator) -> Floats:
    mean, amplitude, noise, floor = DEPTH[utility]
    smooth = np.sin(x / 1700.0 + len(utility)) * np.cos(y / 2300.0)
    depth = np.maximum(mean + amplitude * smooth + rng.normal(0, noise, len(x)), floor)
    if utility in SHALLOW:
        share, lo, hi = SHALLOW[utility]
        shallow = rng.random(len(x)) < share
        depth[shallow] = rng.uniform(lo, hi, int(shallow.sum()))
    return np.round(depth, 2)


def ground_elevation(x: Floats, y: Floats, origin: tuple[float, float]) -> Floats:
    # Shenyang's plain rises gently from the south-west (about 40 m) to the north-east hills.
    dx, dy = x - origin[0], y - origin[1]
    return np.round(42.0 + 0.00035 * dx + 0.00045 * dy + 1.5 * np.sin(dx / 3100.0) * np.cos(dy / 2700.0), 2)


@dataclass(frozen=True)
class UtilityNet:
    node_x: Floats
    node_y: Floats
    node_type: Objects
    node_state: Objects
    seg_from: Ints
    seg_to: Ints
    seg_fields: dict[str, NDArray[Any]]


def utility_network(
    utility: str, grid: Grid, roads: Edges, offsets: Floats, scale: Scale, rng: np.random.Generator
) -> UtilityNet:
    presence = np.array([PRESENCE[utility][c] for c in roads.road_class])
    chosen = rng.random(len(presence)) < presence
    chosen[chosen] = largest_component(roads.a[chosen], roads.b[chosen])
    a, b, line = roads.a[chosen], roads.b[chosen], roads.line[chosen]
    nx, ny = grid.nx, grid.ny
    # A utility's main is the street shifted sideways, so its junctions stay exactly on both mains.
    junctions, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    ji, jj = np.divmod(junctions, ny)
    jx, jy = grid.xs[ji] + offsets[ji], grid.ys[jj] + offsets[nx + jj]
    ja, jb = inverse[: len(a)], inverse[len(a) :]
    length = np.hypot(jx[jb] - jx[ja], jy[jb] - jy[ja])
    pieces = np.maximum(1, np.ceil(length / (scale.segment_m * SEGMENT_FACTOR[utility])).astype(np.int64))
    extra = pieces - 1
    extra_start = np.cumsum(extra) - extra
    # Survey points along each edge, evenly spaced; they become the nodes after the junctions.
    edge_of = np.repeat(np.arange(len(a)), extra)
    k = np.arange(int(extra.sum())) - np.repeat(extra_start, extra) + 1
    t = k / pieces[edge_of]
    ix = jx[ja[edge_of]] + (jx[jb[edge_of]] - jx[ja[edge_of]]) * t
    iy = jy[ja[edge_of]] + (jy[jb[edge_of]] - jy[ja[edge_of]]) * t
    n_junctions = len(junctions)
    seg_edge = np.repeat(np.arange(len(a)), pieces)
    kk = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    inner_from = n_junctions + extra_start[seg_edge] + kk - 1
    inner_to = n_junctions + extra_start[seg_edge] + kk
    seg_from = np.where(kk == 0, ja[seg_edge], inner_from)
    seg_to = np.where(kk == pieces[seg_edge] - 1, jb[seg_edge], inner_to)
    node_x, node_y = np.concatenate([jx, ix]), np.concatenate([jy, iy])

    (at_junction, along) = NODE_TYPES[utility]
    node_type = np.concatenate([weighted(*at_junction, n_junctions, rng), weighted(*along, len(ix), rng)])
    state = np.full(len(node_x), None, dtype=object)
    valves = node_type == "valve"
    state[valves] = np.where(
        rng.random(int(valves.sum())) < CLOSED_VALVES.get(utility, 0.0), "closed", "open"
    )
    depth = node_depth(utility, node_x, node_y, rng)

    per_line = line_attributes(utility, grid, rng)
    edge_year = per_line["install_year"][line].copy()
    renewed = rng.random(len(line)) < 0.25
    edge_year[renewed] = rng.integers(edge_year[renewed], 2026)
    status_draw = rng.random(len(line))
    status = np.where(status_draw < 0.03, "out_of_service", "in_service").astype(object)
    status[(status_draw > 0.985) & (edge_year < 2000)] = "abandoned"
    seg_fields: dict[str, NDArray[Any]] = {
        "utility": np.full(len(seg_edge), utility, dtype=object),
        "material": per_line["material"][line][seg_edge],
        "diameter_mm": per_line["diameter_mm"][line][seg_edge],
        "pressure_class": per_line["pressure_class"][line][seg_edge],
        "depth_start_m": depth[seg_from],
        "depth_end_m": depth[seg_to],
        "install_year": edge_year[seg_edge],
        "owner": per_line["owner"][line][seg_edge],
        "status": status[seg_edge],
    }
    return UtilityNet(node_x, node_y, node_type, state, seg_from, seg_to, seg_fields)


def build_network(grid: Grid, roads: Edges, scale: Scale, seed: int) -> Network:
    offsets = cross_section_offsets(grid, stream(seed, "pipelines/cross-section"))
    nets = {
        u: utility_network(u, grid, roads, offsets[u], scale, stream(seed, f"pipelines/{u}"))
        for u in UTILITIES
    }
    node_ids, seg_ids, seg_from, seg_to = [], [], [], []
    base = 0
    for u, net in nets.items():
        code = UTILITY_CODE[u]
        node_ids.append(np.array([f"{code}-N{n:07d}" for n in range(1, len(net.node_x) + 1)], dtype=object))
        seg_ids.append(np.array([f"{code}-S{n:07d}" for n in range(1, len(net.seg_from) + 1)], dtype=object))
        seg_from.append(net.seg_from + base)
        seg_to.append(net.seg_to + base)
        base += len(net.node_x)
    node_x = np.concatenate([n.node_x for n in nets.values()])
    node_y = np.concatenate([n.node_y for n in nets.values()])
    fields = {
        name: np.concatenate([n.seg_fields[name] for n in nets.values()])
        for name in next(iter(nets.values())).seg_fields
    }
    return Network(
        node_id=np.concatenate(node_ids),
        node_x=node_x,
        node_y=node_y,
        node_type=np.concatenate([n.node_type for n in nets.values()]),
        node_utility=np.concatenate([np.full(len(n.node_x), u, dtype=object) for u, n in nets.items()]),
        node_state=np.concatenate([n.node_state for n in nets.values()]),
        node_elev=ground_elevation(node_x, node_y, (grid.xs[0], grid.ys[0])),
        seg_id=np.concatenate(seg_ids),
        seg_from=np.concatenate(seg_from),
        seg_to=np.concatenate(seg_to),
        seg_fields=fields,
    )


# ----------------------------------------------------------------------------------------------------------
# Layer data and writing


@dataclass(frozen=True)
class LayerData:
    """One layer's rows by layer field name, geometry in `crs` (the frame unless said otherwise)."""

    fid: NDArray[Any]
    fields: dict[str, NDArray[Any]]
    geometry: Objects
    crs: str = FRAME_CRS
    valid_from: NDArray[np.datetime64] | None = None
    valid_to: NDArray[np.datetime64] | None = None

    def __len__(self) -> int:
        return len(self.fid)


def coerce(values: NDArray[Any], kind: FieldType) -> NDArray[Any]:
    """The column as the declared type: integers stay integers, dates are dates."""
    match kind:
        case FieldType.integer:
            return np.asarray(values, dtype=np.int32)
        case FieldType.bigint:
            return np.asarray(values, dtype=np.int64)
        case FieldType.real:
            return np.asarray(values, dtype=np.float64)
        case FieldType.boolean:
            return np.asarray(values, dtype=bool)
        case FieldType.date:
            return np.asarray(values, dtype="datetime64[D]")
        case FieldType.timestamp:
            return np.asarray(values, dtype="datetime64[s]")
        case _:
            return np.array([None if v is None else str(v) for v in values], dtype=object)


def field_values(spec: LayerSpec, data: LayerData, f: FieldSpec) -> NDArray[Any]:
    """A field's values in its declared type, refusing what the registry would reject."""
    if f.name not in data.fields:
        raise SystemExit(f"{spec.id}: the generator made no values for {f.name}")
    values = coerce(data.fields[f.name], f.type)
    if len(values) != len(data):
        raise SystemExit(f"{spec.id}.{f.name}: {len(values)} values for {len(data)} rows")
    if f.values is not None:
        unknown = sorted({str(v) for v in values if v is not None} - set(f.values))
        if unknown:
            raise SystemExit(f"{spec.id}.{f.name}: values outside the declared list: {unknown[:5]}")
    return values


def source_columns(spec: LayerSpec, data: LayerData) -> dict[str, tuple[NDArray[Any], FieldType]]:
    """Source column name -> (values, type), in delivery order: id, fields, validity."""
    columns: dict[str, tuple[NDArray[Any], FieldType]] = {}
    fid_kind = FieldType.text if data.fid.dtype == object else FieldType.bigint
    columns[spec.source.fid] = (coerce(data.fid, fid_kind), fid_kind)
    for f in spec.fields:
        values = field_values(spec, data, f)
        name = spec.source.fields.get(f.name, f.name)
        if name in columns:  # the id column doubles as a field (admin_districts.adcode)
            if not np.array_equal(columns[name][0], values):
                raise SystemExit(f"{spec.id}: column {name} is both the id and a different field")
            continue
        columns[name] = (values, f.type)
    for column, values in ((spec.source.valid_from, data.valid_from), (spec.source.valid_to, data.valid_to)):
        if column:
            if values is None:
                raise SystemExit(f"{spec.id}: the source declares {column} but the generator made no dates")
            columns[column] = (coerce(values, FieldType.date), FieldType.date)
    return columns


def as_declared_geometry(geoms: Objects, geometry_type: str) -> Objects:
    if not geometry_type.startswith("Multi"):
        kinds = set(shapely.get_type_id(geoms).tolist())
        if len(geoms) and kinds - {int(shapely.GeometryType[geometry_type.upper()])}:
            raise SystemExit(f"geometries of types {sorted(kinds)} where {geometry_type} is declared")
        return geoms
    parts, index = shapely.get_parts(geoms, return_index=True)
    collect = {
        "MultiPolygon": shapely.multipolygons,
        "MultiLineString": shapely.multilinestrings,
        "MultiPoint": shapely.multipoints,
    }[geometry_type]
    return collect(parts, indices=index)


def clear_outputs(specs: tuple[LayerSpec, ...], out: Path) -> None:
    """Remove this generator's own files before writing, so GeoPackages do not keep stale layers."""
    for spec in specs:
        path = out / spec.source.path
        siblings = (
            (path.with_suffix(s) for s in (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix"))
            if spec.source.format is SourceFormat.shp
            else (path,)
        )
        for p in siblings:
            p.unlink(missing_ok=True)


def csv_text(values: NDArray[Any], kind: FieldType) -> NDArray[Any]:
    if kind is FieldType.date:
        text = np.datetime_as_string(values, unit="D").astype(object)
        text[np.isnat(values)] = None
        return text
    if kind is FieldType.timestamp:  # local time written with its offset, as the departments export it
        text = np.char.add(np.datetime_as_string(values, unit="s"), "+08:00").astype(object)
        text[np.isnat(values)] = None
        return text
    return values


def write_csv(spec: LayerSpec, data: LayerData, path: Path, geoms: Objects) -> None:
    columns = source_columns(spec, data)
    frame = pd.DataFrame({name: csv_text(values, kind) for name, (values, kind) in columns.items()})
    geographic = is_gcj02(spec.source.crs) or pyproj.CRS.from_user_input(spec.source.crs).is_geographic
    digits = 7 if geographic else 3  # about a centimetre either way
    frame[spec.source.x] = np.round(shapely.get_x(geoms), digits)
    frame[spec.source.y] = np.round(shapely.get_y(geoms), digits)
    frame.to_csv(path, index=False, encoding=spec.source.encoding or "utf-8", lineterminator="\n")


def write_vector(spec: LayerSpec, data: LayerData, path: Path, geoms: Objects) -> None:
    columns = source_columns(spec, data)
    driver = {SourceFormat.gpkg: "GPKG", SourceFormat.shp: "ESRI Shapefile", SourceFormat.geojson: "GeoJSON"}
    options: dict[str, Any] = {}
    if spec.source.format is SourceFormat.shp:
        options["encoding"] = spec.source.encoding or "UTF-8"
    if spec.source.format is SourceFormat.geojson:
        options["layer_options"] = {"COORDINATE_PRECISION": 8}
    # Amap and Tencent exports label their GCJ-02 degrees as WGS 84; the registry knows better.
    crs = "EPSG:4326" if is_gcj02(spec.source.crs) else spec.source.crs
    ogr_write(
        str(path),
        shapely.to_wkb(as_declared_geometry(geoms, spec.geometry.value)),
        field_data=[values for values, _ in columns.values()],
        fields=list(columns),
        layer=spec.source.layer or path.stem,
        driver=driver[spec.source.format],
        geometry_type=spec.geometry.value,
        crs=crs,
        **options,
    )


def write_layer(spec: LayerSpec, data: LayerData, out: Path, projector: Projector) -> None:
    path = out / spec.source.path
    path.parent.mkdir(parents=True, exist_ok=True)
    geoms = projector.geometries(data.geometry, data.crs, spec.source.crs)
    if spec.source.format is SourceFormat.csv:
        write_csv(spec, data, path, geoms)
    else:
        write_vector(spec, data, path, geoms)


def check_inside(layer: str, data: LayerData, geography: Geography, window: BaseGeometry) -> None:
    """Everything synthetic lies strictly inside the city outline; cheap when it is inside the grid."""
    if data.crs != FRAME_CRS or len(data) == 0:
        return
    bounds = shapely.bounds(data.geometry)
    wx0, wy0, wx1, wy1 = window.bounds
    inside_window = (
        (bounds[:, 0] >= wx0) & (bounds[:, 1] >= wy0) & (bounds[:, 2] <= wx1) & (bounds[:, 3] <= wy1)
    )
    rest = data.geometry[~inside_window]
    if len(rest) and not shapely.contains_properly(geography.city, rest).all():
        raise SystemExit(f"{layer}: some features leave the city outline")


# ----------------------------------------------------------------------------------------------------------
# The world and its layers


@dataclass(frozen=True)
class World:
    scale: Scale
    seed: int
    projector: Projector
    geography: Geography
    window: tuple[float, float, float, float]
    extent: BaseGeometry
    grid: Grid
    water: Water
    redline: RedLine
    boundary: Boundary
    roads: Edges
    blocks: Blocks
    buildings: Buildings

    @property
    def window_box(self) -> BaseGeometry:
        return shapely.box(*self.window)


def frame_window(
    scale: Scale, projector: Projector, geography: Geography
) -> tuple[float, float, float, float]:
    lon0, lat0, lon1, lat1 = scale.window
    lon = np.array([lon0, lon1, lon1, lon0])
    lat = np.array([lat0, lat0, lat1, lat1])
    x, y = projector.xy(lon, lat, STORAGE_CRS, FRAME_CRS)
    # The projected lon/lat box is slightly curved; the rectangle inside it is the grid.
    x0, y0 = round(float(max(x[0], x[3])), 3), round(float(max(y[0], y[1])), 3)
    x1, y1 = round(float(min(x[1], x[2])), 3), round(float(min(y[2], y[3])), 3)
    if not geography.city_inner.contains(shapely.box(x0, y0, x1, y1)):
        raise SystemExit(f"scale {scale.name}: the grid window {scale.window} leaves the city outline")
    return x0, y0, x1, y1


def build_world(scale: Scale, seed: int) -> World:
    projector = Projector()
    geography = load_geography(projector)
    window = frame_window(scale, projector, geography)
    extent = largest_part(
        shapely.box(*window).buffer(scale.fringe_m, join_style="mitre").intersection(geography.city_inner)
    )
    shapely.prepare(extent)
    grid = build_grid(window, scale, stream(seed, "grid"))
    green = build_green(window, extent, stream(seed, "green"))
    water = build_water(grid, projector, extent, window, green, scale, stream(seed, "water"))
    redline = build_redline(water.river, green, extent)
    boundary = build_boundary(window, extent, water, redline, stream(seed, "boundary"))
    roads = build_roads(grid, water)
    blocks = build_blocks(grid, water, redline, geography, stream(seed, "blocks"))
    buildings = build_buildings(blocks, water, redline, scale, stream(seed, "buildings"))
    return World(
        scale,
        seed,
        projector,
        geography,
        window,
        extent,
        grid,
        water,
        redline,
        boundary,
        roads,
        blocks,
        buildings,
    )


def ids(prefix: str, n: int, width: int = 6) -> Objects:
    return np.array([f"{prefix}{k:0{width}d}" for k in range(1, n + 1)], dtype=object)


def random_dates(start: str, end: str, n: int, rng: np.random.Generator) -> NDArray[np.datetime64]:
    first, last = np.datetime64(start), np.datetime64(end)
    return first + rng.integers(0, int((last - first).astype(int)) + 1, n).astype("timedelta64[D]")


def nearest_street(world: World, x: Floats, y: Floats) -> tuple[Objects, Objects]:
    """Name of the nearest street and a house number on it (odd one side, even the other)."""
    grid = world.grid
    vi = np.clip(np.searchsorted(grid.xs, x), 1, grid.nx - 1)
    vi = np.where(np.abs(grid.xs[vi - 1] - x) < np.abs(grid.xs[vi] - x), vi - 1, vi)
    hj = np.clip(np.searchsorted(grid.ys, y), 1, grid.ny - 1)
    hj = np.where(np.abs(grid.ys[hj - 1] - y) < np.abs(grid.ys[hj] - y), hj - 1, hj)
    dv, dh = np.abs(grid.xs[vi] - x), np.abs(grid.ys[hj] - y)
    on_vertical = dv <= dh
    name = np.where(on_vertical, grid.line_name[vi], grid.line_name[grid.nx + hj]).astype(object)
    along = np.where(on_vertical, y - grid.ys[0], x - grid.xs[0])
    side = np.where(on_vertical, x > grid.xs[vi], y > grid.ys[hj]).astype(np.int64)
    number = 2 * (along // 30).astype(np.int64) + 1 + side
    return name, number


def addresses(world: World, x: Floats, y: Floats) -> Objects:
    district, _ = world.geography.district_of(x, y)
    street, number = nearest_street(world, x, y)
    return np.array(
        [f"沈阳市{d}{s}{n}号" for d, s, n in zip(district, street, number.tolist(), strict=True)],
        dtype=object,
    )


def admin_districts(world: World) -> LayerData:
    g = world.geography
    return LayerData(
        g.adcode, {"adcode": g.adcode, "name": g.name, "level": g.level}, g.reference_gcj, crs="GCJ-02"
    )


def roads_layer(world: World) -> LayerData:
    roads = world.roads
    ax, ay = world.grid.node_xy(roads.a)
    bx, by = world.grid.node_xy(roads.b)
    geoms = shapely.linestrings(np.stack([np.column_stack([ax, ay]), np.column_stack([bx, by])], axis=1))
    lanes = np.select(
        [roads.road_class == "expressway", roads.road_class == "arterial", roads.road_class == "secondary"],
        [8, np.where(roads.width >= 44, 8, 6), np.where(roads.width >= 26, 6, 4)],
        2,
    )
    return LayerData(
        ids("R", len(roads.a)),
        {"name": roads.name, "road_class": roads.road_class, "lanes": lanes, "width_m": roads.width},
        geoms,
    )


def buildings_layer(world: World) -> LayerData:
    b = world.buildings
    return LayerData(
        ids("JZ", len(b.use), 7),
        {"use": b.use, "floors": b.floors, "height_m": b.height, "built_year": b.year},
        b.geom,
    )


def water_layer(world: World) -> LayerData:
    w = world.water
    names = ["浑河", "南运河", *[p.lake_name for p in w.parks], *w.extra_names]
    kinds = ["river", "canal", *["lake"] * len(w.parks), *w.extra_kinds]
    geoms = np.array([w.river, w.canal, *[p.lake for p in w.parks], *w.extra_geoms], dtype=object)
    parts, index = polygon_parts(geoms, 100.0)
    return LayerData(
        ids("SX", len(parts), 4),
        {"name": np.array(names, dtype=object)[index], "kind": np.array(kinds, dtype=object)[index]},
        parts,
    )


class Gazetteer:
    """Named points; a name is unique, as in a real gazetteer (a second 阳光小区 becomes 阳光小区二期)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.categories: list[str] = []
        self.xy: list[tuple[float, float]] = []
        self._taken: set[str] = set()

    def add(self, name: str, category: str, x: float, y: float) -> None:
        base, k = name, 2
        while name in self._taken:
            name = f"{base}{chinese_number(k)}期" if k < 100 else f"{base}{k}"
            k += 1
        self._taken.add(name)
        self.names.append(name)
        self.categories.append(category)
        self.xy.append((x, y))


def building_poi(use: str, road: str, serial: int, rng: np.random.Generator) -> tuple[str, str] | None:
    """The name and Amap category of the place a building of this use would be listed as."""
    word = COMPOUND_A[int(rng.integers(len(COMPOUND_A)))]
    match use:
        case "residential":
            return word + COMPOUND_B[int(rng.integers(len(COMPOUND_B)))], "商务住宅"
        case "commercial":
            return str(rng.choice([f"{word}大厦", f"{road}商业广场", f"{word}购物中心"])), "购物服务"
        case "education":
            name = f"沈阳市第{chinese_number(serial % 99 + 1)}中学" if serial % 2 else f"{road}小学"
            return name, "科教文化服务"
        case "medical":
            return f"沈阳市第{chinese_number(serial % 99 + 1)}人民医院", "医疗保健服务"
        case "public":
            return str(rng.choice([f"{road}街道办事处", f"{road}社区服务中心"])), "政府机构及社会团体"
        case "industrial":
            company = COMPANY_WORDS[int(rng.integers(len(COMPANY_WORDS)))]
            return f"沈阳{company}{word}机械有限公司", "公司企业"
    return None


def bus_stops(world: World, gazetteer: Gazetteer, rng: np.random.Generator) -> None:
    grid, roads = world.grid, world.roads
    major = np.flatnonzero(np.isin(roads.road_class, ["expressway", "arterial", "secondary"]))
    stops = major[rng.random(len(major)) < 0.2]
    ax, ay = grid.node_xy(roads.a[stops])
    bx, by = grid.node_xy(roads.b[stops])
    side = roads.width[stops] / 2 + 2.0  # the stop is on the pavement, not in the carriageway
    x = (ax + bx) / 2 + np.where(ax == bx, side, 0.0)
    y = (ay + by) / 2 + np.where(ax == bx, 0.0, side)
    for s, px, py in zip(stops.tolist(), x.tolist(), y.tolist(), strict=True):
        gazetteer.add(f"{roads.name[s]}站", "交通设施服务", px, py)


def place_names_layer(world: World, rng: np.random.Generator) -> LayerData:
    b = world.buildings
    gazetteer = Gazetteer()
    street, _ = nearest_street(world, b.cx, b.cy)
    serial = {"education": 0, "medical": 0}
    # Every block has a named place; busier ones have several (compounds, shops, offices).
    first_of_block = np.r_[True, b.block[1:] != b.block[:-1]]
    for k in np.flatnonzero(first_of_block | (rng.random(len(b.use)) < 0.2)).tolist():
        use = str(b.use[k])
        serial[use] = serial.get(use, 0) + 1
        road = str(street[k]).removesuffix("大街").removesuffix("大路").removesuffix("街").removesuffix("路")
        poi = building_poi(use, road, serial[use], rng)
        if poi is not None:
            gazetteer.add(*poi, float(b.cx[k]), float(b.cy[k]))
    for park in world.water.parks:
        x0, y0, x1, y1 = park.rect
        gazetteer.add(park.name, "风景名胜", (x0 + x1) / 2, y0 + 0.15 * (y1 - y0))
    bus_stops(world, gazetteer, rng)
    x, y = np.array(gazetteer.xy).T
    return LayerData(
        ids("POI", len(gazetteer.names), 7),
        {
            "name": np.array(gazetteer.names, dtype=object),
            "address": addresses(world, x, y),
            "category": np.array(gazetteer.categories, dtype=object),
        },
        shapely.points(x, y),
    )


def pipeline_layers(world: World) -> Iterator[tuple[str, LayerData]]:
    network = build_network(world.grid, world.roads, world.scale, world.seed)
    nodes = shapely.points(network.node_x, network.node_y)
    yield (
        "pipe_nodes",
        LayerData(
            network.node_id,
            {
                "node_type": network.node_type,
                "utility": network.node_utility,
                "state": network.node_state,
                "ground_elev_m": network.node_elev,
            },
            nodes,
        ),
    )
    ends = np.stack(
        [
            np.column_stack([network.node_x[network.seg_from], network.node_y[network.seg_from]]),
            np.column_stack([network.node_x[network.seg_to], network.node_y[network.seg_to]]),
        ],
        axis=1,
    )
    fields = dict(network.seg_fields)
    fields["from_node"] = network.node_id[network.seg_from]
    fields["to_node"] = network.node_id[network.seg_to]
    yield "pipelines", LayerData(network.seg_id, fields, shapely.linestrings(ends))
    sensors = sensors_layer(world, network, nodes, stream(world.seed, "pipe_sensors"))
    yield "pipe_sensors", sensors
    yield "sensor_readings", readings_layer(sensors, stream(world.seed, "sensor_readings"))
    yield "inspections", inspections_layer(network, stream(world.seed, "inspections"))


def sensors_layer(world: World, network: Network, nodes: Objects, rng: np.random.Generator) -> LayerData:
    kinds = (
        (
            "pressure",
            np.isin(network.node_utility, ["water", "gas", "heat"])
            & np.isin(network.node_type, ["valve", "junction"]),
            0.4,
        ),
        ("flow", np.isin(network.node_utility, ["water", "heat", "sewer", "storm"]), 0.35),
        (
            "gas_leak",
            (network.node_utility == "gas") & np.isin(network.node_type, ["valve", "meter", "junction"]),
            0.25,
        ),
    )
    picked, types = [], []
    for kind, eligible, share in kinds:
        pool = np.flatnonzero(eligible)
        n = min(len(pool), round(world.scale.sensors * share))
        chosen = np.sort(rng.choice(pool, n, replace=False))
        picked.append(chosen)
        types.append(np.full(n, kind, dtype=object))
    index = np.concatenate(picked)
    return LayerData(
        ids("SN-", len(index)),
        {
            "sensor_type": np.concatenate(types),
            "utility": network.node_utility[index],
            "node_fid": network.node_id[index],
            "installed_on": random_dates("2018-01-01", "2026-10-31", len(index), rng),
        },
        nodes[index],
    )


READING_HOURS = 48  # hourly readings over the two days before the delivery date
# Normal operation per (sensor type, utility): mean and spread, in the units of layers/sensor-thresholds.yml.
READING_NORMAL = {
    ("pressure", "water"): (0.32, 0.03),
    ("pressure", "gas"): (0.12, 0.01),
    ("pressure", "heat"): (0.8, 0.06),
    ("flow", "water"): (120.0, 40.0),
    ("flow", "heat"): (80.0, 20.0),
    ("flow", "sewer"): (150.0, 50.0),
    ("flow", "storm"): (40.0, 30.0),
    ("gas_leak", "gas"): (1.0, 0.8),
}
READING_UNITS = {"pressure": "MPa", "flow": "m³/h", "gas_leak": "%LEL"}
READING_ANOMALIES = 0.02  # share of readings off normal: pressure drops, flow surges, gas leaks to grade
READING_QUALITY = (("good", "suspect", "bad"), (0.975, 0.02, 0.005))


INSPECTORS = ("王伟", "李娜", "张磊", "刘洋", "陈静", "杨帆")
# A finding and the severities an inspector gives it (none: nothing to act on).
FINDINGS = (("normal", "leak", "corrosion", "cover_damaged", "encroachment", "subsidence", "valve_fault"),
            (0.55, 0.08, 0.1, 0.1, 0.07, 0.04, 0.06))
SEVERITIES = {"normal": (("none",), (1.0,)),
              "leak": (("yellow", "orange", "red"), (0.5, 0.35, 0.15)),
              "subsidence": (("yellow", "orange", "red"), (0.5, 0.35, 0.15))}
MINOR = (("none", "blue", "yellow"), (0.3, 0.5, 0.2))


def inspections_layer(network: Network, rng: np.random.Generator) -> LayerData:
    """The paper records of past inspection rounds: findings at nodes (some at a pipe), over the last 90 days."""
    count = int(min(400, max(60, len(network.node_id) // 40)))
    at_node = rng.choice(len(network.node_id), count, replace=False)
    x = network.node_x[at_node] + rng.normal(0, 2.0, count)  # the inspector stands beside it
    y = network.node_y[at_node] + rng.normal(0, 2.0, count)
    on_pipe = rng.random(count) < 0.3
    first_segment = np.full(len(network.node_id), -1)
    first_segment[network.seg_from[::-1]] = np.arange(len(network.seg_from))[::-1]
    segment = first_segment[at_node]
    pipe_fid = np.where(on_pipe & (segment >= 0), network.seg_id[np.maximum(segment, 0)], None)
    node_fid = np.where(pipe_fid == None, network.node_id[at_node], None)  # noqa: E711 (element-wise)
    finding = weighted(*FINDINGS, count, rng)
    severity = np.array([weighted(*SEVERITIES.get(f, MINOR), 1, rng)[0] for f in finding.tolist()], dtype=object)
    minutes = rng.integers(0, 90 * 24 * 60, count).astype("timedelta64[m]")
    at = (AS_OF - minutes).astype("datetime64[s]")
    return LayerData(
        np.array([f"XJ-{i + 1:06d}" for i in range(count)], dtype=object),
        {"inspected_at": at, "inspector": weighted(INSPECTORS, (1,) * len(INSPECTORS), count, rng),
         "finding": finding, "pipe_fid": pipe_fid, "node_fid": node_fid, "severity": severity,
         "note": np.full(count, None, dtype=object)},
        shapely.points(x, y),
    )


def readings_layer(sensors: LayerData, rng: np.random.Generator) -> LayerData:
    """Hourly readings per sensor at its point, mostly normal, some anomalous (warnings to find)."""
    per_sensor = READING_HOURS
    which = np.repeat(np.arange(len(sensors)), per_sensor)
    at = np.tile(AS_OF - np.arange(per_sensor, 0, -1).astype("timedelta64[h]"), len(sensors)).astype("datetime64[s]")
    kinds, utilities = sensors.fields["sensor_type"][which], sensors.fields["utility"][which]
    value = np.zeros(len(which))
    for (kind, utility), (mean, spread) in READING_NORMAL.items():
        rows = (kinds == kind) & (utilities == utility)
        value[rows] = rng.normal(mean, spread, int(rows.sum()))
    odd = rng.random(len(which)) < READING_ANOMALIES
    value[odd & (kinds == "pressure")] *= rng.uniform(0.1, 0.6, int((odd & (kinds == "pressure")).sum()))
    value[odd & (kinds == "flow")] *= rng.uniform(3.0, 8.0, int((odd & (kinds == "flow")).sum()))
    value[odd & (kinds == "gas_leak")] = rng.uniform(8.0, 70.0, int((odd & (kinds == "gas_leak")).sum()))
    value[kinds == "gas_leak"] = np.clip(value[kinds == "gas_leak"], 0.0, 100.0)
    value = np.where(kinds == "pressure", np.round(value, 3), np.round(value, 1))
    local = ZoneInfo("Asia/Shanghai")
    sensor_ids = sensors.fid[which]
    fid = np.array([reading_fid(s, t.replace(tzinfo=local))
                    for s, t in zip(sensor_ids.tolist(), at.tolist(), strict=True)], dtype=object)
    return LayerData(
        fid,
        {
            "sensor": sensor_ids,
            "sensor_type": kinds,
            "utility": utilities,
            "observed_at": at,
            "value": value,
            "unit": np.array([READING_UNITS[k] for k in kinds.tolist()], dtype=object),
            "quality": weighted(*READING_QUALITY, len(which), rng),
        },
        sensors.geometry[which],
    )


# --- planning


def land_use_layer(world: World, rng: np.random.Generator) -> LayerData:
    blocks = world.blocks
    parts, index = polygon_parts(blocks.geom, 1500.0)
    zone = blocks.zone[index]
    district = blocks.district[index]
    plan_dates = {d: random_dates("2016-01-01", "2023-12-31", 1, rng)[0] for d in sorted(set(district))}
    approved = np.array([plan_dates[d] for d in district], dtype="datetime64[D]")
    plan = np.array([f"沈阳市{d}控制性详细规划" for d in district], dtype=object)
    adcode = blocks.adcode[index]
    parcel_id = np.array([f"KG-{a}-{k:05d}" for k, a in enumerate(adcode.tolist(), 1)], dtype=object)
    expires = np.full(len(parts), np.datetime64("NaT", "D"), dtype="datetime64[D]")
    future = future_plan(world, index, zone, rng)
    expires[future.superseded] = future.superseded_on
    return LayerData(
        np.concatenate([parcel_id, future.parcel_id]),
        {
            "land_use_code": np.concatenate([zone, future.zone]),
            "land_use_name": np.array(
                [ZONE_NAMES[z] for z in np.concatenate([zone, future.zone])], dtype=object
            ),
            "plot_ratio": np.concatenate([plot_ratios(zone, rng), plot_ratios(future.zone, rng)]),
            "plan_name": np.concatenate(
                [plan, np.full(len(future.zone), "沈阳市2030控规修编", dtype=object)]
            ),
            "approved_on": np.concatenate([approved, future.approved]),
        },
        np.concatenate([parts, future.geom]),
        valid_from=np.concatenate([approved, future.effective]),
        valid_to=np.concatenate(
            [expires, np.full(len(future.zone), np.datetime64("NaT", "D"), dtype="datetime64[D]")]
        ),
    )


def plot_ratios(zone: Objects, rng: np.random.Generator) -> Floats:
    lo = np.array([PLOT_RATIO[z][0] for z in zone])
    hi = np.array([PLOT_RATIO[z][1] for z in zone])
    return np.round(lo + (hi - lo) * rng.random(len(zone)), 2)


@dataclass(frozen=True)
class FuturePlan:
    superseded: Ints  # parcel rows of the current plan that the new one replaces
    superseded_on: NDArray[np.datetime64]
    parcel_id: Objects
    zone: Objects
    geom: Objects
    approved: NDArray[np.datetime64]
    effective: NDArray[np.datetime64]


def future_plan(world: World, block_of_parcel: Ints, zone: Objects, rng: np.random.Generator) -> FuturePlan:
    """The 2030 revision: clusters of blocks rezoned (old industry to housing) from a date in 2028-2030."""
    blocks = world.blocks
    single = np.bincount(block_of_parcel, minlength=len(blocks.zone)) == 1
    eligible = np.flatnonzero(
        blocks.clean[block_of_parcel] & single[block_of_parcel] & ~np.isin(zone, ["G", "E"])
    )
    cx = (blocks.rect[block_of_parcel, 0] + blocks.rect[block_of_parcel, 2]) / 2
    cy = (blocks.rect[block_of_parcel, 1] + blocks.rect[block_of_parcel, 3]) / 2
    radius = 2.2 * world.scale.spacing_m
    dates = np.array(
        ["2028-01-01", "2028-07-01", "2029-01-01", "2029-07-01", "2030-01-01"], dtype="datetime64[D]"
    )
    superseded, when = [], []
    centres = rng.choice(eligible, min(world.scale.future_clusters, len(eligible)), replace=False)
    for k, centre in enumerate(centres.tolist()):
        near = eligible[np.hypot(cx[eligible] - cx[centre], cy[eligible] - cy[centre]) < radius]
        near = np.setdiff1d(near, np.concatenate(superseded) if superseded else np.empty(0, dtype=np.int64))
        superseded.append(near)
        when.append(np.full(len(near), dates[k % len(dates)]))
    rows = np.concatenate(superseded)
    on = np.concatenate(when)
    geoms, zones, effective = [], [], []
    for row, day in zip(rows.tolist(), on.tolist(), strict=True):
        x0, y0, x1, y1 = blocks.rect[block_of_parcel[row]]
        old = zone[row]
        if rng.random() < 0.5:  # split the block along its long side into two parcels
            if x1 - x0 >= y1 - y0:
                cut = x0 + (x1 - x0) * rng.uniform(0.4, 0.6)
                pieces = [(x0, y0, cut, y1), (cut, y0, x1, y1)]
            else:
                cut = y0 + (y1 - y0) * rng.uniform(0.4, 0.6)
                pieces = [(x0, y0, x1, cut), (x0, cut, x1, y1)]
        else:
            pieces = [(x0, y0, x1, y1)]
        for piece in pieces:
            geoms.append(shapely.box(*piece))
            if old in ("M", "W"):
                zones.append(rng.choice(["R", "B", "G", "A"], p=[0.5, 0.25, 0.15, 0.1]))
            else:
                zones.append(rng.choice(["R", "B", "A", "G"], p=[0.4, 0.3, 0.15, 0.15]))
            effective.append(day)
    n = len(geoms)
    return FuturePlan(
        superseded=rows,
        superseded_on=on.astype("datetime64[D]"),
        parcel_id=ids("KG2030-", n, 5),
        zone=np.array(zones, dtype=object),
        geom=np.array(geoms, dtype=object),
        approved=np.full(n, np.datetime64("2026-09-18"), dtype="datetime64[D]"),
        effective=np.array(effective, dtype="datetime64[D]"),
    )


def redline_layer(world: World) -> LayerData:
    r = world.redline
    return LayerData(ids("HX-", len(r.geom), 3), {"name": r.name, "level": r.level}, r.geom)


def boundary_layer(world: World) -> LayerData:
    b = world.boundary
    return LayerData(
        ids("KFBJ-", len(b.names), 2),
        {"name": np.array(b.names, dtype=object)},
        np.array(b.geoms, dtype=object),
    )


def farmland_layer(world: World, rng: np.random.Generator) -> LayerData:
    region = world.extent.difference(
        shapely.union_all(
            [
                world.boundary.union.buffer(300.0),
                world.water.all.buffer(30.0),
                world.redline.union.buffer(30.0),
            ]
        )
    )
    shapely.prepare(region)
    w, h = world.scale.farmland_cell_m
    angle = np.deg2rad(rng.uniform(8, 20))  # fields follow the old land survey, not the city grid
    xmin, ymin, xmax, ymax = world.extent.bounds
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    reach = np.hypot(xmax - xmin, ymax - ymin) / 2
    u, v = np.meshgrid(np.arange(-reach, reach, w), np.arange(-reach, reach, h), indexing="ij")
    u, v = u.ravel(), v.ravel()
    u = u + rng.uniform(-0.1, 0.1, len(u)) * w
    corners = np.stack(
        [
            np.column_stack([u + du * w, v + dv * h])
            for du, dv in ((0, 0), (0.92, 0), (0.92, 0.9), (0, 0.9), (0, 0))
        ],
        axis=1,
    )
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = corners @ rot.T + np.array([cx, cy])
    cells = shapely.polygons(corners)
    cells = cells[(rng.random(len(cells)) < 0.55) & shapely.intersects(region, cells)]
    whole = shapely.contains_properly(region, cells)
    cells[~whole] = shapely.intersection(cells[~whole], region)
    parts, _ = polygon_parts(cells, 5000.0)
    centre = shapely.centroid(parts)
    _, adcode = world.geography.district_of(shapely.get_x(centre), shapely.get_y(centre))
    code = np.array([f"{a}{k:06d}" for k, a in enumerate(adcode.tolist(), 1)], dtype=object)
    return LayerData(
        ids("JBNT", len(parts)),
        {"parcel_code": code, "area_mu": np.round(shapely.area(parts) / (10000 / 15), 2)},
        parts,
    )


def projects_layer(world: World, farmland: LayerData, rng: np.random.Generator) -> LayerData:
    """Applications as drawn by applicants: mostly on plan blocks, some crossing the three control lines."""
    n = world.scale.projects
    n_red, n_farm, n_out = (max(2, round(n * s)) for s in (0.08, 0.08, 0.08))
    n_in = n - n_red - n_farm - n_out
    blocks = world.blocks
    eligible = np.flatnonzero(blocks.clean & np.isin(blocks.zone, ["R", "B", "A", "M", "W", "U"]))
    chosen = rng.choice(eligible, min(n_in, len(eligible)), replace=False)
    geoms: list[BaseGeometry] = []
    uses: list[str] = []
    for k in chosen.tolist():
        x0, y0, x1, y1 = blocks.rect[k]
        fx, fy = rng.uniform(0.4, 1.0, 2)
        px, py = x0 + (x1 - x0) * (1 - fx) * rng.random(), y0 + (y1 - y0) * (1 - fy) * rng.random()
        geoms.append(shapely.box(px, py, px + (x1 - x0) * fx, py + (y1 - y0) * fy))
        uses.append(blocks.zone[k] if rng.random() < 0.85 else str(rng.choice(["R", "B", "M", "A"])))
    red_edge = shapely.get_coordinates(shapely.segmentize(world.redline.union.boundary, 200.0))
    red_edge = red_edge[shapely.contains_xy(world.window_box, red_edge[:, 0], red_edge[:, 1])]
    farm_centres = shapely.get_coordinates(shapely.centroid(farmland.geometry))
    outside = world.extent.difference(world.boundary.union.buffer(300.0))
    anchors = (
        (red_edge[rng.integers(len(red_edge), size=n_red if len(red_edge) else 0)], ("G", "B", "R")),
        (farm_centres[rng.integers(len(farm_centres), size=n_farm)], ("M", "W", "R")),
        (points_in(outside, n_out, rng), ("M", "W", "R", "B")),
    )
    for group, use_pool in anchors:
        for x, y in group.tolist():
            half_w, half_h = rng.uniform(80, 220, 2)
            geoms.append(shapely.box(x - half_w, y - half_h, x + half_w, y + half_h))
            uses.append(str(rng.choice(use_pool)))
    geom = np.array([largest_part(g.intersection(world.extent)) for g in geoms], dtype=object)
    keep = ~shapely.is_empty(geom)
    geom, use = geom[keep], np.array(uses, dtype=object)[keep]
    count = len(geom)
    submitted = random_dates("2023-01-01", "2026-10-31", count, rng)
    status = weighted(("submitted", "approved", "rejected", "built"), (0.3, 0.35, 0.1, 0.25), count, rng)
    recent = submitted > np.datetime64("2026-03-01")
    status[recent & (status == "built")] = "approved"  # nothing submitted this year is built yet
    centre = shapely.centroid(geom)
    district, _ = world.geography.district_of(shapely.get_x(centre), shapely.get_y(centre))
    street, _ = nearest_street(world, shapely.get_x(centre), shapely.get_y(centre))
    in_town = shapely.contains(world.window_box, centre)
    villages = np.array(VILLAGE_NAMES, dtype=object)[rng.integers(len(VILLAGE_NAMES), size=count)]
    place = np.where(in_town, street, villages)  # out of town a project is known by its village
    noun = {
        "R": "住宅小区",
        "A": "公共服务设施",
        "B": "商业综合体",
        "M": "工业厂房",
        "W": "物流园",
        "S": "交通枢纽",
        "U": "市政设施",
        "G": "绿地公园",
        "E": "生态修复",
    }
    name = np.array(
        [f"{d}{s}{noun[u]}项目" for d, s, u in zip(district, place, use, strict=True)], dtype=object
    )
    kind = ("置业", "房地产开发", "实业", "物流", "投资", "建设")
    applicant = np.array(
        [
            f"沈阳{COMPANY_WORDS[a]}{kind[b]}有限公司"
            for a, b in zip(
                rng.integers(len(COMPANY_WORDS), size=count).tolist(),
                rng.integers(len(kind), size=count).tolist(),
                strict=True,
            )
        ],
        dtype=object,
    )
    year = submitted.astype("datetime64[Y]").astype(int) + 1970
    fid = np.array([f"XM{y}{k:05d}" for k, y in enumerate(year.tolist(), 1)], dtype=object)
    return LayerData(
        fid,
        {
            "project_name": name,
            "applicant": applicant,
            "status": status,
            "submitted_on": submitted,
            "proposed_use": use,
        },
        geom,
    )


def points_in(
    area: BaseGeometry, n: int, rng: np.random.Generator, avoid: BaseGeometry | None = None
) -> Floats:
    """n uniformly random points of an area (rejection sampling; deterministic for a generator)."""
    xmin, ymin, xmax, ymax = area.bounds
    shapely.prepare(area)
    found = np.empty((0, 2))
    while len(found) < n:
        xy = np.column_stack([rng.uniform(xmin, xmax, 4 * n), rng.uniform(ymin, ymax, 4 * n)])
        ok = shapely.contains_xy(area, xy[:, 0], xy[:, 1])
        if avoid is not None:
            ok &= ~shapely.contains_xy(avoid, xy[:, 0], xy[:, 1])
        found = np.vstack([found, xy[ok]])
    return found[:n]


# --- environment


def farthest_points(xy: Floats, n: int, rng: np.random.Generator) -> Ints:
    """Spread picks evenly: each next point is the one farthest from those already chosen."""
    chosen = [int(rng.integers(len(xy)))]
    distance = np.hypot(*(xy - xy[chosen[0]]).T)
    for _ in range(min(n, len(xy)) - 1):
        k = int(np.argmax(distance))
        chosen.append(k)
        distance = np.minimum(distance, np.hypot(*(xy - xy[k]).T))
    return np.array(chosen, dtype=np.int64)


@dataclass(frozen=True)
class Stations:
    code: Objects
    name: Objects
    kind: Objects
    x: Floats
    y: Floats


def build_stations(world: World, rng: np.random.Generator) -> Stations:
    scale, b = world.scale, world.buildings
    roofs = np.flatnonzero(np.isin(b.use, ["public", "education", "residential"]))
    air = roofs[farthest_points(np.column_stack([b.cx[roofs], b.cy[roofs]]), scale.air_stations, rng)]
    street, _ = nearest_street(world, b.cx[air], b.cy[air])
    codes = [f"SY-AIR-{k:02d}" for k in range(1, len(air) + 1)]
    names = [f"{s}空气站" for s in street]
    kinds = ["air"] * len(air)
    xs, ys = list(b.cx[air]), list(b.cy[air])
    green = world.redline.geom[world.redline.level == "national"]
    if len(green):  # a background station in the hills, as every city keeps one
        p = green[0].representative_point()
        codes.append(f"SY-AIR-{len(air) + 1:02d}")
        names.append("东部山林背景站")
        kinds.append("air")
        xs.append(p.x)
        ys.append(p.y)
    river = world.water.river_line.intersection(world.window_box)
    for k in range(scale.water_stations):
        p = river.interpolate((k + 0.5) / scale.water_stations, normalized=True)
        street, _ = nearest_street(world, np.array([p.x]), np.array([p.y]))
        codes.append(f"SY-WAT-{k + 1:02d}")
        names.append(f"浑河{street[0]}断面")
        kinds.append("surface_water")
        xs.append(p.x)
        ys.append(p.y)
    p = world.water.canal.representative_point()
    codes.append(f"SY-WAT-{scale.water_stations + 1:02d}")
    names.append("南运河断面")
    kinds.append("surface_water")
    xs.append(p.x)
    ys.append(p.y)
    arterial = np.flatnonzero(world.roads.road_class == "arterial")
    picks = arterial[rng.choice(len(arterial), scale.noise_stations, replace=False)]
    ax, ay = world.grid.node_xy(world.roads.a[picks])
    for k, (x, y, s) in enumerate(zip(ax.tolist(), ay.tolist(), world.roads.name[picks], strict=True)):
        codes.append(f"SY-NOI-{k + 1:02d}")
        names.append(f"{s}噪声监测点")
        kinds.append("noise")
        xs.append(x + 25.0)  # on the corner, off the carriageway
        ys.append(y + 25.0)
    return Stations(
        np.array(codes, dtype=object),
        np.array(names, dtype=object),
        np.array(kinds, dtype=object),
        np.array(xs),
        np.array(ys),
    )


def stations_layer(world: World, stations: Stations) -> LayerData:
    district, _ = world.geography.district_of(stations.x, stations.y)
    return LayerData(
        stations.code,
        {"name": stations.name, "station_type": stations.kind, "district": district},
        shapely.points(stations.x, stations.y),
    )


# HJ 633-2012 daily breakpoints: concentration limits per IAQI 0, 50, 100, 150, 200, 300, 400, 500.
IAQI = np.array([0, 50, 100, 150, 200, 300, 400, 500], dtype=np.float64)
BREAKPOINTS = {
    "SO2": (0, 50, 150, 475, 800, 1600, 2100, 2620),
    "NO2": (0, 40, 80, 180, 280, 565, 750, 940),
    "PM10": (0, 50, 150, 250, 350, 420, 500, 600),
    "CO": (0, 2, 4, 14, 24, 36, 48, 60),
    "O3": (0, 100, 160, 215, 265, 800, 1000, 1200),
    "PM2.5": (0, 35, 75, 115, 150, 250, 350, 500),
}
UNITS = {
    "PM2.5": "µg/m³",
    "PM10": "µg/m³",
    "SO2": "µg/m³",
    "NO2": "µg/m³",
    "O3": "µg/m³",
    "CO": "mg/m³",
    "AQI": None,
}


def daily_series(days: int, rng: np.random.Generator, rho: float = 0.6, sigma: float = 0.4) -> Floats:
    """Log-normal day-to-day weather: persistent for a few days, as episodes are."""
    noise = rng.normal(0, sigma * np.sqrt(1 - rho**2), days)
    out = np.empty(days)
    out[0] = rng.normal(0, sigma)
    for d in range(1, days):
        out[d] = rho * out[d - 1] + noise[d]
    return np.exp(out - sigma**2 / 2)


def observations_layer(world: World, stations: Stations, rng: np.random.Generator) -> LayerData:
    air = np.flatnonzero(stations.kind == "air")
    days = OBS_START + np.arange(OBS_DAYS).astype("timedelta64[D]")
    doy = (days - days.astype("datetime64[Y]")).astype(int)
    heating = ((days.astype("datetime64[M]").astype(int) % 12 + 1) >= 11) | (
        (days.astype("datetime64[M]").astype(int) % 12 + 1) <= 3
    )  # Shenyang heats 1 Nov to 31 Mar
    summer = np.clip(np.sin((doy - 80) / 365 * 2 * np.pi), 0, None)
    # Particles swing most with the weather (stagnant winter days), ozone least.
    spread = {"PM": 0.45, "SO2": 0.35, "NO2": 0.3, "O3": 0.22, "CO": 0.3}
    regional = {p: daily_series(OBS_DAYS, rng, sigma=sigma) for p, sigma in spread.items()}
    means = {
        "PM2.5": 28 + 32 * heating,
        "SO2": 9 + 20 * heating,
        "NO2": 30 + 12 * heating,
        "O3": 60 + 75 * summer,
        "CO": 0.6 + 0.6 * heating,
    }
    centre = np.array([(world.window[0] + world.window[2]) / 2, (world.window[1] + world.window[3]) / 2])
    rows: dict[str, list[Any]] = {
        "obs_id": [],
        "station": [],
        "observed_at": [],
        "pollutant": [],
        "value": [],
        "unit": [],
        "x": [],
        "y": [],
    }
    for s in air.tolist():
        urban = np.exp(-np.hypot(stations.x[s] - centre[0], stations.y[s] - centre[1]) / 15000.0)
        local = rng.lognormal(0, 0.08, OBS_DAYS)
        values = {
            "PM2.5": means["PM2.5"] * regional["PM"] * local * (0.8 + 0.3 * urban),
            "SO2": means["SO2"] * regional["SO2"] * rng.lognormal(0, 0.1, OBS_DAYS),
            "NO2": means["NO2"] * regional["NO2"] * (0.6 + 0.6 * urban) * rng.lognormal(0, 0.1, OBS_DAYS),
            "O3": means["O3"] * regional["O3"] * rng.lognormal(0, 0.08, OBS_DAYS),
            "CO": means["CO"] * regional["CO"] * rng.lognormal(0, 0.1, OBS_DAYS),
        }
        values["PM10"] = values["PM2.5"] * rng.uniform(1.45, 1.9, OBS_DAYS)
        values = {p: np.round(v, 1) if p == "CO" else np.round(v) for p, v in values.items()}
        sub = np.stack([np.interp(values[p], BREAKPOINTS[p], IAQI) for p in BREAKPOINTS])
        values["AQI"] = np.ceil(sub.max(axis=0))
        for pollutant in ("AQI", "PM2.5", "PM10", "SO2", "NO2", "O3", "CO"):
            stamp = np.datetime_as_string(days, unit="D")
            rows["obs_id"].extend(f"{stations.code[s]}-{d.replace('-', '')}-{pollutant}" for d in stamp)
            rows["station"].extend([stations.code[s]] * OBS_DAYS)
            rows["observed_at"].append(days.astype("datetime64[s]"))
            rows["pollutant"].extend([pollutant] * OBS_DAYS)
            rows["value"].append(values[pollutant])
            rows["unit"].extend([UNITS[pollutant]] * OBS_DAYS)
            rows["x"].append(np.full(OBS_DAYS, stations.x[s]))
            rows["y"].append(np.full(OBS_DAYS, stations.y[s]))
    return LayerData(
        np.array(rows["obs_id"], dtype=object),
        {
            "station": np.array(rows["station"], dtype=object),
            "observed_at": np.concatenate(rows["observed_at"]),
            "pollutant": np.array(rows["pollutant"], dtype=object),
            "value": np.concatenate(rows["value"]),
            "unit": np.array(rows["unit"], dtype=object),
        },
        shapely.points(np.concatenate(rows["x"]), np.concatenate(rows["y"])),
    )


INDUSTRIES = (
    "热力生产和供应业",
    "化学原料和化学制品制造业",
    "通用设备制造业",
    "汽车制造业",
    "医药制造业",
    "食品制造业",
    "非金属矿物制品业",
    "金属制品业",
    "印刷和记录媒介复制业",
    "橡胶和塑料制品业",
)
INDUSTRY_SHORT = ("热电", "化工", "机械", "汽车零部件", "制药", "食品", "建材", "金属制品", "印务", "塑胶")


def pollution_layer(world: World, rng: np.random.Generator) -> LayerData:
    b = world.buildings
    industrial = np.flatnonzero(b.use == "industrial")
    n_plants = 2 if world.scale.name == "small" else 5
    n = min(world.scale.pollution_sources - n_plants, len(industrial))
    chosen = np.sort(rng.choice(industrial, n, replace=False))
    industry = rng.integers(len(INDUSTRIES), size=n)
    names = [
        f"沈阳{COMPANY_WORDS[int(rng.integers(len(COMPANY_WORDS)))]}{INDUSTRY_SHORT[i]}有限公司"
        for i in industry.tolist()
    ]
    x, y = list(b.cx[chosen]), list(b.cy[chosen])
    emission = list(weighted(("key", "general", "minor"), (0.15, 0.45, 0.4), n, rng))
    industries = [INDUSTRIES[i] for i in industry.tolist()]
    # Sewage works sit by the river they discharge to: what the red-line and water buffers should catch.
    river_distance = shapely.distance(world.water.river, shapely.points(b.cx, b.cy))
    for k, building in enumerate(np.argsort(river_distance, kind="stable")[:n_plants].tolist()):
        names.append(f"沈阳市第{chinese_number(k + 1)}污水处理厂")
        industries.append("污水处理及其再生利用")
        emission.append("key")
        x.append(b.cx[building])
        y.append(b.cy[building])
    return LayerData(
        ids("WRY", len(names), 5),
        {
            "name": np.array(names, dtype=object),
            "industry": np.array(industries, dtype=object),
            "emission_class": np.array(emission, dtype=object),
        },
        shapely.points(np.array(x), np.array(y)),
    )


# --- policing


@dataclass(frozen=True)
class Police:
    fid: Objects
    name: Objects
    x: Floats
    y: Floats


def build_police(world: World, rng: np.random.Generator) -> Police:
    blocks = world.blocks
    usable = np.flatnonzero(blocks.clean & ~np.isin(blocks.zone, ["G", "E"]))
    corner = blocks.rect[usable, :2] + 15.0  # a building on the south-west corner of the block
    picks = usable[farthest_points(corner, world.scale.police_stations, rng)]
    x, y = blocks.rect[picks, 0] + 15.0, blocks.rect[picks, 1] + 15.0
    grid = world.grid
    names: list[str] = []
    for k, (i, j) in enumerate(zip(blocks.i[picks].tolist(), blocks.j[picks].tolist(), strict=True)):
        for candidate in (grid.line_name[i], grid.line_name[grid.nx + j], f"{grid.line_name[i]}{k + 1}"):
            name = str(candidate).removesuffix("大街").removesuffix("大路") + "派出所"
            if name not in names:
                break
        names.append(name)
    return Police(ids("PCS", len(picks), 3), np.array(names, dtype=object), x, y)


def police_stations_layer(world: World, police: Police, rng: np.random.Generator) -> LayerData:
    phone = np.array(
        [f"024-{n}" for n in rng.integers(22000000, 89999999, len(police.fid)).tolist()], dtype=object
    )
    return LayerData(
        police.fid,
        {"name": police.name, "phone": phone, "address": addresses(world, police.x, police.y)},
        shapely.points(police.x, police.y),
    )


def jurisdictions_layer(world: World, police: Police) -> LayerData:
    """Voronoi cells of the stations cut to the urban grid: a partition with one cell per station."""
    area = world.window_box
    cells = shapely.get_parts(
        shapely.voronoi_polygons(
            shapely.multipoints(shapely.points(police.x, police.y)), extend_to=area.buffer(1000), ordered=True
        )
    )
    cells = shapely.intersection(cells, area)
    return LayerData(
        ids("JUR-", len(police.fid), 3),
        {"station": police.fid, "name": np.char.add(police.name.astype(str), "辖区").astype(object)},
        cells,
    )


CATEGORIES = (
    ("theft", "traffic", "dispute", "fraud", "assault", "other"),
    (0.25, 0.25, 0.2, 0.1, 0.05, 0.15),
)
HOUR_WEIGHT = np.array(
    [2, 1.5, 1, 0.8, 0.6, 0.8, 1.5, 3, 4, 4, 4, 4.5, 4.5, 4, 4, 4.5, 5, 5.5, 6, 6, 5.5, 5, 4, 3]
)


def incidents_layer(world: World, rng: np.random.Generator) -> LayerData:
    n = world.scale.incidents
    b = world.buildings
    busy = np.flatnonzero(b.use == "commercial")
    hotspots = busy[farthest_points(np.column_stack([b.cx[busy], b.cy[busy]]), max(4, n // 600), rng)]
    n_hot = int(n * 0.55)
    which = rng.integers(len(hotspots), size=n_hot)
    spread = rng.uniform(250, 600, len(hotspots))[which]
    hot = np.column_stack(
        [
            b.cx[hotspots][which] + rng.normal(0, 1, n_hot) * spread,
            b.cy[hotspots][which] + rng.normal(0, 1, n_hot) * spread,
        ]
    )
    water = world.water.all
    shapely.prepare(water)
    area = world.window_box.buffer(-5.0)
    hot = hot[
        shapely.contains_xy(area, hot[:, 0], hot[:, 1]) & ~shapely.contains_xy(water, hot[:, 0], hot[:, 1])
    ]
    xy = np.vstack([hot, points_in(area, n - len(hot), rng, avoid=water)])
    day = rng.integers(0, OBS_DAYS, n)
    second = rng.choice(24, n, p=HOUR_WEIGHT / HOUR_WEIGHT.sum()) * 3600 + rng.integers(0, 3600, n)
    at = (OBS_START + day.astype("timedelta64[D]")).astype("datetime64[s]") + second.astype("timedelta64[s]")
    order = np.argsort(at, kind="stable")
    at, xy = at[order], xy[order]
    age_days = (AS_OF - at).astype("timedelta64[s]").astype(np.int64) / 86400
    open_ = rng.random(n) < 0.03 + 0.6 * np.exp(-age_days / 12)
    fid = np.array(
        [f"JQ{str(t)[:10].replace('-', '')}{k:06d}" for k, t in enumerate(at.tolist(), 1)], dtype=object
    )
    return LayerData(
        fid,
        {
            "category": weighted(*CATEGORIES, n, rng),
            "occurred_at": at,
            "status": np.where(open_, "open", "closed").astype(object),
        },
        shapely.points(xy[:, 0], xy[:, 1]),
    )


# ----------------------------------------------------------------------------------------------------------
# Rasters: terrain, land cover and an imagery-like rendering, delivered as GeoTIFFs (layers/rasters/)

RASTER_MARGIN_M = 3000.0  # beyond the street grid, so the hills north-east of it show
DEM_CELL_M = 20.0
COVER_CELL_M = 10.0
IMAGERY_CELL_DEG = (0.00018, 0.000135)  # about 15 m either way at 41.7° N
COVER_CODES = {"water": 1, "built": 2, "road": 3, "green": 4, "crop": 5, "bare": 6}
COVER_RGB = {1: (38, 72, 92), 2: (150, 140, 132), 3: (105, 104, 102), 4: (62, 108, 52), 5: (168, 160, 102),
             6: (188, 174, 148)}


@dataclass(frozen=True)
class RasterGrid:
    """A north-up grid in the frame CRS: top-left corner, cell size, shape."""

    x0: float
    y1: float
    cell: float
    width: int
    height: int

    @property
    def transform(self) -> Any:
        from rasterio.transform import from_origin

        return from_origin(self.x0, self.y1, self.cell, self.cell)

    def centres(self) -> tuple[Floats, Floats]:
        x = self.x0 + (np.arange(self.width) + 0.5) * self.cell
        y = self.y1 - (np.arange(self.height) + 0.5) * self.cell
        return np.meshgrid(x, y)


def raster_grid(world: World, cell: float) -> RasterGrid:
    x0, y0, x1, y1 = shapely.box(*world.window).buffer(RASTER_MARGIN_M, join_style="mitre").bounds
    return RasterGrid(x0, y1, cell, int(np.ceil((x1 - x0) / cell)), int(np.ceil((y1 - y0) / cell)))


def terrain(world: World, grid: RasterGrid, rng: np.random.Generator) -> NDArray[np.float32]:
    """Metres above the 1985 datum: rising gently to the north-east, a valley along the Hun, hills in the
    north-east where the forest is, and smooth undulation (about 40-200 m, as around Shenyang)."""
    x, y = grid.centres()
    cx, cy = (world.window[0] + world.window[2]) / 2, (world.window[1] + world.window[3]) / 2
    z = 62.0 + 0.0016 * (x - cx) + 0.0022 * (y - cy)
    hills = world.redline.geom[world.redline.level == "national"]
    if len(hills):
        top = hills[0].centroid
        z += 120.0 * np.exp(-(((x - top.x) / 2600.0) ** 2 + ((y - top.y) / 2100.0) ** 2))
    near = shapely.box(grid.x0, grid.y1 - grid.height * grid.cell, grid.x0 + grid.width * grid.cell, grid.y1)
    # Measuring to the whole, densely drawn river is slow; its nearby course, simplified to 10 m, is enough
    line = world.water.river_line.intersection(near.buffer(5000.0)).simplify(10.0)
    river = shapely.distance(shapely.points(x.ravel(), y.ravel()), line).reshape(x.shape)
    z -= 9.0 * np.exp(-((river / 900.0) ** 2))
    for _ in range(6):
        wavelength, angle, phase = rng.uniform(1500, 6000), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        along = x * np.cos(angle) + y * np.sin(angle)
        z += rng.uniform(0.6, 1.6) * np.sin(2 * np.pi * along / wavelength + phase)
    return np.maximum(z, 30.0).astype(np.float32)


def land_cover(world: World, grid: RasterGrid) -> NDArray[np.uint8]:
    """Class codes consistent with the vector layers: water bodies, roads at their width, parks and the
    forested hills green, the street grid built-up, cropland beyond it."""
    from rasterio.features import rasterize

    roads = roads_layer(world)
    road_areas = shapely.buffer(roads.geometry, roads.fields["width_m"] / 2.0, cap_style="flat")
    green = [shapely.box(*p.rect) for p in world.water.parks]
    green += list(world.redline.geom[world.redline.level == "national"])
    layers_in_order = (  # later ones are drawn over earlier ones
        [(shapely.box(*world.window), COVER_CODES["built"])]
        + [(g, COVER_CODES["green"]) for g in green]
        + [(g, COVER_CODES["road"]) for g in road_areas]
        + [(g, COVER_CODES["water"]) for g in shapely.get_parts(world.water.all)]
    )
    return rasterize(layers_in_order, out_shape=(grid.height, grid.width), transform=grid.transform,
                     fill=COVER_CODES["crop"], dtype="uint8")


def imagery(cover: NDArray[np.uint8], relief: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.uint8]:
    """An orthophoto look: each class's colour, field and roof texture, relief shading; never 0 (nodata)."""
    rgb = np.zeros((3, *cover.shape), dtype=np.float64)
    for code, colour in COVER_RGB.items():
        rgb[:, cover == code] = np.array(colour, dtype=np.float64)[:, None]
    rows = np.arange(cover.shape[0])[:, None]
    stripes = np.where((rows // 12) % 2 == 0, 1.08, 0.92)  # strips of fields
    rgb *= np.where(cover == COVER_CODES["crop"], stripes, 1.0)
    rgb *= rng.normal(1.0, 0.06, cover.shape)
    rgb *= 0.7 + 0.45 * relief
    return np.clip(np.rint(rgb), 1, 255).astype(np.uint8)


def write_geotiff(path: Path, bands: NDArray[Any], crs: str, transform: Any, nodata: float) -> None:
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    data = bands if bands.ndim == 3 else bands[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata, compress="deflate",
                       tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(data)


def write_rasters(world: World, registry: LayerRegistry, out: Path) -> Iterator[tuple[str, str]]:
    """Each raster layer's delivery, in the CRS its file declares; yields (layer id, what was written)."""
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    from gis.rasters.render import hillshade

    specs = registry.rasters
    dem_grid, cover_grid = raster_grid(world, DEM_CELL_M), raster_grid(world, COVER_CELL_M)
    dem = terrain(world, dem_grid, stream(world.seed, "dem"))
    cover = land_cover(world, cover_grid)
    relief = hillshade(np.repeat(np.repeat(dem, 2, axis=0), 2, axis=1)[: cover.shape[0], : cover.shape[1]],
                       COVER_CELL_M, COVER_CELL_M)
    photo = imagery(cover, relief, stream(world.seed, "imagery"))
    made = {"dem": (dem, dem_grid), "land_cover": (cover, cover_grid), "imagery": (photo, cover_grid)}
    for layer_id, (data, grid) in made.items():
        spec = specs[layer_id]
        path = out / spec.source.path
        bands = data if data.ndim == 3 else data[None]
        if spec.source.crs == FRAME_CRS:
            write_geotiff(path, bands, FRAME_CRS, grid.transform, spec.nodata)
        else:  # delivered in another CRS: warp the frame grid into it, as the department's software would
            left, top = grid.x0, grid.y1
            right, bottom = left + grid.width * grid.cell, top - grid.height * grid.cell
            transform, width, height = calculate_default_transform(
                FRAME_CRS, spec.source.crs, grid.width, grid.height, left, bottom, right, top,
                resolution=IMAGERY_CELL_DEG if layer_id == "imagery" else None)
            target = np.full((bands.shape[0], height, width), spec.nodata, dtype=bands.dtype)
            reproject(bands, target, src_transform=grid.transform, src_crs=FRAME_CRS, dst_transform=transform,
                      dst_crs=spec.source.crs, src_nodata=spec.nodata, dst_nodata=spec.nodata,
                      resampling=Resampling.bilinear)
            write_geotiff(path, target, spec.source.crs, transform, spec.nodata)
        with rasterio.open(path) as written:
            size = f"{written.width}x{written.height}x{written.count} {written.dtypes[0]} {written.crs}"
        yield layer_id, f"{size}  {spec.source.path}"
    missing = sorted(set(specs) - set(made))
    if missing:
        raise SystemExit(f"the registry has raster layers this generator does not make: {', '.join(missing)}")

# ----------------------------------------------------------------------------------------------------------


def layers(world: World) -> Iterator[tuple[str, LayerData]]:
    """Every layer, one at a time, so the big ones can be written and dropped before the next."""
    seed = world.seed
    yield "admin_districts", admin_districts(world)
    yield "roads", roads_layer(world)
    yield "buildings", buildings_layer(world)
    yield "water_bodies", water_layer(world)
    yield "place_names", place_names_layer(world, stream(seed, "place_names"))
    yield from pipeline_layers(world)
    yield "land_use_plan", land_use_layer(world, stream(seed, "land_use_plan"))
    yield "ecological_redline", redline_layer(world)
    yield "development_boundary", boundary_layer(world)
    farmland = farmland_layer(world, stream(seed, "basic_farmland"))
    yield "basic_farmland", farmland
    yield "construction_projects", projects_layer(world, farmland, stream(seed, "construction_projects"))
    stations = build_stations(world, stream(seed, "monitoring_stations"))
    yield "monitoring_stations", stations_layer(world, stations)
    yield "observations", observations_layer(world, stations, stream(seed, "observations"))
    yield "pollution_sources", pollution_layer(world, stream(seed, "pollution_sources"))
    police = build_police(world, stream(seed, "police"))
    yield "police_stations", police_stations_layer(world, police, stream(seed, "police_stations"))
    yield "police_jurisdictions", jurisdictions_layer(world, police)
    yield "incidents", incidents_layer(world, stream(seed, "incidents"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument(
        "--out", type=Path, required=True, help="Delivery directory (source.path is relative)"
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--layers-dir", type=Path, default=REPO / "layers")
    parser.add_argument("--styles-dir", type=Path, default=REPO / "styles")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    registry = load_registry(args.layers_dir, args.styles_dir)
    started = time.perf_counter()
    world = build_world(SCALES[args.scale], args.seed)
    print(
        f"layout {args.scale} (seed {args.seed}): {len(world.roads.a):,} road edges, "
        f"{len(world.blocks.zone):,} blocks, {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    clear_outputs(registry.specs(), args.out)
    written: set[str] = set()
    for layer_id, data in layers(world):
        spec = registry.get_layer(layer_id)
        check_inside(layer_id, data, world.geography, world.window_box)
        write_layer(spec, data, args.out, world.projector)
        written.add(layer_id)
        print(f"{layer_id:<22} {len(data):>10,} rows  {spec.source.path}", flush=True)
    missing = sorted(set(registry) - written)
    if missing:
        raise SystemExit(f"the registry has layers this generator does not make: {', '.join(missing)}")
    for layer_id, described in write_rasters(world, registry, args.out):
        print(f"{layer_id:<22} {described}", flush=True)
    print(f"done in {time.perf_counter() - started:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
