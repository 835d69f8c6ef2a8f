"""The overlap rules (layers/overlap-rules.yml): typed, and checked against the layer registry at load.

Every failure names the file and the key (`rules[3].class_field: ...`), like the layer files do.
"""

from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from gis.config_files import load_checked
from gis.layers import FieldType, GeometryType, LayerRegistry, LayerSpec, Name, Title

RULES_FILE = "overlap-rules.yml"
# GB 50137 codes: a major class letter, then up to three digits (R, R2, R21 ...).
UseCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][0-9]{0,3}$")]
_POLYGONS = (GeometryType.Polygon, GeometryType.MultiPolygon)
_LINES = (GeometryType.LineString, GeometryType.MultiLineString)


class Kind(StrEnum):
    no_overlap = "no_overlap"
    must_be_inside = "must_be_inside"
    compatible_use = "compatible_use"
    corridor = "corridor"


class Disposal(StrEnum):
    keep = "keep"
    withdraw = "withdraw"
    deduct = "deduct"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorridorWidth(_Strict):
    utility: str = Field(min_length=1)
    pressure_class: str | None = None
    width_m: float = Field(gt=0, le=500)


class Rule(_Strict):
    id: Name
    title: Title
    layer: Name
    kind: Kind
    min_area_m2: float = Field(default=1.0, ge=0)
    attributes: tuple[Name, ...] | None = Field(default=None, description="Fields reported per feature hit.")
    where: dict[Name, tuple[str, ...]] = Field(default_factory=dict, description="field -> allowed values.")
    buffer_m: float = Field(default=0.0, ge=0, le=1000, description="no_overlap: widen each feature first.")
    class_field: Name | None = None
    compatibility: dict[UseCode, tuple[UseCode, ...]] | None = None
    widths: tuple[CorridorWidth, ...] | None = None
    utility_field: Name = "utility"
    pressure_field: Name = "pressure_class"
    diameter_field: Name = "diameter_mm"
    measured_from: Literal["centreline", "wall"] = "centreline"

    @model_validator(mode="after")
    def _kind_options(self) -> "Rule":
        if self.kind is Kind.compatible_use:
            if not self.class_field or not self.compatibility:
                raise ValueError("a compatible_use rule names its class_field and a compatibility table")
        elif self.class_field or self.compatibility:
            raise ValueError("class_field and compatibility are for compatible_use rules")
        if self.kind is Kind.corridor:
            if not self.widths:
                raise ValueError("a corridor rule lists its widths")
        elif self.widths:
            raise ValueError("widths are for corridor rules")
        if self.buffer_m and self.kind is not Kind.no_overlap:
            raise ValueError("buffer_m is for no_overlap rules")
        return self

    @property
    def max_width_m(self) -> float:
        """The farthest a feature's zone reaches beyond its geometry (for the index search box)."""
        if self.kind is Kind.corridor and self.widths:
            return max(w.width_m for w in self.widths)
        return self.buffer_m

    def allowed_classes(self, use: str) -> tuple[str, ...] | None:
        """The planned classes the use may sit on: the most specific table entry that is a prefix of it."""
        table = self.compatibility or {}
        for length in range(len(use), 0, -1):
            if use[:length] in table:
                return table[use[:length]]
        return None


class Condition(_Strict):
    area_m2_below: float | None = Field(default=None, gt=0)
    area_m2_at_least: float | None = Field(default=None, ge=0)
    share_of_a_below: float | None = Field(default=None, gt=0, le=1)
    share_of_b_below: float | None = Field(default=None, gt=0, le=1)
    a_class_in: tuple[str, ...] | None = None
    b_class_in: tuple[str, ...] | None = None


class DisposalRule(_Strict):
    when: Condition
    disposal: Disposal
    reason: Title


class DefaultDisposal(_Strict):
    disposal: Disposal
    reason: Title


class Side(_Strict):
    layer: Name
    class_field: Name | None = None
    where: dict[Name, tuple[str, ...]] = Field(default_factory=dict)


