"""The environmental rules (layers/environment-rules.yml): typed, and checked against the layer registry at load.

GB 3095-2012 limits with their averaging periods, which periods one observation stands for, and the buffer
distances around pollution sources; every failure names the file and the key, like rules.py.
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gis.analysis.rules import check_field, registry_layer
from gis.config_files import load_checked
from gis.layers import GeometryType, LayerRegistry, LayerSpec, Name

RULES_FILE = "environment-rules.yml"

Period = Literal["1h", "8h", "24h", "annual"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Layers(_Strict):
    stations: Name = "monitoring_stations"
    observations: Name = "observations"
    sources: Name = "pollution_sources"
    redline: Name = "ecological_redline"
    water: Name = "water_bodies"


class Series(_Strict):
    periods: tuple[Period, ...] = Field(min_length=1)


class Limit(_Strict):
    pollutant: str
    period: Period
    limit: float = Field(gt=0)
    unit: str


class AirQuality(_Strict):
    standard: str
    grade: Literal["I", "II"]
    limits: tuple[Limit, ...] = Field(min_length=1)


class SourceBuffers(_Strict):
    by_emission_class: dict[str, float]
    by_industry: dict[str, float] = Field(default_factory=dict)


class RulesFile(_Strict):
    version: Literal[1]
    layers: Layers = Layers()
    series: Series
    air_quality: AirQuality
    source_buffers: SourceBuffers


class EnvironmentRules:
    """The validated rules with their layers resolved from the registry."""

    def __init__(self, path: Path, parsed: RulesFile, registry: LayerRegistry) -> None:
        self.path = path
        self.series = parsed.series
        self.air_quality = parsed.air_quality
        self.buffers = parsed.source_buffers
        self.stations: LayerSpec = registry[parsed.layers.stations]
        self.observations: LayerSpec = registry[parsed.layers.observations]
        self.sources: LayerSpec = registry[parsed.layers.sources]
        self.redline: LayerSpec = registry[parsed.layers.redline]
        self.water: LayerSpec = registry[parsed.layers.water]

    def applicable_limits(self) -> tuple[Limit, ...]:
        """The limits one value of the series is compared with."""
        return tuple(limit for limit in self.air_quality.limits if limit.period in self.series.periods)

    def layer_ids(self) -> tuple[str, ...]:
        return (self.stations.id, self.observations.id, self.sources.id, self.redline.id, self.water.id)


def _check(parsed: RulesFile, registry: LayerRegistry) -> None:
    layers = parsed.layers
    stations = registry_layer(registry, layers.stations, "layers.stations")
    observations = registry_layer(registry, layers.observations, "layers.observations")
    sources = registry_layer(registry, layers.sources, "layers.sources")
    for key, name in (("layers.redline", layers.redline), ("layers.water", layers.water)):
        spec = registry_layer(registry, name, key)
        if spec.geometry not in (GeometryType.Polygon, GeometryType.MultiPolygon):
            raise ValueError(f"{key}: '{spec.id}' is {spec.geometry}, not polygons")
        check_field(spec, "name", key)
    for key, spec in (("layers.stations", stations), ("layers.sources", sources)):
        if spec.geometry is not GeometryType.Point:
            raise ValueError(f"{key}: '{spec.id}' is {spec.geometry}, not points")
    for name in ("name", "station_type"):
        check_field(stations, name, "layers.stations")
    for name in ("station", "observed_at", "pollutant", "value", "unit"):
        check_field(observations, name, "layers.observations")
    for name in ("name", "industry", "emission_class"):
        check_field(sources, name, "layers.sources")
    seen: set[tuple[str, str]] = set()
    for i, limit in enumerate(parsed.air_quality.limits):
        key = f"air_quality.limits[{i}]"
        check_field(observations, "pollutant", f"{key}.pollutant", (limit.pollutant,))
        if (limit.pollutant, limit.period) in seen:
            raise ValueError(f"{key}: {limit.pollutant} {limit.period} is declared twice")
        seen.add((limit.pollutant, limit.period))
    buffers = parsed.source_buffers
    check_field(sources, "emission_class", "source_buffers.by_emission_class", tuple(buffers.by_emission_class))
    classes = sources.field("emission_class")
    missing = sorted(set(classes.values or ()) - set(buffers.by_emission_class)) if classes else []
    if missing:
        raise ValueError(f"source_buffers.by_emission_class: no distance for {', '.join(missing)}")
    for key, table in (("by_emission_class", buffers.by_emission_class), ("by_industry", buffers.by_industry)):
        for name, metres in table.items():
            if not 0 < metres <= 10_000:
                raise ValueError(f"source_buffers.{key}.{name}: {metres:g} m is not between 0 and 10,000 m")


def load_environment_rules(path: Path, registry: LayerRegistry) -> EnvironmentRules:
    """Read and check the rules file; ConfigError names the file and the key at fault."""
    parsed = load_checked(path, RulesFile, "environment rules", lambda rules: _check(rules, registry))
    return EnvironmentRules(path, parsed, registry)


def default_environment_rules_path(layers_dir: Path) -> Path:
    return layers_dir / RULES_FILE
