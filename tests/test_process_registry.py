"""Processes are registered by discovery: a module with a Process subclass is a process, described from its input
model and checked by it. The example docs/architecture.md gives is run here as written, from a package of its own."""

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gis.errors import ConfigError, InvalidInput
from gis.project import Project, load_project
from gis.settings import Settings
from services.processes import make_bridge, process_classes
from services.processes.pygeoapi_bridge import Bridge

DOCS = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"


def _example() -> str:
    """The Python block of docs/architecture.md's section on adding a process."""
    section = DOCS.read_text().split("## A process, and adding one", 1)[-1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, "docs/architecture.md shows no example process"
    return found.group(1)


@pytest.fixture
def package(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """An importable package of its own (named after the test), to put process modules in."""
    name = f"extra_processes_{request.node.name.removeprefix('test_')[:40]}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        yield root
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]


@pytest.fixture(scope="module")
def project(settings: Settings) -> Project:
    return load_project(settings)


def _bridge(settings: Settings, server_url: str, project: Project, package: str) -> Bridge:
    # the pool is built, not opened: describing and validating need no database
    return make_bridge(settings.model_copy(update={"database_url": server_url}), project, package=package)


def test_the_documented_example_is_a_process_of_its_own_module(package: Path, settings: Settings, server_url: str,
                                                              project: Project) -> None:
    (package / "buffer_area.py").write_text(_example())
    bridge = _bridge(settings, server_url, project, package.name)
    assert list(bridge.processes) == ["buffer-area"]
    described = bridge.processes["buffer-area"]["metadata"]
    assert described["title"] == {"en": "Area of a buffer", "zh": "缓冲区面积"}
    assert described["inputs"]["radius_m"] == {"title": "Radius (m)", "minOccurs": 1, "maxOccurs": 1, "schema": {
        "type": "number", "exclusiveMinimum": 0, "maximum": 10_000}}
    assert described["inputs"]["label"]["minOccurs"] == 0
    assert described["inputs"]["label"]["schema"] == {"type": "string"}
    assert set(described["jobControlOptions"]) == {"sync-execute", "async-execute"}
    assert described["example"] == {"inputs": {"radius_m": 100}}  # its example_inputs

    processor = bridge.manager().get_processor("buffer-area")  # as pygeoapi loads it: by its dotted path
    mimetype, answer = processor.execute({"radius_m": 10, "label": {"value": "well"}})
    assert mimetype == "application/json" and answer["label"] == "well"
    assert answer["area_m2"] == pytest.approx(314.159, abs=1e-3)


@pytest.mark.parametrize(("inputs", "parameter", "problem"), [
    ({"radius_m": 20_000}, "radius_m", "less than or equal to 10000"),
    ({"radius_m": "3"}, "radius_m", "a valid number"),
    ({"radius_m": True}, "radius_m", "a valid number"),
    ({}, "radius_m", "required"),
    ({"radius_m": 1, "colour": "red"}, "colour", "unknown input; this process takes label, radius_m"),
    ({"radius_m": {"href": "http://elsewhere/r"}}, "radius_m", "by reference"),
    ([1], "inputs", "an object of named inputs"),
])
def test_the_example_refuses_bad_input_naming_it(package: Path, settings: Settings, server_url: str,
                                                 project: Project, inputs: object, parameter: str,
                                                 problem: str) -> None:
    (package / "buffer_area.py").write_text(_example())
    processor = _bridge(settings, server_url, project, package.name).manager().get_processor("buffer-area")
    with pytest.raises(InvalidInput) as refused:
        processor.execute(inputs)
    assert refused.value.parameter == parameter and problem in refused.value.problem


def test_two_processes_with_one_id_stop_the_start(package: Path) -> None:
    (package / "one.py").write_text(_example())
    (package / "two.py").write_text(_example().replace("class BufferArea(", "class SecondBufferArea("))
    with pytest.raises(ConfigError, match=r"process 'buffer-area' is defined twice: .*one\.BufferArea and .*two\."):
        process_classes(package.name)


def test_every_process_we_offer_is_found() -> None:
    """The service's own package: each domain module's processes, each id once."""
    ids = [cls.id for cls in process_classes()]
    assert len(ids) == len(set(ids)) == 15
    assert {"overlap-check", "plan-conflicts", "pipe-burst", "env-latest", "police-hotspots", "dem-profile"} <= set(ids)