class PlanConflictCheck(_Strict):
    id: Name
    title: Title
    a: Side
    b: Side
    min_area_m2: float = Field(default=50.0, ge=0)
    disposal: tuple[DisposalRule, ...] = ()
    default: DefaultDisposal


class ProjectsSource(_Strict):
    """The layer a proposal may be named from by fid (`project`), and its field of the proposed use."""

    layer: Name
    use_field: Name | None = None


class RulesFile(_Strict):
    version: Literal[1]
    projects: ProjectsSource | None = None
    rules: tuple[Rule, ...] = Field(min_length=1)
    plan_conflicts: tuple[PlanConflictCheck, ...] = ()


class OverlapRules:
    """The validated rules, with each rule's layer resolved from the registry."""

    def __init__(self, path: Path, parsed: RulesFile, registry: LayerRegistry) -> None:
        self.path = path
        self.rules: tuple[Rule, ...] = parsed.rules
        self.plan_conflicts: tuple[PlanConflictCheck, ...] = parsed.plan_conflicts
        self.projects = parsed.projects
        self.projects_layer: LayerSpec | None = registry[parsed.projects.layer] if parsed.projects else None
        self.layers: MappingProxyType[str, LayerSpec] = MappingProxyType(
            {r.layer: registry[r.layer] for r in self.rules}
            | {s.layer: registry[s.layer] for c in self.plan_conflicts for s in (c.a, c.b)}
        )

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def check(self, check_id: str) -> PlanConflictCheck | None:
        return next((c for c in self.plan_conflicts if c.id == check_id), None)

    def layer_of(self, rule: Rule) -> LayerSpec:
        return self.layers[rule.layer]

    @property
    def use_codes(self) -> tuple[str, ...]:
        """Every proposal use some compatible_use rule knows."""
        found: dict[str, None] = {}
        for rule in self.rules:
            for code in rule.compatibility or {}:
                found[code] = None
        return tuple(found)


def check_field(spec: LayerSpec, name: str, key: str, values: tuple[str, ...] = ()) -> None:
    field = spec.field(name)
    if field is None:
        raise ValueError(f"{key}: layer '{spec.id}' has no field '{name}'")
    if field.values is not None:
        unknown = [v for v in values if v not in field.values]
        if unknown:
            raise ValueError(f"{key}: {', '.join(repr(v) for v in unknown)} not among the values of "
                             f"'{spec.id}.{name}' ({', '.join(field.values)})")


def _check_where(spec: LayerSpec, where: dict[str, tuple[str, ...]], key: str) -> None:
    for name, values in where.items():
        if not values:
            raise ValueError(f"{key}.{name}: list at least one value")
        check_field(spec, name, f"{key}.{name}", values)


def registry_layer(registry: LayerRegistry, name: str, key: str) -> LayerSpec:
    if name not in registry:
        raise ValueError(f"{key}: no layer '{name}' in the registry")
    return registry[name]


