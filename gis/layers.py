"""The layer registry: one YAML file per layer under layers/<domain>/<layer>.yml, validated at load.

A layer exists because its file exists. The registry is the catalog of the whole service and the only
source of layer ids and of the identifiers that reach SQL (see identifiers.py).
"""

from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from gis.config_files import read_yaml, validate
from gis.errors import ConfigError, NotFound

# A name that is safe and readable as a PostgreSQL identifier without quoting surprises.
Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,47}$")]

RESERVED_COLUMNS = frozenset({"fid", "geom", "valid_from", "valid_to", "row_hash", "refresh_id"})


class Domain(StrEnum):
    base = "base"
    pipeline = "pipeline"
    planning = "planning"
    environment = "environment"
    policing = "policing"


class GeometryType(StrEnum):
    Point = "Point"
    LineString = "LineString"
    Polygon = "Polygon"
    MultiPoint = "MultiPoint"
    MultiLineString = "MultiLineString"
    MultiPolygon = "MultiPolygon"


class FieldType(StrEnum):
    text = "text"
    integer = "integer"
    bigint = "bigint"
    real = "real"
    boolean = "boolean"
    date = "date"
    timestamp = "timestamp"


class AccessClass(StrEnum):
    public = "public"
    internal = "internal"
    restricted = "restricted"


class Audience(StrEnum):
    environmental = "environmental"
    pipeline = "pipeline"
    policing = "policing"
    planning = "planning"
    analysts = "analysts"


class SourceFormat(StrEnum):
    gpkg = "gpkg"
    shp = "shp"
    geojson = "geojson"
    csv = "csv"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Title(_Strict):
    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)


class FieldSpec(_Strict):
    name: Name
    type: FieldType
    title: str | None = None
    required: bool = False
    values: tuple[str, ...] | None = Field(default=None, description="The allowed values, for a coded field.")
    unit: str | None = None

    @model_validator(mode="after")
    def _not_reserved(self) -> "FieldSpec":
        if self.name in RESERVED_COLUMNS:
            raise ValueError(f"'{self.name}' is a column every layer has; choose another name")
        return self


class TemporalSpec(_Strict):
    kind: Literal["versioned", "event"]
    field: Name | None = Field(default=None, description="The event-time field, for event layers.")

    @model_validator(mode="after")
    def _event_needs_field(self) -> "TemporalSpec":
        if self.kind == "event" and not self.field:
            raise ValueError("an event layer names its event-time field in 'field'")
        if self.kind == "versioned" and self.field:
            raise ValueError("a versioned layer takes its time from the refresh; 'field' is for event layers")
        return self


class SourceSpec(_Strict):
    path: str = Field(description="The delivered file, relative to the samples/delivery directory.")
    format: SourceFormat
    crs: str = Field(description="EPSG:NNNN or GCJ-02 (Amap/Tencent coordinates).")
    layer: str | None = Field(default=None, description="Layer name inside a GeoPackage.")
    fid: str = Field(description="The source column holding the stable feature id.")
    fields: Mapping[str, str] = Field(
        default_factory=dict, description="Layer field -> source column, where the names differ."
    )
    x: str | None = Field(default=None, description="CSV: the column of x / longitude.")
    y: str | None = Field(default=None, description="CSV: the column of y / latitude.")
    encoding: str | None = Field(default=None, description="Text encoding of a Shapefile's .dbf or a CSV.")
    valid_from: str | None = Field(
        default=None, description="Source column with the date a feature takes effect (may be in the future)."
    )
    valid_to: str | None = Field(default=None, description="Source column with the date a feature ends.")

    @model_validator(mode="after")
    def _csv_has_coordinates(self) -> "SourceSpec":
        if self.format is SourceFormat.csv and not (self.x and self.y):
            raise ValueError("a CSV source names its coordinate columns in 'x' and 'y'")
        if self.format is not SourceFormat.csv and (self.x or self.y):
            raise ValueError("'x' and 'y' are for CSV sources")
        return self


