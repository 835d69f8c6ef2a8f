"""The layer registry: every layer the city keeps is declared, and a broken file is named with its key."""

import shutil
from pathlib import Path

import pytest
import yaml

from gis.errors import ConfigError, NotFound
from gis.layers import LayerRegistry, load_registry

ROOT = Path(__file__).resolve().parent.parent

# DOMAIN.md's table: the least the registry must cover, with each layer's geometry family.
DOMAIN_LAYERS = {
    "admin_districts": "Polygon", "roads": "LineString", "buildings": "Polygon", "water_bodies": "Polygon",
    "place_names": "Point", "pipelines": "LineString", "pipe_nodes": "Point", "pipe_sensors": "Point",
    "land_use_plan": "Polygon", "ecological_redline": "Polygon", "basic_farmland": "Polygon",
    "development_boundary": "Polygon", "construction_projects": "Polygon", "monitoring_stations": "Point",
    "observations": "Point", "pollution_sources": "Point", "police_stations": "Point",
    "police_jurisdictions": "Polygon", "incidents": "Point",
}


def test_every_domain_layer_is_declared_with_its_geometry_family(registry: LayerRegistry) -> None:
    for layer_id, family in DOMAIN_LAYERS.items():
        assert registry[layer_id].geometry.value.removeprefix("Multi") == family, layer_id


def test_every_layer_is_stored_in_cgcs2000_with_titles_in_both_languages(registry: LayerRegistry) -> None:
    for spec in registry.values():
        assert spec.srid == 4490
        assert spec.title.zh and spec.title.en and spec.description


def test_restricted_and_event_layers_are_declared_as_such(registry: LayerRegistry) -> None:
    assert registry["incidents"].access.value == "restricted"
    assert registry["incidents"].temporal.field == "occurred_at"
    assert registry["observations"].temporal.field == "observed_at"
    assert registry["land_use_plan"].has_valid_time


def test_unknown_layer_is_not_found(registry: LayerRegistry) -> None:
    with pytest.raises(NotFound, match="no layer 'nope'"):
        registry.get_layer("nope")


@pytest.fixture
def layer_tree(tmp_path: Path) -> Path:
    """A copy of layers/ and styles/ to break one file at a time."""
    shutil.copytree(ROOT / "layers", tmp_path / "layers")
    shutil.copytree(ROOT / "styles", tmp_path / "styles")
    return tmp_path


def _edit(tree: Path, relative: str, change: dict[str, object] | None = None, drop_field_type: bool = False) -> Path:
    path = tree / "layers" / relative
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.update(change or {})
    if drop_field_type:
        del data["fields"][0]["type"]
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _load(tree: Path, samples: Path | None = None) -> LayerRegistry:
    return load_registry(tree / "layers", tree / "styles", samples)


def test_unknown_key_names_the_file_and_key(layer_tree: Path) -> None:
    path = _edit(layer_tree, "pipeline/pipelines.yml", {"colour": "blue"})
    with pytest.raises(ConfigError, match=rf"{path}: colour: unknown key"):
        _load(layer_tree)


def test_wrong_geometry_type_names_the_file_and_key(layer_tree: Path) -> None:
    path = _edit(layer_tree, "base/roads.yml", {"geometry": "Curve"})
    with pytest.raises(ConfigError, match=rf"{path}: geometry: "):
        _load(layer_tree)


def test_field_without_type_names_the_file_and_key(layer_tree: Path) -> None:
    path = _edit(layer_tree, "base/roads.yml", drop_field_type=True)
    with pytest.raises(ConfigError, match=rf"{path}: fields\[0\]\.type: Field required"):
        _load(layer_tree)


def test_missing_style_names_the_file_and_key(layer_tree: Path) -> None:
    (layer_tree / "styles" / "planning" / "basic_farmland.qml").unlink()
    with pytest.raises(ConfigError, match=r"basic_farmland\.yml: style: no style file"):
        _load(layer_tree)


def test_missing_sample_names_the_file_and_key(layer_tree: Path, tmp_path: Path) -> None:
    empty_samples = tmp_path / "no-samples"
    empty_samples.mkdir()
    with pytest.raises(ConfigError, match=r"admin_districts\.yml: source\.path: no sample file"):
        _load(layer_tree, empty_samples)


def test_duplicate_layer_id_across_domains_is_refused(layer_tree: Path) -> None:
    copy = layer_tree / "layers" / "policing" / "roads.yml"
    shutil.copy(layer_tree / "layers" / "base" / "roads.yml", copy)
    _edit(layer_tree, "policing/roads.yml", {"domain": "policing"})
    with pytest.raises(ConfigError, match="'roads' is already declared"):
        _load(layer_tree)


def test_event_layer_must_name_a_time_field(layer_tree: Path) -> None:
    path = _edit(layer_tree, "policing/incidents.yml", {"temporal": {"kind": "event"}})
    with pytest.raises(ConfigError, match=rf"{path}: temporal: .*event-time field"):
        _load(layer_tree)


def test_index_on_an_unknown_column_names_the_file_and_key(layer_tree: Path) -> None:
    index = {"name": "colour_idx", "columns": ["colour", "fid"], "why": "a filter on colour"}
    path = _edit(layer_tree, "base/roads.yml", {"indexes": [index]})
    with pytest.raises(ConfigError, match=rf"{path}: .*'colour_idx' names unknown columns: colour"):
        _load(layer_tree)

