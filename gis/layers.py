"""The layer registry: one YAML file per layer under layers/<domain>/<layer>.yml, validated at load.

A layer exists because its file exists. The registry is the catalog of the whole service and the only
source of layer ids and of the identifiers that reach SQL (see identifiers.py). Raster layers are declared
the same way under layers/rasters/<domain>/<id>.yml and kept apart, in `LayerRegistry.rasters`.
"""

from collections.abc import Iterator, Mapping
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, StringConstraints, model_validator

from gis.config_files import read_yaml, validate
from gis.errors import ConfigError, NotFound

if TYPE_CHECKING:
    from gis.features.queryables import Queryable

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
    missing: Literal["close", "keep"] = Field(
        default="close", description="What a refresh does with current rows its delivery leaves out: close them "
        "(to history), or keep them (event layers the service also writes to, e.g. sensor readings posted over HTTP).")

    @model_validator(mode="after")
    def _event_needs_field(self) -> "TemporalSpec":
        if self.kind == "event" and not self.field:
            raise ValueError("an event layer names its event-time field in 'field'")
        if self.kind == "versioned" and self.field:
            raise ValueError("a versioned layer takes its time from the refresh; 'field' is for event layers")
        if self.kind == "versioned" and self.missing == "keep":
            raise ValueError("'missing: keep' is for event layers; a versioned layer's delivery is the whole layer")
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


class IndexSpec(_Strict):
    """A btree index on the layer's current table, declared with the layer: the registry decides, not code.

    Chosen for the filters applications send: an equality column first, then `fid`, lets a keyset page under
    that filter read the index in fid order and stop after a page; columns after fid are tested inside the
    index, and a bounded count is answered from the index alone.
    """

    name: Name = Field(description="The index is named <layer>_<name>.")
    columns: tuple[Name, ...] = Field(min_length=1, description="Fields (or fid, valid_from, refresh_id), in order.")
    why: str = Field(min_length=1, description="The reads it serves (a filter, a join, a walk).")
    history: bool = Field(default=False, description="Also on the history table, for `datetime` reads.")


INDEXABLE_COLUMNS = frozenset({"fid", "valid_from", "valid_to", "refresh_id"})


class EditingSpec(_Strict):
    """Who keeps the layer: department deliveries (refreshes), edits (OGC API Features Part 4, QGIS), or both."""

    maintained_by: Literal["deliveries", "edits", "both"] = Field(
        default="deliveries", description="deliveries: refreshes only, no edits; edits: no refreshes; both.")
    on_conflict: Literal["keep_edit", "take_delivery"] = Field(
        default="keep_edit", description="Where both maintain the layer: what a refresh does with a feature edited "
        "after its delivery was cut: keep the edit, or take the delivery's version (the edit stays in history). "
        "Either way the conflict is reported.")
    require_if_match: bool = Field(
        default=False, description="Refuse updates and deletes that do not send the feature's ETag in If-Match.")
    lock_with: tuple[Name, ...] = Field(
        default=(), description="Layers whose write lock an edit takes too, so their writes keep one order (field "
        "inspections join the sensor readings' warnings, whose watch cursor needs writes in commit order).")

    @property
    def edits(self) -> bool:
        return self.maintained_by in ("edits", "both")

    @property
    def deliveries(self) -> bool:
        return self.maintained_by in ("deliveries", "both")


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
    indexes: tuple[IndexSpec, ...] = Field(default=(), description="btree indexes beyond fid, geometry and time.")
    editing: EditingSpec = Field(default_factory=EditingSpec)
    partition: Literal["month"] | None = Field(
        default=None, description="An append-only event layer (readings): its tables are partitioned by month of "
        "the event-time field, and `gis ops prune` drops months older than GIS_EVENT_RETENTION_DAYS.")

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
        if self.partition is not None:
            event = self.field(self.temporal.field or "")
            if self.temporal.kind != "event" or event is None or event.type != FieldType.timestamp \
                    or not event.required:
                raise ValueError("partition: only an event layer whose temporal.field is a required timestamp")
        return self

    @model_validator(mode="after")
    def _indexes_known(self) -> "LayerSpec":
        names = [i.name for i in self.indexes]
        if len(set(names)) != len(names):
            raise ValueError("indexes: an index name is given twice")
        for index in self.indexes:
            unknown = [c for c in index.columns if c not in INDEXABLE_COLUMNS and self.field(c) is None]
            if unknown:
                raise ValueError(f"indexes: '{index.name}' names unknown columns: {', '.join(unknown)}")
        return self

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    def known_field(self, name: str) -> FieldSpec:
        """The field `name`, which the layer was checked to have (by the rules file naming it, say)."""
        found = self.field(name)
        if found is None:
            raise KeyError(f"layer '{self.id}' has no field '{name}'")
        return found

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

    @cached_property
    def queryables(self) -> "Mapping[str, Queryable]":
        """What a client may filter, sort and select on (gis.features.queryables): derived from the declaration
        once, and kept with the layer in its registry."""
        # gis.features builds on this module, so its builder is imported on first use, not at import.
        from gis.features.queryables import build_queryables

        return MappingProxyType(build_queryables(self))


