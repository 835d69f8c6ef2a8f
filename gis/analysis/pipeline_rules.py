"""The pipeline rules (layers/pipeline-rules.yml): typed, and checked against the layer registry at load.

The network settings (valves, what carries supply, the customer distance), the GB 50289 clearance pairs
and the minimum cover by utility are data; every failure names the file and the key, like rules.py.
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gis.analysis.rules import check_field, registry_layer
from gis.config_files import load_checked
from gis.layers import GeometryType, LayerRegistry, LayerSpec, Name, Title

RULES_FILE = "pipeline-rules.yml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Layers(_Strict):
    pipelines: Name = "pipelines"
    nodes: Name = "pipe_nodes"
    buildings: Name = "buildings"


class Network(_Strict):
    utilities: tuple[str, ...] = Field(min_length=1)
    valve_type: str = "valve"
    closed_state: str = "closed"
    traversed_status: tuple[str, ...] = ("in_service",)
    customers_within_m: float = Field(default=30.0, ge=0, le=500)
    snap_within_m: float = Field(default=50.0, gt=0, le=1000)


class PairSide(_Strict):
    buildings: bool = False
    utility: tuple[str, ...] = ()
    pressure_class: tuple[str, ...] = ()
    diameter_mm_min: int | None = Field(default=None, ge=0)
    diameter_mm_max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> "PairSide":
        if self.buildings and (self.utility or self.pressure_class or self.diameter_mm_min is not None
                               or self.diameter_mm_max is not None):
            raise ValueError("a buildings side takes no pipe conditions")
        if not self.buildings and not self.utility:
            raise ValueError("a pipe side names its utility (or say buildings: true)")
        return self


class ClearancePair(_Strict):
    id: Name
    title: Title
    a: PairSide
    b: PairSide
    min_m: float = Field(gt=0, le=50)

    @model_validator(mode="after")
    def _b_is_pipes(self) -> "ClearancePair":
        if self.b.buildings:
            raise ValueError("b is a pipe side (put buildings on side a)")
        if set(self.a.utility) & set(self.b.utility):
            raise ValueError("a and b share a utility; a pair is between two utility classes")
        return self


class Clearances(_Strict):
    measured_from: Literal["centreline", "wall"] = "centreline"
    max_angle_deg: float = Field(default=20.0, gt=0, le=90)
    status: tuple[str, ...] = Field(default=("in_service",), min_length=1)
    pairs: tuple[ClearancePair, ...] = Field(min_length=1)


class CoverMinimum(_Strict):
    id: Name
    utility: tuple[str, ...] = Field(min_length=1)
    carriageway: float = Field(gt=0, le=10)
    sidewalk: float = Field(gt=0, le=10)
    source: str = ""

    def required(self, location: str) -> float:
        return self.carriageway if location == "carriageway" else self.sidewalk


class Cover(_Strict):
    location: Literal["carriageway", "sidewalk"] = "carriageway"
    status: tuple[str, ...] = Field(default=("in_service",), min_length=1)
    minimums: tuple[CoverMinimum, ...] = Field(min_length=1)


class RulesFile(_Strict):
    version: Literal[1]
    layers: Layers = Layers()
    network: Network
    clearances: Clearances
    cover: Cover


class PipelineRules:
    """The validated rules with their layers resolved from the registry."""

    def __init__(self, path: Path, parsed: RulesFile, registry: LayerRegistry) -> None:
        self.path = path
        self.network = parsed.network
        self.clearances = parsed.clearances
        self.cover = parsed.cover
        self.pipelines: LayerSpec = registry[parsed.layers.pipelines]
        self.nodes: LayerSpec = registry[parsed.layers.nodes]
        self.buildings: LayerSpec = registry[parsed.layers.buildings]

    def pair(self, pair_id: str) -> ClearancePair | None:
        return next((p for p in self.clearances.pairs if p.id == pair_id), None)


_PIPE_FIELDS = ("utility", "status", "diameter_mm", "pressure_class", "depth_start_m", "depth_end_m",
                "from_node", "to_node")


def _check(parsed: RulesFile, registry: LayerRegistry) -> None:
    pipes = registry_layer(registry, parsed.layers.pipelines, "layers.pipelines")
    nodes = registry_layer(registry, parsed.layers.nodes, "layers.nodes")
    buildings = registry_layer(registry, parsed.layers.buildings, "layers.buildings")
    if pipes.geometry not in (GeometryType.LineString, GeometryType.MultiLineString):
        raise ValueError(f"layers.pipelines: '{pipes.id}' is {pipes.geometry}, not lines")
    if nodes.geometry is not GeometryType.Point:
        raise ValueError(f"layers.nodes: '{nodes.id}' is {nodes.geometry}, not points")
    if buildings.geometry not in (GeometryType.Polygon, GeometryType.MultiPolygon):
        raise ValueError(f"layers.buildings: '{buildings.id}' is {buildings.geometry}, not polygons")
    for name in _PIPE_FIELDS:
        check_field(pipes, name, "layers.pipelines")
    for name in ("node_type", "state", "utility"):
        check_field(nodes, name, "layers.nodes")
    net = parsed.network
    check_field(pipes, "utility", "network.utilities", net.utilities)
    check_field(pipes, "status", "network.traversed_status", net.traversed_status)
    check_field(nodes, "node_type", "network.valve_type", (net.valve_type,))
    check_field(nodes, "state", "network.closed_state", (net.closed_state,))
    check_field(pipes, "status", "clearances.status", parsed.clearances.status)
    check_field(pipes, "status", "cover.status", parsed.cover.status)
    seen: set[str] = set()
    for i, pair in enumerate(parsed.clearances.pairs):
        key = f"clearances.pairs[{i}]"
        if pair.id in seen:
            raise ValueError(f"{key}.id: '{pair.id}' is declared twice")
        seen.add(pair.id)
        for name, side in (("a", pair.a), ("b", pair.b)):
            check_field(pipes, "utility", f"{key}.{name}.utility", side.utility)
            check_field(pipes, "pressure_class", f"{key}.{name}.pressure_class", side.pressure_class)
    for i, minimum in enumerate(parsed.cover.minimums):
        check_field(pipes, "utility", f"cover.minimums[{i}].utility", minimum.utility)


def load_pipeline_rules(path: Path, registry: LayerRegistry) -> PipelineRules:
    """Read and check the rules file; ConfigError names the file and the key at fault."""
    parsed = load_checked(path, RulesFile, "pipeline rules", lambda rules: _check(rules, registry))
    return PipelineRules(path, parsed, registry)


def default_pipeline_rules_path(layers_dir: Path) -> Path:
    return layers_dir / RULES_FILE
