"""The overlap rules file: validated against the registry, every error naming the file and the key."""

from pathlib import Path

import pytest
import yaml

from gis.analysis.rules import Kind, default_rules_path, load_rules
from gis.errors import ConfigError
from gis.layers import LayerRegistry
from gis.settings import Settings


def _write(tmp_path: Path, settings: Settings, change: dict) -> Path:
    raw = yaml.safe_load(default_rules_path(settings.layers_dir).read_text(encoding="utf-8"))
    for path, value in change.items():
        node = raw
        keys = path.split("/")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        last = keys[-1]
        node[int(last) if last.isdigit() else last] = value
    target = tmp_path / "overlap-rules.yml"
    target.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return target


def test_the_project_rules_load(settings: Settings, registry: LayerRegistry) -> None:
    rules = load_rules(default_rules_path(settings.layers_dir), registry)
    assert {r.kind for r in rules.rules} == set(Kind)


def test_unknown_layer_names_file_and_key(tmp_path: Path, settings: Settings, registry: LayerRegistry) -> None:
    path = _write(tmp_path, settings, {"rules/0/layer": "red_lines"})
    with pytest.raises(ConfigError, match=r"overlap-rules.yml: rules\[0\]\.layer: no layer 'red_lines'"):
        load_rules(path, registry)


def test_unknown_class_field_names_the_key(tmp_path: Path, settings: Settings, registry: LayerRegistry) -> None:
    path = _write(tmp_path, settings, {"rules/3/class_field": "lu_code"})
    with pytest.raises(ConfigError, match=r"rules\[3\]\.class_field: layer 'land_use_plan' has no field 'lu_code'"):
        load_rules(path, registry)


def test_unknown_planned_class_is_refused(tmp_path: Path, settings: Settings, registry: LayerRegistry) -> None:
    path = _write(tmp_path, settings, {"rules/3/compatibility/R": ["R", "Q"]})
    with pytest.raises(ConfigError, match=r"rules\[3\]\.compatibility\.R: Q not among the classes"):
        load_rules(path, registry)


def test_unknown_utility_value_is_refused(tmp_path: Path, settings: Settings, registry: LayerRegistry) -> None:
    path = _write(tmp_path, settings, {"rules/4/widths/0/utility": "steam"})
    with pytest.raises(ConfigError, match=r"rules\[4\]\.widths\[0\]\.utility: 'steam' not among the values"):
        load_rules(path, registry)


def test_corridor_needs_a_line_layer(tmp_path: Path, settings: Settings, registry: LayerRegistry) -> None:
    path = _write(tmp_path, settings, {"rules/4/layer": "water_bodies", "rules/4/where": {},
                                       "rules/4/attributes": None, "rules/4/measured_from": "centreline"})
    with pytest.raises(ConfigError, match=r"rules\[4\]\.kind: corridor needs a line layer"):
        load_rules(path, registry)


def test_unknown_key_is_named(tmp_path: Path, settings: Settings, registry: LayerRegistry) -> None:
    path = _write(tmp_path, settings, {"rules/0/minimum_area": 3})
    with pytest.raises(ConfigError, match=r"rules\[0\]\.minimum_area: unknown key"):
        load_rules(path, registry)


def test_compatibility_matches_by_prefix(settings: Settings, registry: LayerRegistry) -> None:
    rule = load_rules(default_rules_path(settings.layers_dir), registry).rule("land_use_plan")
    assert rule is not None and rule.allowed_classes("R21") == rule.allowed_classes("R")
