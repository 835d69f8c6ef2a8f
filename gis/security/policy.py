"""The access policy as data (layers/access-policy.yml): roles -> visible layers, masked fields, row filters.

A role sees every public layer; internal layers whose audiences (in the registry) meet the role's
`audiences`; restricted layers only when the role names them in `restricted`; everything with
`all_layers`. `mask` hides fields of a layer from the role; `rows` limits the rows it sees with a
structured condition on a claim of the caller (never SQL text):

    rows:
      incidents:                      # a spatial condition: inside the caller's jurisdiction
        within: {layer: police_jurisdictions, field: station, equals_claim: jurisdiction}
      observations:                   # an attribute condition
        field: station
        equals_claim: station

`derive` says, per dependency of an analysis or answer (gis.security.inference), whether a result that depends
on a field or rows the role may not see is computed from what it may see (`visible`) or left out (`omit`, the
default for anything not named).

`writes` names the layers a role may add features to through the service (sensor readings posted over
HTTP); writing does not imply reading. `edits` grants feature edits (OGC API Features Part 4, and the
role's database login) per layer: any of create, update, delete; the role must be able to read the layer,
its row rule holds for what it writes, and it cannot write a field masked from it.

The per-role view of each layer (a LayerSpec without the masked fields) is built once at load, so the
services' per-spec caches stay valid.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gis.config_files import describe, read_yaml
from gis.errors import ConfigError, NotFound
from gis.layers import AccessClass, Audience, LayerRegistry, LayerSpec, Name, RasterSpec
from gis.security.inference import Sight

POLICY_FILE = "access-policy.yml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EditOperation(StrEnum):
    create = "create"
    update = "update"  # PUT (replace) and PATCH (merge patch)
    delete = "delete"


class Within(_Strict):
    """Rows inside the features of another layer whose `field` equals the caller's claim."""

    layer: Name
    field: Name
    equals_claim: Name


class RowRule(_Strict):
    """Exactly one of: `field` + `equals_claim` (an attribute of the row), or `within` (spatial)."""

    field: Name | None = None
    equals_claim: Name | None = None
    within: Within | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "RowRule":
        attribute = self.field is not None and self.equals_claim is not None
        if attribute == (self.within is not None) or (self.field is None) != (self.equals_claim is None):
            raise ValueError("a row rule is either {field, equals_claim} or {within: {layer, field, equals_claim}}")
        return self

    @property
    def claim(self) -> str:
        claim = self.within.equals_claim if self.within is not None else self.equals_claim
        assert claim is not None
        return claim


class RoleSpec(_Strict):
    description: str = ""
    all_layers: bool = False
    audiences: tuple[Audience, ...] = ()
    restricted: tuple[Name, ...] = Field(default=(), description="Restricted layers this role may read.")
    mask: Mapping[Name, tuple[Name, ...]] = Field(default_factory=dict, description="layer -> hidden fields")
    rows: Mapping[Name, RowRule] = Field(default_factory=dict, description="layer -> row rule")
    audit: bool = Field(default=False, description="May read the audit log.")
    writes: tuple[Name, ...] = Field(default=(), description="Layers this role may add features to through the "
                                     "service (sensor readings posted over HTTP).")
    edits: Mapping[Name, tuple[EditOperation, ...]] = Field(
        default_factory=dict, description="layer -> the edits the role may make (create, update, delete)")
    deliveries: tuple[Name, ...] = Field(default=(), description="Layers whose delivered files the role may post "
                                         "(POST /api/deliveries/{layer}): the owning department's key.")
    database: bool = Field(default=False, description="Gets a PostgreSQL role from `gis db grant`.")
    derive: Mapping[str, Literal["visible", "omit"]] = Field(
        default_factory=dict,
        description="dependency id -> how a result that depends on something this role may not see is treated: "
                    "computed from what it may see (visible) or left out (omit, the default); "
                    "gis.security.inference")


class PolicyFile(_Strict):
    anonymous: Name = "public"
    roles: Mapping[Name, RoleSpec]


@dataclass(frozen=True)
class LayerView:
    """One layer as one role sees it."""

    spec: LayerSpec  # without the masked fields
    source: LayerSpec  # the registry's own spec
    masked: tuple[str, ...] = ()
    rows: RowRule | None = None

    @property
    def audited(self) -> bool:
        return self.source.access is not AccessClass.public

    @property
    def tells_layer_facts(self) -> bool:
        """Whether facts of the whole layer (row count, extents, when it last changed) may be shown: not to a
        caller who sees only some rows (they would tell of the others)."""
        return self.rows is None


@dataclass(frozen=True)
class Role:
    name: str
    spec: RoleSpec
    views: Mapping[str, LayerView] = field(default_factory=dict)  # only the layers the role may read

    def view(self, layer_id: str) -> LayerView:
        """The layer as this role sees it; NotFound, worded as for a layer that does not exist, if hidden."""
        found = self.views.get(layer_id)
        if found is None:
            raise NotFound(f"no layer '{layer_id[:200]}'")
        return found

    def may_read(self, layer_id: str) -> bool:
        return layer_id in self.views

    def may_write(self, layer_id: str) -> bool:
        return layer_id in self.spec.writes

    def may_deliver(self, layer_id: str) -> bool:
        return layer_id in self.spec.deliveries

    def may_edit(self, layer_id: str, operation: EditOperation) -> bool:
        return operation in self.spec.edits.get(layer_id, ())

    @property
    def audit(self) -> bool:
        return self.spec.audit

    @cached_property
    def sight(self) -> Sight:
        """What this role may see, as analyses need it (fields per layer, row-limited layers, derive modes)."""
        return Sight(MappingProxyType({layer_id: frozenset(("fid", *view.spec.field_names))
                                       for layer_id, view in self.views.items()}),
                     frozenset(layer_id for layer_id, view in self.views.items() if view.rows is not None),
                     MappingProxyType(dict(self.spec.derive)))