class LayerSpec(_Strict):
    id: Name
    domain: Domain
    title: Title
    description: str = Field(min_length=1)
    keywords: tuple[str, ...] = ()
    department: str = Field(min_length=1, description="The owning department that delivers the data.")
    geometry: GeometryType
    srid: Literal[4490] = 4490
    fields: tuple[FieldSpec, ...] = Field(min_length=1)
    temporal: TemporalSpec
    access: AccessClass
    audiences: tuple[Audience, ...] = Field(min_length=1)
    update_frequency: str = Field(min_length=1)
    source: SourceSpec
    style: str = Field(description="QML style, relative to the styles directory.")

    @model_validator(mode="after")
    def _fields_consistent(self) -> "LayerSpec":
        names = [f.name for f in self.fields]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"fields named twice: {', '.join(duplicates)}")
        unknown = sorted(set(self.source.fields) - set(names))
        if unknown:
            raise ValueError(f"source.fields maps unknown fields: {', '.join(unknown)}")
        if self.temporal.field:
            event = self.field(self.temporal.field)
            if event is None or event.type not in (FieldType.date, FieldType.timestamp):
                raise ValueError(f"temporal.field '{self.temporal.field}' must be a date or timestamp field")
        return self

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def history_table(self) -> str:
        return f"{self.id}_history"

    @property
    def is_multi(self) -> bool:
        return self.geometry.value.startswith("Multi")

    @property
    def has_valid_time(self) -> bool:
        """Features carry their own validity from the source (plans that take effect in the future)."""
        return self.source.valid_from is not None


class LayerRegistry(Mapping[str, LayerSpec]):
    """The frozen set of layers, ordered by domain then id."""

    def __init__(self, layers: list[LayerSpec]) -> None:
        ordered = sorted(layers, key=lambda s: (list(Domain).index(s.domain), s.id))
        self._layers: Mapping[str, LayerSpec] = MappingProxyType({s.id: s for s in ordered})

    def __getitem__(self, layer_id: str) -> LayerSpec:
        return self._layers[layer_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def get_layer(self, layer_id: str) -> LayerSpec:
        """The layer, or NotFound naming it."""
        try:
            return self._layers[layer_id]
        except KeyError:
            raise NotFound(f"no layer '{layer_id}'") from None

    def specs(self) -> tuple[LayerSpec, ...]:
        return tuple(self._layers.values())


def load_layer_file(path: Path, styles_dir: Path, samples_dir: Path | None = None) -> LayerSpec:
    """Read and check one layer file; every failure names the file and the key."""
    spec = validate(path, LayerSpec, read_yaml(path, "layer"))
    if path.stem != spec.id:
        raise ConfigError(f"{path}: id: '{spec.id}' differs from the file name '{path.stem}'")
    if path.parent.name != spec.domain:
        raise ConfigError(f"{path}: domain: '{spec.domain}' differs from the folder '{path.parent.name}'")
    if not (styles_dir / spec.style).is_file():
        raise ConfigError(f"{path}: style: no style file {styles_dir / spec.style}")
    if not (styles_dir / spec.style).with_suffix(".sld").is_file():
        raise ConfigError(f"{path}: style: no SLD beside it, {(styles_dir / spec.style).with_suffix('.sld')}")
    if samples_dir is not None and not (samples_dir / spec.source.path).is_file():
        raise ConfigError(f"{path}: source.path: no sample file {samples_dir / spec.source.path}")
    return spec


def load_registry(layers_dir: Path, styles_dir: Path, samples_dir: Path | None = None) -> LayerRegistry:
    """All layers under layers_dir. With samples_dir, each layer's sample source must exist too."""
    files = sorted(layers_dir.glob("*/*.yml"))
    if not files:
        raise ConfigError(f"{layers_dir}: no layer files (expected layers/<domain>/<layer>.yml)")
    specs = [load_layer_file(f, styles_dir, samples_dir) for f in files]
    seen: dict[str, Path] = {}
    for spec, file in zip(specs, files, strict=True):
        if spec.id in seen:
            raise ConfigError(f"{file}: id: '{spec.id}' is already declared by {seen[spec.id]}")
        seen[spec.id] = file
    return LayerRegistry(specs)
