"""The access policy file and the key hashing, without a database."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from gis.errors import ConfigError, NotFound
from gis.layers import AccessClass, LayerRegistry
from gis.security import keys
from gis.security.policy import Policy, build_policy, load_policy, policy_path
from gis.settings import Settings


@pytest.fixture(scope="module")
def policy(registry: LayerRegistry, settings: Settings) -> Policy:
    return load_policy(policy_path(settings.layers_dir), registry)


def _raw(settings: Settings) -> dict[str, Any]:
    return yaml.safe_load(Path(policy_path(settings.layers_dir)).read_text(encoding="utf-8"))


def test_anonymous_reads_exactly_the_public_layers(policy: Policy, registry: LayerRegistry) -> None:
    public = {s.id for s in registry.values() if s.access is AccessClass.public}
    assert set(policy.anonymous.views) == public


def test_internal_layers_follow_the_audiences(policy: Policy, registry: LayerRegistry) -> None:
    pipeline_app = policy.role("pipeline_app")
    assert pipeline_app.may_read("pipe_sensors") and not pipeline_app.may_read("basic_farmland")
    assert policy.role("planner").may_read("basic_farmland")


def test_restricted_layers_only_for_roles_naming_them(policy: Policy) -> None:
    readers = {name for name, role in policy.roles.items() if role.may_read("incidents")}
    assert readers == {"policing_app", "policing_editor", "admin"}


def test_hidden_layer_is_not_found_like_a_missing_one(policy: Policy) -> None:
    with pytest.raises(NotFound) as hidden:
        policy.anonymous.view("incidents")
    with pytest.raises(NotFound) as missing:
        policy.anonymous.view("nosuch")
    assert str(hidden.value).replace("incidents", "X") == str(missing.value).replace("nosuch", "X")


def test_masked_view_leaves_the_fields_out(policy: Policy) -> None:
    view = policy.role("planner").view("pipelines")
    assert {"pressure_class", "owner"} & set(view.spec.field_names) == set()
    assert "diameter_mm" in view.spec.field_names and view.spec.id == "pipelines"
    assert policy.role("planner").view("pipelines") is view  # built once: per-spec caches stay valid


def test_row_rule_is_structured(policy: Policy) -> None:
    rule = policy.role("policing_app").view("incidents").rows
    assert rule is not None and rule.within is not None and rule.claim == "jurisdiction"


@pytest.mark.parametrize(("role", "problem"), [
    ({"restricted": ["nosuch"]}, "no layer 'nosuch'"),
    ({"restricted": ["pipelines"]}, "not a restricted layer"),
    ({"mask": {"pipelines": ["nosuch"]}}, "no field(s) nosuch"),
    ({"rows": {"incidents": {"field": "category"}}}, "either"),
    ({"rows": {"incidents": {"field": "category", "equals_claim": "c",
                             "within": {"layer": "admin_districts", "field": "name", "equals_claim": "d"}}}},
     "either"),
    ({"rows": {"incidents": {"sql": "true"}}}, "rows.incidents.sql: unknown key"),
    ({"rows": {"incidents": {"within": {"layer": "roads", "field": "nosuch", "equals_claim": "d"}}}},
     "has no field"),
])
def test_policy_mistakes_are_config_errors(registry: LayerRegistry, settings: Settings, role: dict[str, Any],
                                      problem: str) -> None:
    raw = _raw(settings)
    raw["roles"]["broken"] = role
    with pytest.raises(ConfigError, match="policy") as found:
        build_policy(raw, registry)
    assert problem in str(found.value)


def test_anonymous_role_may_not_be_widened(registry: LayerRegistry, settings: Settings) -> None:
    raw = _raw(settings)
    raw["roles"]["public"] = {"audiences": ["analysts"]}
    with pytest.raises(ConfigError, match="anonymous"):
        build_policy(raw, registry)


def test_key_hash_is_keyed_and_stable() -> None:
    key_id, token = keys.new_token()
    assert keys.key_id_of(token) == key_id and len(token) > 40
    assert keys.key_hash(token, "p") == keys.key_hash(token, "p") != keys.key_hash(token, "q")
    assert keys.key_id_of("not-a-key") is None and keys.key_id_of("gk_abc_") is None
