"""The policing rules (layers/policing-rules.yml): typed, and checked against the layer registry at load.

The layers read, the network settings of the nearest-station search and the hotspot grid; every failure
names the file and the key, like rules.py.
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gis.analysis.rules import check_field, registry_layer
from gis.config_files import load_checked
from gis.layers import GeometryType, LayerRegistry, LayerSpec, Name

RULES_FILE = "policing-rules.yml"


ConfidenceLevel = Literal["90", "95", "99"]  # per cent


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Layers(_Strict):
    incidents: Name = "incidents"
    jurisdictions: Name = "police_jurisdictions"
    stations: Name = "police_stations"
    roads: Name = "roads"


class Jurisdictions(_Strict):
    station_field: Name = "station"


class Incidents(_Strict):
    category_field: Name = "category"


class Nearest(_Strict):
    node_tolerance_m: float = Field(default=0.5, gt=0, le=10)
    min_shared_ends: float = Field(default=0.5, ge=0, le=1)
    snap_within_m: float = Field(default=500.0, gt=0, le=5000)
    default_count: int = Field(default=3, ge=1)
    max_count: int = Field(default=20, ge=1, le=1000)

    @model_validator(mode="after")
    def _default_within_max(self) -> "Nearest":
        if self.default_count > self.max_count:
            raise ValueError("default_count is larger than max_count")
        return self


class Hotspots(_Strict):
    cell_m: float = Field(gt=0)
    min_cell_m: float = Field(gt=0)
    max_cell_m: float = Field(gt=0)
    max_cells: int = Field(gt=8, le=1_000_000)
    confidence: dict[ConfidenceLevel, float]

    @model_validator(mode="after")
    def _ordered(self) -> "Hotspots":
        if not self.min_cell_m <= self.cell_m <= self.max_cell_m:
            raise ValueError("cell_m is not between min_cell_m and max_cell_m")
        levels = [self.confidence[k] for k in sorted(self.confidence)]
        if levels != sorted(levels) or any(z <= 0 for z in levels):
            raise ValueError("confidence: z thresholds grow with the level and are positive")
        return self


class RulesFile(_Strict):
    version: Literal[1]
    layers: Layers = Layers()
    jurisdictions: Jurisdictions = Jurisdictions()
    incidents: Incidents = Incidents()
    nearest: Nearest = Nearest()
    hotspots: Hotspots


class PolicingRules:
    """The validated rules with their layers resolved from the registry."""

    def __init__(self, path: Path, parsed: RulesFile, registry: LayerRegistry) -> None:
        self.path = path
        self.station_field = parsed.jurisdictions.station_field
        self.category_field = parsed.incidents.category_field
        self.nearest = parsed.nearest
        self.hotspots = parsed.hotspots
        self.incidents: LayerSpec = registry[parsed.layers.incidents]
        self.jurisdictions: LayerSpec = registry[parsed.layers.jurisdictions]
        self.stations: LayerSpec = registry[parsed.layers.stations]
        self.roads: LayerSpec = registry[parsed.layers.roads]


def _check(parsed: RulesFile, registry: LayerRegistry) -> None:
    layers = parsed.layers
    expected = (("incidents", layers.incidents, (GeometryType.Point,)),
                ("jurisdictions", layers.jurisdictions, (GeometryType.Polygon, GeometryType.MultiPolygon)),
                ("stations", layers.stations, (GeometryType.Point,)),
                ("roads", layers.roads, (GeometryType.LineString,)))
    for key, name, geometries in expected:
        spec = registry_layer(registry, name, f"layers.{key}")
        if spec.geometry not in geometries:
            raise ValueError(f"layers.{key}: '{spec.id}' is {spec.geometry}, not {geometries[0]}")
    check_field(registry[layers.jurisdictions], parsed.jurisdictions.station_field, "jurisdictions.station_field")
    check_field(registry[layers.jurisdictions], "name", "layers.jurisdictions")
    check_field(registry[layers.stations], "name", "layers.stations")
    incidents = registry[layers.incidents]
    check_field(incidents, parsed.incidents.category_field, "incidents.category_field")
    if incidents.temporal.field is None:
        raise ValueError(f"layers.incidents: '{incidents.id}' has no event time (temporal.field)")


def load_policing_rules(path: Path, registry: LayerRegistry) -> PolicingRules:
    """Read and check the rules file; ConfigError names the file and the key at fault."""
    parsed = load_checked(path, RulesFile, "policing rules", lambda rules: _check(rules, registry))
    return PolicingRules(path, parsed, registry)


def default_policing_rules_path(layers_dir: Path) -> Path:
    return layers_dir / RULES_FILE