# -- raster layers: layers/rasters/<domain>/<id>.yml -------------------------------------------------

RASTERS_FOLDER = "rasters"
HexColour = Annotated[str, StringConstraints(pattern=r"^#[0-9a-fA-F]{6}$")]
CrsCode = Annotated[str, StringConstraints(pattern=r"^EPSG:[0-9]{4,6}$")]


class RasterDataType(StrEnum):
    uint8 = "uint8"
    int16 = "int16"
    uint16 = "uint16"
    float32 = "float32"


class Resampling(StrEnum):
    """How cells are resampled when reprojected: nearest for classes, bilinear or cubic for measures."""

    nearest = "nearest"
    bilinear = "bilinear"
    cubic = "cubic"


class RenderingKind(StrEnum):
    ramp = "ramp"  # one band through the colour ramp in `stops` (values between stops are interpolated)
    hillshade = "hillshade"  # the ramp, shaded by the relief (DEMs)
    rgb = "rgb"  # three bands as red, green, blue (imagery)
    classes = "classes"  # one band of class codes, each stop's colour for its exact value


class RasterSourceFormat(StrEnum):
    geotiff = "geotiff"


class RasterSourceSpec(_Strict):
    path: str = Field(description="The delivered GeoTIFF, relative to the samples/delivery directory.")
    format: RasterSourceFormat
    crs: CrsCode = Field(description="The CRS the delivery must declare (EPSG:NNNN).")


class BandSpec(_Strict):
    name: Name
    title: str | None = None
    unit: str | None = Field(default=None, description="Unit of the cell values (m for a DEM); none for codes.")


class ColourStop(_Strict):
    value: float
    colour: HexColour
    label: str | None = Field(default=None, description="The class's name (classes) or the stop's legend text.")


class RenderingSpec(_Strict):
    kind: RenderingKind
    stops: tuple[ColourStop, ...] = ()

    @model_validator(mode="after")
    def _stops_fit_kind(self) -> "RenderingSpec":
        if self.kind is RenderingKind.rgb and self.stops:
            raise ValueError("an rgb rendering takes its colours from the bands; 'stops' is for the others")
        if self.kind is not RenderingKind.rgb and len(self.stops) < 2:
            raise ValueError(f"a {self.kind} rendering needs at least two stops")
        values = [s.value for s in self.stops]
        if values != sorted(set(values)):
            raise ValueError("stops must be in increasing order of value, each value once")
        return self