def readable(role: RoleSpec, spec: LayerSpec | RasterSpec) -> bool:
    """Rasters follow the same access classes and audiences as vector layers."""
    if role.all_layers or spec.access is AccessClass.public:
        return True
    if spec.access is AccessClass.restricted:
        return spec.id in role.restricted
    return bool(set(role.audiences) & set(spec.audiences))


@dataclass(frozen=True)
class Policy:
    anonymous: Role
    roles: Mapping[str, Role]

    def role(self, name: str) -> Role | None:
        return self.roles.get(name)


def _view(registry: LayerRegistry, role: RoleSpec, spec: LayerSpec) -> LayerView:
    masked = tuple(role.mask.get(spec.id, ()))
    shown = spec if not masked else spec.model_copy(
        update={"fields": tuple(f for f in spec.fields if f.name not in masked)})
    return LayerView(spec=shown, source=spec, masked=masked, rows=role.rows.get(spec.id))


def _check(name: str, role: RoleSpec, registry: LayerRegistry) -> None:
    def known(layer_id: str, key: str) -> LayerSpec:
        if layer_id not in registry:
            raise ValueError(f"roles.{name}.{key}: no layer '{layer_id}'")
        return registry[layer_id]

    for layer_id in role.writes:
        known(layer_id, "writes")
    for layer_id in role.deliveries:
        if not known(layer_id, "deliveries").editing.deliveries:
            raise ValueError(f"roles.{name}.deliveries: '{layer_id}' is maintained by edits only")
    for layer_id, operations in role.edits.items():
        if not known(layer_id, "edits").editing.edits:
            raise ValueError(f"roles.{name}.edits: '{layer_id}' is maintained by deliveries only (its layer file's "
                             "editing.maintained_by)")
        if not readable(role, registry[layer_id]):
            raise ValueError(f"roles.{name}.edits: the role may not read '{layer_id}', so it cannot edit it")
        if not operations:
            raise ValueError(f"roles.{name}.edits.{layer_id}: name at least one of create, update, delete")
    for layer_id in role.restricted:
        if known(layer_id, "restricted").access is not AccessClass.restricted:
            raise ValueError(f"roles.{name}.restricted: '{layer_id}' is not a restricted layer")
    for layer_id, hidden in role.mask.items():
        spec = known(layer_id, "mask")
        unknown = sorted(set(hidden) - set(spec.field_names))
        if unknown:
            raise ValueError(f"roles.{name}.mask.{layer_id}: no field(s) {', '.join(unknown)}")
        if len(hidden) == len(spec.fields):
            raise ValueError(f"roles.{name}.mask.{layer_id}: masks every field; hide the layer instead")
    for layer_id, rule in role.rows.items():
        spec = known(layer_id, "rows")
        if rule.field is not None and spec.field(rule.field) is None:
            raise ValueError(f"roles.{name}.rows.{layer_id}.field: no field '{rule.field}'")
        if rule.within is not None:
            other = known(rule.within.layer, f"rows.{layer_id}.within.layer")
            if other.field(rule.within.field) is None:
                raise ValueError(f"roles.{name}.rows.{layer_id}.within.field: '{other.id}' has no field "
                                 f"'{rule.within.field}'")
        if rule.field is not None and rule.field in role.mask.get(layer_id, ()):
            raise ValueError(f"roles.{name}.rows.{layer_id}: filters on the masked field '{rule.field}'")


def build_policy(raw: object, registry: LayerRegistry, where: str = "policy") -> Policy:
    try:
        parsed = PolicyFile.model_validate(raw)
        for name, role in parsed.roles.items():
            _check(name, role, registry)
        if parsed.anonymous not in parsed.roles:
            raise ValueError(f"anonymous: no role '{parsed.anonymous}'")
    except ValidationError as exc:
        raise ConfigError(f"{where}: {describe(exc)}") from exc
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    anon_spec = parsed.roles[parsed.anonymous]
    if anon_spec.all_layers or anon_spec.audiences or anon_spec.restricted or anon_spec.audit or anon_spec.writes \
            or anon_spec.edits or anon_spec.deliveries:
        raise ConfigError(f"{where}: anonymous role '{parsed.anonymous}' may only read public layers")
    roles = {
        name: Role(name, spec, MappingProxyType({s.id: _view(registry, spec, s) for s in registry.values()
                                                 if readable(spec, s)}))
        for name, spec in parsed.roles.items()
    }
    return Policy(anonymous=roles[parsed.anonymous], roles=MappingProxyType(roles))


def policy_path(layers_dir: Path, configured: Path | None = None) -> Path:
    return configured if configured is not None else layers_dir / POLICY_FILE


def load_policy(path: Path, registry: LayerRegistry) -> Policy:
    return build_policy(read_yaml(path, "access policy"), registry, str(path))
