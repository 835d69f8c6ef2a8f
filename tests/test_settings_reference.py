"""docs/configuration.md and docs/gis.env.example say what the settings classes say (generated, kept current)."""

import os
import subprocess
import sys
from pathlib import Path

from gis import settings_reference

ROOT = Path(__file__).resolve().parent.parent


def test_the_configuration_reference_is_current() -> None:
    assert settings_reference.stale(ROOT) == [], "run 'gis settings-doc --write'"


def test_every_setting_says_what_it_does() -> None:
    undocumented = [f"{cls.__name__}.{name}" for cls in settings_reference.CLASSES
                    for name, info in cls.model_fields.items() if not (info.description or "").strip()]
    assert undocumented == []


def test_the_example_environment_file_is_accepted_as_it_is(tmp_path: Path) -> None:
    """Every line of the example, uncommented, is a value the settings classes accept."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIS_")}
    for line in (ROOT / settings_reference.ENV_PATH).read_text().splitlines():
        if line.startswith("#GIS_"):
            name, _, value = line[1:].partition("=")
            if value:
                env[name] = value
    code = "; ".join(f"from {c.__module__} import {c.__name__}; {c.__name__}()" for c in settings_reference.CLASSES)
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_the_check_command_fails_on_a_stale_reference(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "configuration.md").write_text("# old\n")
    run = subprocess.run([sys.executable, "-m", "gis.cli", "settings-doc", "--check", "--root", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 1
    assert "out of date" in run.stderr and len(run.stderr.strip().splitlines()) == 1