class RasterSpec(_Strict):
    """One raster layer: a delivered GeoTIFF served, with its history, as a coverage and as map tiles."""

    kind: Literal["raster"]
    id: Name
    domain: Domain
    title: Title
    description: str = Field(min_length=1)
    keywords: tuple[str, ...] = ()
    department: str = Field(min_length=1, description="The owning department that delivers the data.")
    access: AccessClass
    audiences: tuple[Audience, ...] = Field(min_length=1)
    update_frequency: str = Field(min_length=1)
    source: RasterSourceSpec
    crs: CrsCode = Field(default="EPSG:4490", description="The CRS the layer is stored and served in.")
    resolution: tuple[PositiveFloat, PositiveFloat] | None = Field(
        default=None, description="Cell size (x, y) in units of `crs`; default: what reprojection preserves."
    )
    data_type: RasterDataType
    nodata: float = Field(description="The value of cells without data; deliveries must declare it.")
    bands: tuple[BandSpec, ...] = Field(min_length=1)
    resampling: Resampling
    rendering: RenderingSpec

    @model_validator(mode="after")
    def _consistent(self) -> "RasterSpec":
        names = [b.name for b in self.bands]
        if len(set(names)) != len(names):
            raise ValueError("bands: a band name is given twice")
        if self.rendering.kind is RenderingKind.rgb and len(self.bands) != 3:
            raise ValueError("rendering: an rgb rendering needs exactly three bands")
        if self.rendering.kind is not RenderingKind.rgb and len(self.bands) != 1:
            raise ValueError(f"rendering: a {self.rendering.kind} rendering draws one band")
        if self.rendering.kind is RenderingKind.classes and self.resampling is not Resampling.nearest:
            raise ValueError("resampling: class codes are resampled with nearest, never averaged")
        return self

    @property
    def unit(self) -> str | None:
        return self.bands[0].unit


class LayerRegistry(Mapping[str, LayerSpec]):
    """The frozen set of layers, ordered by domain then id.

    Iterating and indexing give the vector layers only; raster layers are in `rasters`.
    """

    def __init__(self, layers: list[LayerSpec], rasters: list[RasterSpec] | None = None) -> None:
        ordered = sorted(layers, key=lambda s: (list(Domain).index(s.domain), s.id))
        self._layers: Mapping[str, LayerSpec] = MappingProxyType({s.id: s for s in ordered})
        by_domain = sorted(rasters or (), key=lambda s: (list(Domain).index(s.domain), s.id))
        self.rasters: Mapping[str, RasterSpec] = MappingProxyType({s.id: s for s in by_domain})

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

    def get_raster(self, raster_id: str) -> RasterSpec:
        """The raster layer, or NotFound naming it."""
        try:
            return self.rasters[raster_id]
        except KeyError:
            raise NotFound(f"no raster layer '{raster_id}'") from None


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
    raster_files = sorted((layers_dir / RASTERS_FOLDER).glob("*/*.yml"))
    rasters = [load_raster_file(f, samples_dir) for f in raster_files]
    seen: dict[str, Path] = {}
    declared: list[LayerSpec | RasterSpec] = [*specs, *rasters]
    for spec, file in zip(declared, [*files, *raster_files], strict=True):
        if spec.id in seen:
            raise ConfigError(f"{file}: id: '{spec.id}' is already declared by {seen[spec.id]}")
        seen[spec.id] = file
    return LayerRegistry(specs, rasters)


def load_raster_file(path: Path, samples_dir: Path | None = None) -> RasterSpec:
    """Read and check one raster layer file (layers/rasters/<domain>/<id>.yml)."""
    spec = validate(path, RasterSpec, read_yaml(path, "raster layer"))
    if path.stem != spec.id:
        raise ConfigError(f"{path}: id: '{spec.id}' differs from the file name '{path.stem}'")
    if path.parent.name != spec.domain:
        raise ConfigError(f"{path}: domain: '{spec.domain}' differs from the folder '{path.parent.name}'")
    if samples_dir is not None and not (samples_dir / spec.source.path).is_file():
        raise ConfigError(f"{path}: source.path: no sample file {samples_dir / spec.source.path}")
    return spec