def _check_rule(rule: Rule, registry: LayerRegistry, key: str) -> None:
    spec = registry_layer(registry, rule.layer, f"{key}.layer")
    for i, name in enumerate(rule.attributes or ()):
        check_field(spec, name, f"{key}.attributes[{i}]")
    _check_where(spec, rule.where, f"{key}.where")
    needs_polygons = rule.kind in (Kind.must_be_inside, Kind.compatible_use) or (
        rule.kind is Kind.no_overlap and not rule.buffer_m)
    if needs_polygons and spec.geometry not in _POLYGONS:
        raise ValueError(f"{key}.kind: {rule.kind} needs a polygon layer; '{spec.id}' is {spec.geometry}"
                         + (" (give buffer_m to check against a zone around it)" if rule.kind is Kind.no_overlap
                            else ""))
    if rule.kind is Kind.compatible_use:
        assert rule.class_field and rule.compatibility
        field = spec.field(rule.class_field)
        if field is None:
            raise ValueError(f"{key}.class_field: layer '{spec.id}' has no field '{rule.class_field}'")
        if field.type is not FieldType.text:
            raise ValueError(f"{key}.class_field: '{spec.id}.{rule.class_field}' is {field.type}, not text")
        for use, allowed in rule.compatibility.items():
            if not allowed:
                raise ValueError(f"{key}.compatibility.{use}: list at least one planned class")
            if field.values is not None:
                unknown = [c for c in allowed if not any(v.startswith(c) or c.startswith(v) for v in field.values)]
                if unknown:
                    raise ValueError(f"{key}.compatibility.{use}: {', '.join(unknown)} not among the classes of "
                                     f"'{spec.id}.{rule.class_field}' ({', '.join(field.values)})")
    if rule.kind is Kind.corridor:
        assert rule.widths
        if spec.geometry not in _LINES:
            raise ValueError(f"{key}.kind: corridor needs a line layer; '{spec.id}' is {spec.geometry}")
        for i, width in enumerate(rule.widths):
            check_field(spec, rule.utility_field, f"{key}.widths[{i}].utility", (width.utility,))
            if width.pressure_class is not None:
                check_field(spec, rule.pressure_field, f"{key}.widths[{i}].pressure_class",
                             (width.pressure_class,))
        if rule.measured_from == "wall":
            field = spec.field(rule.diameter_field)
            if field is None or field.type not in (FieldType.integer, FieldType.bigint, FieldType.real):
                raise ValueError(f"{key}.measured_from: 'wall' needs a numeric '{rule.diameter_field}' field "
                                 f"(mm) on '{spec.id}'")


def _check_side(side: Side, registry: LayerRegistry, key: str) -> None:
    spec = registry_layer(registry, side.layer, f"{key}.layer")
    if spec.geometry not in _POLYGONS:
        raise ValueError(f"{key}.layer: plan-against-plan needs polygon layers; '{spec.id}' is {spec.geometry}")
    if side.class_field:
        check_field(spec, side.class_field, f"{key}.class_field")
    _check_where(spec, side.where, f"{key}.where")


def _check_against_registry(parsed: RulesFile, registry: LayerRegistry) -> None:
    if parsed.projects:
        spec = registry_layer(registry, parsed.projects.layer, "projects.layer")
        if spec.geometry not in _POLYGONS:
            raise ValueError(f"projects.layer: '{spec.id}' is {spec.geometry}; proposals are polygons")
        if parsed.projects.use_field:
            check_field(spec, parsed.projects.use_field, "projects.use_field")
    seen: set[str] = set()
    for i, rule in enumerate(parsed.rules):
        if rule.id in seen:
            raise ValueError(f"rules[{i}].id: '{rule.id}' is declared twice")
        seen.add(rule.id)
        _check_rule(rule, registry, f"rules[{i}]")
    seen = set()
    for i, check in enumerate(parsed.plan_conflicts):
        key = f"plan_conflicts[{i}]"
        if check.id in seen:
            raise ValueError(f"{key}.id: '{check.id}' is declared twice")
        seen.add(check.id)
        _check_side(check.a, registry, f"{key}.a")
        _check_side(check.b, registry, f"{key}.b")
        for j, entry in enumerate(check.disposal):
            if entry.when.a_class_in and not check.a.class_field:
                raise ValueError(f"{key}.disposal[{j}].when.a_class_in: side a names no class_field")
            if entry.when.b_class_in and not check.b.class_field:
                raise ValueError(f"{key}.disposal[{j}].when.b_class_in: side b names no class_field")
            for side, values in ((check.a, entry.when.a_class_in), (check.b, entry.when.b_class_in)):
                if values and side.class_field:
                    check_field(registry[side.layer], side.class_field,
                                 f"{key}.disposal[{j}].when", tuple(values))




def load_rules(path: Path, registry: LayerRegistry) -> OverlapRules:
    """Read and check the rules file; ConfigError names the file and the key at fault."""
    parsed = load_checked(path, RulesFile, "overlap rules", lambda rules: _check_against_registry(rules, registry))
    return OverlapRules(path, parsed, registry)


def default_rules_path(layers_dir: Path) -> Path:
    """layers/overlap-rules.yml, beside the layer folders (not in one: those hold layer files)."""
    return layers_dir / RULES_FILE
