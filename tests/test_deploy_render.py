"""`gis deploy render`: deploy/'s templates filled in for a city's own hosts from one values file, as the
deployment guide (docs/deployment.md) has an IT department do it."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from gis.stack.deploy_files import read_env_file, unit_command

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "values.example.yml"


def _render(values: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gis.cli", "deploy", "render", str(values), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_the_example_values_render_every_file_a_host_installs(tmp_path: Path) -> None:
    done = _render(EXAMPLE, tmp_path)
    assert done.returncode == 0, done.stderr
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"gis.env", "gis-node@.service", "gis-worker@.service", "gis-refresh.service",
                     "gis-refresh.timer", "gis-prune.service", "gis-prune.timer", "haproxy.cfg"}
    assert (tmp_path / "gis.env").stat().st_mode & 0o077 == 0  # it holds the database passwords
    env_text = (tmp_path / "gis.env").read_text()
    env = read_env_file(env_text)
    values = yaml.safe_load(EXAMPLE.read_text())
    assert env["GIS_DATABASE_URL"] == values["database_url"]
    assert env["GIS_DATABASE_READ_URL"] == values["read_url"]
    assert env["GIS_EVENT_RETENTION_DAYS"] == "400"
    files = {"/etc/gis/gis.env": env_text}
    node = unit_command((tmp_path / "gis-node@.service").read_text(), "8001", files)
    assert node.argv == ["/opt/gis/.venv/bin/gis", "serve", "--host", "0.0.0.0", "--port", "8001"]
    prune = unit_command((tmp_path / "gis-prune.service").read_text(), "", files)
    assert prune.argv == ["/opt/gis/.venv/bin/gis", "ops", "prune"] and prune.cwd == Path("/opt/gis")
    haproxy = shutil.which("haproxy")
    assert haproxy is not None  # a test package (Makefile TEST_PACKAGES)
    checked = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "server node2 10.0.0.22:8000 check" in (tmp_path / "haproxy.cfg").read_text()


def test_a_missing_value_is_one_readable_line(tmp_path: Path) -> None:
    values = yaml.safe_load(EXAMPLE.read_text())
    del values["database_url"]
    partial = tmp_path / "values.yml"
    partial.write_text(yaml.safe_dump(values))
    done = _render(partial, tmp_path / "out")
    assert done.returncode != 0
    assert "database_url" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
