"""Turning a source batch into the layer's shape: names, types, CRS, valid single/multi geometries.

A value that cannot be made to fit is not guessed at: the row becomes a reject with its reason.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from gis.crs import to_storage_crs
from gis.errors import SourceError
from gis.layers import FieldType, GeometryType, LayerSpec
from gis.refresh.sources import SourceBatch

# Dates and times without an offset are local: the city's departments work in Beijing time.
LOCAL_TIME = ZoneInfo("Asia/Shanghai")
_TRUE = {"true", "t", "1", "yes", "y", "是"}
_FALSE = {"false", "f", "0", "no", "n", "否"}

# Which shapely type ids belong to each layer geometry's family (single and multi).
_FAMILY: dict[str, tuple[int, int]] = {
    "Point": (shapely.GeometryType.POINT, shapely.GeometryType.MULTIPOINT),
    "LineString": (shapely.GeometryType.LINESTRING, shapely.GeometryType.MULTILINESTRING),
    "Polygon": (shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON),
}


@dataclass
class Rejects:
    """Rows that cannot be loaded, by 1-based source row number."""

    rows: dict[int, tuple[str | None, list[str]]] = field(default_factory=dict)

    def add(self, row: int, fid: object, problem: str) -> None:
        problems = self.rows.setdefault(row, (fid if isinstance(fid, str) else None, []))[1]
        if problem not in problems:
            problems.append(problem)

    def add_mask(self, rows: NDArray[np.int64], fids: pd.Series, mask: NDArray[np.bool_], problem: str) -> None:
        """`rows`: the batch's row numbers (row_numbers())."""
        for position in np.flatnonzero(mask):
            self.add(int(rows[position]), fids.iloc[position], problem)

    def mask(self, rows: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Which of a batch's rows (its row numbers) are rejected."""
        return np.isin(rows, np.fromiter(self.rows, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.rows)


def resolve_columns(spec: LayerSpec, available: tuple[str, ...]) -> dict[str, str]:
    """Layer field (plus fid, valid_from, valid_to) -> the source column that holds it."""
    by_lower = {c.lower(): c for c in available}
    wanted = {"fid": spec.source.fid}
    wanted |= {f.name: spec.source.fields.get(f.name, f.name) for f in spec.fields}
    if spec.source.valid_from:
        wanted["valid_from"] = spec.source.valid_from
    if spec.source.valid_to:
        wanted["valid_to"] = spec.source.valid_to
    resolved, missing = {}, []
    for target, source in wanted.items():
        actual = source if source in available else by_lower.get(source.lower())
        if actual is None:
            missing.append(source)
        else:
            resolved[target] = actual
    if missing:
        raise SourceError(
            f"wrong schema for layer '{spec.id}': source has no column {', '.join(repr(m) for m in missing)} "
            f"(it has {', '.join(available) or 'none'})"
        )
    return resolved


_TEXT = pd.StringDtype("pyarrow")
# NUL, which PostgreSQL text cannot hold, and the record separator staging ends rows with.
_CONTROL = "[\x00\x1e]"


def _may_hold_control(text: pd.Series) -> bool:
    """Whether any byte of the column's Arrow data is NUL or a record separator: one scan of its buffers, where a
    regular expression per value cost a refresh of a million rows about a second. Bytes of the buffers outside
    the values may answer yes; the exact test follows then."""
    data: Any = pa.array(text.array)
    for chunk in data.chunks if isinstance(data, pa.ChunkedArray) else [data]:
        buffers = chunk.buffers()
        if len(buffers) < 3 or buffers[2] is None:
            continue
        raw = np.frombuffer(buffers[2], dtype=np.uint8)
        if (raw == 0).any() or (raw == 0x1E).any():
            return True
    return False


def as_text(values: pd.Series) -> pd.Series:
    """Trimmed text without NUL or record separators; empty means missing."""
    if pd.api.types.is_float_dtype(values):
        whole = values.dropna()
        if (whole == np.floor(whole)).all():
            values = values.astype("Int64")  # a code read as a number keeps no ".0"
    text = values.astype(_TEXT).str.strip()
    if _may_hold_control(text) and text.str.contains(_CONTROL, regex=True).any():
        text = text.str.replace(_CONTROL, " ", regex=True).str.strip()
    return text.where(text.str.len() > 0)


def _present(values: pd.Series) -> NDArray[np.bool_]:
    """Which values were given at all: not null, and for text not blank."""
    present = values.notna().to_numpy()
    if pd.api.types.is_string_dtype(values) or values.dtype == object:
        present = present & (values.astype(_TEXT).str.strip().str.len().fillna(0).to_numpy() > 0)
    return present


def _timestamp(value: object) -> pd.Timestamp | None:
    """One value as an aware timestamp; None when absent. Raises ValueError when it is not a time."""
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    if pd.isna(stamp):  # pd.Timestamp gives NaT for some texts instead of raising
        raise ValueError(f"{value!r} is not a time")
    return stamp.tz_localize(LOCAL_TIME) if stamp.tzinfo is None else stamp


def _parse_times(values: pd.Series, as_date: bool) -> tuple[pd.Series, NDArray[np.bool_]]:
    parsed: list[object] = []
    bad = np.zeros(len(values), dtype=bool)
    for position, value in enumerate(values):
        try:
            stamp = _timestamp(value)
        except (ValueError, TypeError, OverflowError):
            stamp, bad[position] = None, True
        parsed.append(stamp.date() if as_date and stamp is not None else stamp)
    return pd.Series(parsed, index=values.index, dtype=object), bad


def _parse_column(values: pd.Series, kind: FieldType) -> tuple[pd.Series, NDArray[np.bool_]]:
    """Typed values and the mask of values that were present but would not parse."""
    if kind is FieldType.text:
        return as_text(values), np.zeros(len(values), dtype=bool)
    present = _present(values)
    if kind in (FieldType.integer, FieldType.bigint):
        numbers = pd.to_numeric(values, errors="coerce")
        whole = numbers.notna() & (numbers == np.floor(numbers.fillna(0)))
        parsed = numbers.where(whole).astype("Int64")
        return parsed, present & ~whole.to_numpy()
    if kind is FieldType.real:
        numbers = pd.to_numeric(values, errors="coerce").astype("Float64")
        return numbers, present & numbers.isna().to_numpy()
    if kind is FieldType.boolean:
        lowered = values.astype(str).str.strip().str.lower()
        flags = np.full(len(values), None, dtype=object)  # None where neither true nor false
        flags[lowered.isin(_TRUE).to_numpy()] = True
        flags[lowered.isin(_FALSE).to_numpy()] = False
        return pd.Series(flags, index=values.index, dtype=object), present & pd.isna(flags)
    return _parse_times(values, as_date=kind is FieldType.date)


# The single type's number -> the constructor of its multi type (shapely's constructors differ in their overloads).
_MULTI_OF: dict[int, Callable[..., Any]] = {
    shapely.GeometryType.POINT: shapely.multipoints,
    shapely.GeometryType.LINESTRING: shapely.multilinestrings,
    shapely.GeometryType.POLYGON: shapely.multipolygons,
}


def _fit_family(geometries: NDArray[np.object_], target: GeometryType) -> tuple[NDArray[np.object_], list[str | None]]:
    """Make each geometry the layer's single or multi type; a reason where it cannot be.

    The common cases (already right, single to wrap, multi of one part) are vectorised; only odd rows
    (collections left by make_valid, wrong types) go through the per-row path.
    """
    single, multi_type = _FAMILY[target.value.removeprefix("Multi")]
    wants_multi = target.value.startswith("Multi")
    wanted, other = (multi_type, single) if wants_multi else (single, multi_type)
    out = geometries.copy()
    problems: list[str | None] = [None] * len(geometries)
    type_ids = shapely.get_type_id(geometries)
    usable = ~shapely.is_missing(geometries) & ~shapely.is_empty(geometries)
    convert = usable & (type_ids == other)
    if wants_multi and convert.any():
        out[convert] = _MULTI_OF[single](geometries[convert], indices=np.arange(int(convert.sum())))
    elif convert.any():
        one_part = convert & (shapely.get_num_geometries(geometries) == 1)
        out[one_part] = shapely.get_geometry(geometries[one_part], 0)
        convert = one_part
    for i in np.flatnonzero(~(usable & ((type_ids == wanted) | convert))):
        problems[i] = _fit_one(geometries[i], target, single, wanted, out, int(i))
    return out, problems


def _fit_one(geometry: BaseGeometry | None, target: GeometryType, single: int, wanted: int,
             out: NDArray[np.object_], i: int) -> str | None:
    if geometry is None or shapely.is_empty(geometry):
        return "no geometry"
    kind = shapely.get_type_id(geometry)
    if kind == single + 3 and wanted == single:  # shapely numbers each multi type as its single + 3
        return f"geometry has {shapely.get_num_geometries(geometry)} parts, layer takes a single {target.value}"
    if kind == shapely.GeometryType.GEOMETRYCOLLECTION:
        # make_valid may return a collection: keep the parts of the layer's family.
        parts = [p for p in shapely.get_parts(geometry) if shapely.get_type_id(p) in (single, single + 3)]
        parts = [q for p in parts for q in shapely.get_parts(p)]
        if parts:
            merged = _MULTI_OF[single](parts)
            if wanted != single:
                out[i] = merged
                return None
            if len(parts) == 1:
                out[i] = parts[0]
                return None
            return f"geometry has {len(parts)} parts after repair, layer takes a single {target.value}"
    return f"geometry is a {geometry.geom_type}, layer takes {target.value}"


def normalise_geometries(
    geometries: NDArray[np.object_], spec: LayerSpec
) -> tuple[NDArray[np.object_], list[str | None]]:
    """To EPSG:4490, 2D, repaired, of the layer's type. Returns geometries and per-row problems."""
    geometries = shapely.force_2d(geometries)
    geometries = to_storage_crs(geometries, spec.source.crs)
    present = ~shapely.is_missing(geometries)
    invalid = present & ~shapely.is_valid(geometries)
    if invalid.any():
        geometries = geometries.copy()
        geometries[invalid] = shapely.make_valid(geometries[invalid])
    return _fit_family(geometries, spec.geometry)


@dataclass(frozen=True)
class NormalisedBatch:
    first_row: int
    frame: pd.DataFrame  # fid, the layer's fields, valid_from, valid_to; index = position in batch
    geometries: NDArray[np.object_]
    rows: NDArray[np.int64] | None = None  # each row's 1-based number, where not first_row onwards (a subset)

    def row_numbers(self) -> NDArray[np.int64]:
        if self.rows is not None:
            return self.rows
        return np.arange(self.first_row, self.first_row + len(self.frame), dtype=np.int64)


def normalise_batch(
    batch: SourceBatch, spec: LayerSpec, columns: dict[str, str], rejects: Rejects
) -> NormalisedBatch:
    source, rows = batch.attributes, batch.row_numbers()
    frame = pd.DataFrame(index=source.index)
    frame["fid"] = as_text(source[columns["fid"]])
    for target in ("valid_from", "valid_to"):
        if target in columns:
            values, bad = _parse_column(source[columns[target]], FieldType.timestamp)
            frame[target] = values
            rejects.add_mask(rows, frame["fid"], bad, f"{target}: not a date")
        else:
            frame[target] = None
    for spec_field in spec.fields:
        raw = source[columns[spec_field.name]]
        values, bad = _parse_column(raw, spec_field.type)
        frame[spec_field.name] = values
        for position in np.flatnonzero(bad):
            rejects.add(int(rows[position]), frame["fid"].iloc[position],
                        f"{spec_field.name}: {raw.iloc[position]!r} is not a {spec_field.type.value}")
    geometries, problems = normalise_geometries(batch.geometries, spec)
    for row, problem in enumerate(problems):
        if problem:
            rejects.add(int(rows[row]), frame["fid"].iloc[row], problem)
    return NormalisedBatch(batch.first_row, frame, geometries, batch.rows)
