"""An edited feature (GeoJSON, in any CRS the service serves) checked as the refresh checks a delivery.

The feature becomes a one-row source batch and goes through gis.refresh.normalise and validate, the
same code a delivered file goes through: types, coded values, required fields, the city's extent,
geometry type and validity. Its row hash is the one the refresh computes, so a later delivery with the
same values recognises the edited row as unchanged.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import shapely
import shapely.geometry

from gis.errors import GisError
from gis.features import crs as crs_
from gis.layers import LayerSpec
from gis.refresh.normalise import Rejects, normalise_batch, resolve_columns
from gis.refresh.sources import SourceBatch
from gis.refresh.staging import row_hashes
from gis.refresh.validate import Extent, validate_batch

VALIDITY = ("valid_from", "valid_to")
MAX_TEXT = 10_000  # characters of one property value


class InvalidFeature(GisError):
    """The body cannot be written; `parameter` names the member at fault (`properties.state`, `geometry`)."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter


@dataclass(frozen=True)
class CheckedFeature:
    """One version ready to store: values in the layer's types, geometry in EPSG:4490."""

    fid: str
    values: dict[str, Any]  # field -> value (None for null)
    valid_from: Any  # only for layers whose features carry their own validity; else None (the write's time)
    valid_to: Any
    geometry: shapely.Geometry
    row_hash: bytes


def _input_spec(spec: LayerSpec, geometry_crs: crs_.Crs) -> LayerSpec:
    """The layer as if delivered with the layer's own field names and `id`, in the geometry's CRS."""
    source = spec.source.model_copy(update={
        "fid": "fid", "fields": {}, "crs": f"EPSG:{geometry_crs.srid}",
        "valid_from": "valid_from" if spec.source.valid_from else None,
        "valid_to": "valid_to" if spec.source.valid_to else None})
    return spec.model_copy(update={"source": source})


def _scalar(name: str, value: object) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise InvalidFeature(f"properties.{name}", f"longer than {MAX_TEXT} characters")
        return value
    raise InvalidFeature(f"properties.{name}", "must be a string, number, boolean or null")


def properties_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body's properties (a Feature's `properties` object); InvalidFeature when the body is no Feature."""
    if body.get("type") != "Feature":
        raise InvalidFeature("type", "the body must be a GeoJSON Feature (\"type\": \"Feature\")")
    properties = body.get("properties")
    if properties is None:
        return {}
    if not isinstance(properties, dict):
        raise InvalidFeature("properties", "must be an object")
    return dict(properties)


def geometry_of(body: Mapping[str, Any], geometry_crs: crs_.Crs) -> shapely.Geometry | None:
    """The body's geometry as numbers in geometry_crs with x = easting/longitude; None when null."""
    raw = body.get("geometry")
    if raw is None:
        return None
    try:
        geometry = shapely.geometry.shape(raw)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError, shapely.errors.ShapelyError) as exc:
        raise InvalidFeature("geometry", f"not a GeoJSON geometry ({str(exc)[:120]})") from None
    if not np.isfinite(shapely.get_coordinates(geometry)).all():
        raise InvalidFeature("geometry", "coordinates must be finite numbers")
    if geometry_crs.northing_first:  # the CRS's authority order (lat/lon, northing/easting) as Part 2 requires
        geometry = shapely.transform(geometry, lambda xy: xy[:, ::-1])
    return geometry


def _parameter(spec: LayerSpec, problem: str) -> str:
    """Which member of the body a normalise/validate problem is about."""
    name, sep, _ = problem.partition(":")
    if sep and name == "fid":
        return "id"
    if sep and (spec.field(name) is not None or name in VALIDITY):
        return f"properties.{name}"
    return "geometry"


def check_feature(spec: LayerSpec, fid: str, properties: Mapping[str, Any], geometry: shapely.Geometry | None,
                  geometry_crs: crs_.Crs, city_extent: Extent, kept: Mapping[str, Any] | None = None) -> CheckedFeature:
    """The feature through the refresh's normalise and validate; InvalidFeature naming the first problem.

    `properties` are the client's; `kept` are stored values the edit keeps (a patch's untouched fields,
    masked fields), already in the layer's types.
    """
    writable = set(spec.field_names) | (set(VALIDITY) if spec.has_valid_time else set())
    row: dict[str, Any] = {"fid": fid, **(kept or {})}
    for name, value in properties.items():
        if name in VALIDITY and not spec.has_valid_time:
            continue  # the service keeps these (each version's time); a client sending back what it read is fine
        if name not in writable:
            raise InvalidFeature(f"properties.{name}", f"layer '{spec.id}' has no field '{name}'")
        row[name] = _scalar(name, value)
    for name in writable:
        row.setdefault(name, None)
    as_input = _input_spec(spec, geometry_crs)
    frame = pd.DataFrame([row], dtype=object)
    batch = SourceBatch(1, frame, np.array([geometry], dtype=object))
    rejects = Rejects()
    normalised = normalise_batch(batch, as_input, resolve_columns(as_input, tuple(frame.columns)), rejects)
    validate_batch(normalised, as_input, city_extent, rejects)
    if rejects:
        problem = rejects.rows[1][1][0]
        raise InvalidFeature(_parameter(spec, problem), problem.partition(": ")[2] if ": " in problem else problem)
    hashes = row_hashes(normalised, spec)  # the layer's own columns: as a refresh and the edit trigger hash it
    record = normalised.frame.iloc[0]
    values = {name: _plain(record[name]) for name in spec.field_names}
    return CheckedFeature(fid, values, _plain(record["valid_from"]), _plain(record["valid_to"]),
                          normalised.geometries[0], hashes[0])


def _plain(value: object) -> object:
    """A pandas/numpy value as the Python value psycopg sends."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value
