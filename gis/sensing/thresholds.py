"""layers/sensor-thresholds.yml: the four warning levels, each sensor type's unit and range, and the limits.

Checked against the registry when loaded: the readings and sensors layers exist with the fields the sensing
code reads, every sensor type and utility named is one the layers declare, and each threshold's limits are
in the order its direction implies (a `below` limit falls as the level rises, an `above` limit rises).
"""

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gis.config_files import load_checked
from gis.layers import FieldType, LayerRegistry, LayerSpec, Name

THRESHOLDS_FILE = "sensor-thresholds.yml"

# The readings layer's fields the sensing code reads and writes, with their types.
READING_FIELDS: Mapping[str, FieldType] = {
    "sensor": FieldType.text, "sensor_type": FieldType.text, "utility": FieldType.text,
    "observed_at": FieldType.timestamp, "value": FieldType.real, "unit": FieldType.text, "quality": FieldType.text,
}
SENSOR_FIELDS: Mapping[str, FieldType] = {"sensor_type": FieldType.text, "utility": FieldType.text}
INSPECTION_FIELDS: Mapping[str, FieldType] = {
    "inspected_at": FieldType.timestamp, "finding": FieldType.text, "severity": FieldType.text,
    "pipe_fid": FieldType.text, "node_fid": FieldType.text}
NO_WARNING = "none"  # an inspection's severity when it found nothing to warn of


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Level(_Strict):
    id: Name
    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)
    colour: str = Field(pattern=r"^#[0-9a-fA-F]{6}$")


class SensorType(_Strict):
    unit: str = Field(min_length=1)
    min: float
    max: float
    title: str = Field(min_length=1)

    @model_validator(mode="after")
    def _range(self) -> "SensorType":
        if self.min >= self.max:
            raise ValueError("min must be below max")
        return self


class Threshold(_Strict):
    id: Name
    sensor_type: Name
    utility: tuple[Name, ...] = Field(default=(), description="Utilities it applies to; empty: every utility.")
    direction: Literal["above", "below"]
    limits: Mapping[Name, float] = Field(description="level id -> limit; at least one level")
    source: str = Field(min_length=1, description="Where the limits come from.")


class Layers(_Strict):
    readings: Name
    sensors: Name
    inspections: Name | None = Field(default=None, description="Field inspections whose `severity` (a level id, "
                                     "or none) joins the warnings: the same levels as the readings'.")


class ThresholdsFile(_Strict):
    version: Literal[1]
    layers: Layers
    levels: tuple[Level, ...] = Field(min_length=4, max_length=4)
    sensor_types: Mapping[Name, SensorType]
    thresholds: tuple[Threshold, ...] = Field(min_length=1)


@dataclass(frozen=True)
class Thresholds:
    """The checked file, with the registry's specs of the layers it names."""

    path: Path
    file: ThresholdsFile
    readings: LayerSpec
    sensors: LayerSpec
    inspections: LayerSpec | None = None

    @property
    def levels(self) -> tuple[Level, ...]:
        return self.file.levels

    def severity(self, level_id: str) -> int:
        """1 (the least severe level) to 4 (the most)."""
        return next(i for i, level in enumerate(self.file.levels, 1) if level.id == level_id)

    def level(self, level_id: str) -> Level | None:
        return next((level for level in self.file.levels if level.id == level_id), None)

    def unit(self, sensor_type: str) -> str | None:
        found = self.file.sensor_types.get(sensor_type)
        return found.unit if found else None


def _field_check(spec: LayerSpec, wanted: Mapping[str, FieldType], key: str) -> None:
    for name, kind in wanted.items():
        found = spec.field(name)
        if found is None or found.type is not kind:
            raise ValueError(f"{key}: layer '{spec.id}' needs a {kind.value} field '{name}'")


def _check(registry: LayerRegistry) -> Callable[[ThresholdsFile], None]:
    def check(parsed: ThresholdsFile) -> None:
        for key in ("readings", "sensors"):
            if getattr(parsed.layers, key) not in registry:
                raise ValueError(f"layers.{key}: no layer '{getattr(parsed.layers, key)}'")
        readings, sensors = registry[parsed.layers.readings], registry[parsed.layers.sensors]
        _field_check(readings, READING_FIELDS, "layers.readings")
        _field_check(sensors, SENSOR_FIELDS, "layers.sensors")
        if readings.temporal.field != "observed_at":
            raise ValueError(f"layers.readings: '{readings.id}' must be an event layer timed by observed_at")
        ids = [level.id for level in parsed.levels]
        if parsed.layers.inspections is not None:
            if parsed.layers.inspections not in registry:
                raise ValueError(f"layers.inspections: no layer '{parsed.layers.inspections}'")
            inspections = registry[parsed.layers.inspections]
            _field_check(inspections, INSPECTION_FIELDS, "layers.inspections")
            severities = set(inspections.known_field("severity").values or ())
            if severities != {*ids, NO_WARNING}:
                raise ValueError(f"layers.inspections: '{inspections.id}'.severity's values must be the levels "
                                 f"and {NO_WARNING}")
        if len(set(ids)) != len(ids):
            raise ValueError("levels: a level id is given twice")
        types = set(sensors.known_field("sensor_type").values or ())
        utilities = set(sensors.known_field("utility").values or ())
        for name in parsed.sensor_types:
            if name not in types:
                raise ValueError(f"sensor_types.{name}: not a sensor_type of '{sensors.id}'")
        missing = sorted(types - set(parsed.sensor_types))
        if missing:
            raise ValueError(f"sensor_types: no unit and range for {', '.join(missing)}")
        seen: set[str] = set()
        for i, t in enumerate(parsed.thresholds):
            key = f"thresholds[{i}]"
            if t.id in seen:
                raise ValueError(f"{key}.id: '{t.id}' is given twice")
            seen.add(t.id)
            if t.sensor_type not in types:
                raise ValueError(f"{key}.sensor_type: not a sensor_type of '{sensors.id}'")
            for u in t.utility:
                if u not in utilities:
                    raise ValueError(f"{key}.utility: '{u}' is not a utility of '{sensors.id}'")
            unknown = sorted(set(t.limits) - set(ids))
            if unknown or not t.limits:
                raise ValueError(f"{key}.limits: levels are {', '.join(ids)}; not {', '.join(unknown) or 'none'}")
            ordered = [t.limits[i] for i in ids if i in t.limits]
            rising = t.direction == "above"
            if any((b <= a) if rising else (b >= a) for a, b in itertools.pairwise(ordered)):
                raise ValueError(f"{key}.limits: a more severe level must be {'higher' if rising else 'lower'} "
                                 f"for a '{t.direction}' threshold")
    return check


def default_thresholds_path(layers_dir: Path) -> Path:
    return layers_dir / THRESHOLDS_FILE


def load_thresholds(path: Path, registry: LayerRegistry) -> Thresholds:
    parsed = load_checked(path, ThresholdsFile, "sensor thresholds", _check(registry))
    inspections = registry[parsed.layers.inspections] if parsed.layers.inspections else None
    return Thresholds(path, parsed, registry[parsed.layers.readings], registry[parsed.layers.sensors], inspections)
