"""`gis qgis-project`: the project file opened by QGIS itself (python3-qgis), through PostGIS and through OAPIF."""

import json
import os
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import ROOT, TEST_KEYS

from gis.catalog import DOMAIN_TITLES
from gis.layers import LayerRegistry
from gis.qgis_project import LAYER_ID_PREFIX
from gis.security.policy import Policy, load_policy, policy_path
from gis.settings import Settings

QGIS_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).resolve().parent / "qgis_scripts" / "open_project.py"


@pytest.fixture(scope="module")
def policy(registry: LayerRegistry, settings: Settings) -> Policy:
    return load_policy(policy_path(settings.layers_dir), registry)


def _gis(settings: Settings, database_url: str, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIS_DATABASE_URL": database_url, "GIS_LAYERS_DIR": str(settings.layers_dir),
           "GIS_STYLES_DIR": str(settings.styles_dir), **extra_env}
    return subprocess.run([sys.executable, "-m", "gis.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120, check=False)


def _project(settings: Settings, database_url: str, out: Path, *args: str) -> Path:
    result = _gis(settings, database_url, "qgis-project", str(out), *args)
    assert result.returncode == 0, result.stderr
    return out


def _open_in_qgis(path: Path, password: str | None = None) -> dict[str, Any]:
    """QGIS's report on the project; `password` reaches QGIS's PostgreSQL connections as libpq's PGPASSWORD."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", **({"PGPASSWORD": password} if password else {})}
    result = subprocess.run([QGIS_PYTHON, str(SCRIPT), str(path)], capture_output=True, text=True, timeout=600,
                            env=env, check=False)
    assert result.stdout.strip(), f"no report from QGIS: {result.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def _style_renderer(settings: Settings, registry: LayerRegistry, layer_id: str) -> tuple[str, str | None]:
    renderer = ET.parse(settings.styles_dir / registry[layer_id].style).getroot().find("renderer-v2")
    assert renderer is not None
    return renderer.get("type", ""), renderer.get("attr")


def _table_count(db: psycopg.Connection, registry: LayerRegistry, layer_id: str) -> int:
    spec = registry[layer_id]
    row = db.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(
        psycopg.sql.Identifier(spec.domain.value, spec.id))).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def postgis_report(settings: Settings, loaded_db_url: str, tmp_path_factory: pytest.TempPathFactory
                   ) -> dict[str, Any]:
    out = _project(settings, loaded_db_url, tmp_path_factory.mktemp("qgs") / "admin-postgis.qgs", "--role", "admin",
                   "--source", "postgis")
    password = psycopg.conninfo.conninfo_to_dict(loaded_db_url).get("password")
    assert password and str(password) not in out.read_text(encoding="utf-8")  # the service's password stays out
    return _open_in_qgis(out, str(password))


@pytest.mark.qgis
def test_postgis_project_opens_every_layer_valid_and_grouped_by_domain(
        postgis_report: dict[str, Any], registry: LayerRegistry) -> None:
    layers = {layer["id"].removeprefix(LAYER_ID_PREFIX): layer for layer in postgis_report["layers"]}
    assert postgis_report["read"] is True
    assert set(layers) == set(registry)
    for layer_id, layer in layers.items():
        assert layer["valid"], layer_id
        assert layer["provider"] == "postgres"
        assert layer["group"] == DOMAIN_TITLES[registry[layer_id].domain]
    assert postgis_report["groups"] == list(dict.fromkeys(DOMAIN_TITLES[s.domain] for s in registry.values()))


@pytest.mark.qgis
def test_postgis_project_layers_have_their_style_and_count(
        postgis_report: dict[str, Any], registry: LayerRegistry, settings: Settings, db: psycopg.Connection) -> None:
    for layer in postgis_report["layers"]:
        layer_id = layer["id"].removeprefix(LAYER_ID_PREFIX)
        kind, attribute = _style_renderer(settings, registry, layer_id)
        assert layer["renderer"] == kind, layer_id
        if attribute is not None and "attribute" in layer:
            assert layer["attribute"] == attribute, layer_id
        assert layer["feature_count"] == _table_count(db, registry, layer_id), layer_id


@pytest.mark.qgis
def test_oapif_project_with_a_key_lists_that_roles_layers(
        settings: Settings, loaded_db_url: str, api_url: str, policy: Policy, registry: LayerRegistry,
        db: psycopg.Connection, tmp_path: Path) -> None:
    out = _project(settings, loaded_db_url, tmp_path / "pipeline.qgs", "--api-key", TEST_KEYS["pipeline_app"],
                   "--base-url", api_url)
    assert f"api_key={TEST_KEYS['pipeline_app']}" in out.read_text(encoding="utf-8")
    report = _open_in_qgis(out)
    role = policy.role("pipeline_app")
    assert role is not None
    layers = {layer["id"].removeprefix(LAYER_ID_PREFIX): layer for layer in report["layers"]}
    assert set(layers) == set(role.views) and set(layers) < set(registry)
    for layer_id, layer in layers.items():
        assert layer["valid"] and layer["provider"] == "OAPIF", layer_id
        assert layer["renderer"] == _style_renderer(settings, registry, layer_id)[0], layer_id
    stats = dict(db.execute("SELECT layer_id, row_count FROM ops.layer_stats").fetchall())
    assert layers["pipelines"]["feature_count"] == stats["pipelines"]
    assert layers["roads"]["feature_count"] == stats["roads"]


def test_role_project_lists_only_that_roles_layers(settings: Settings, loaded_db_url: str, policy: Policy,
                                                   tmp_path: Path) -> None:
    for role_name in ("planner", "environmental_app", None):
        args = ("--role", role_name) if role_name else ()
        out = _project(settings, loaded_db_url, tmp_path / f"{role_name}.qgs", *args)
        root = ET.parse(out).getroot()
        ids = {e.text.removeprefix(LAYER_ID_PREFIX) for e in root.iter("id") if e.text}
        role = policy.role(role_name) if role_name else policy.anonymous
        assert role is not None
        assert ids == set(role.views), role_name


def test_unknown_role_or_key_is_one_line_and_nonzero(settings: Settings, loaded_db_url: str, tmp_path: Path) -> None:
    for args in (("--role", "nobody"), ("--api-key", "gk_nothing_at_all")):
        result = _gis(settings, loaded_db_url, "qgis-project", str(tmp_path / "x.qgs"), *args)
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("gis: ")
        assert not (tmp_path / "x.qgs").exists()



def test_postgis_login_role_goes_into_every_datasource(settings: Settings, loaded_db_url: str, tmp_path: Path) -> None:
    out = _project(settings, loaded_db_url, tmp_path / "login.qgs", "--role", "analyst", "--source", "postgis",
                   "--db-user", "ann", "--db-password", "it's secret")
    sources = [e.text or "" for e in ET.parse(out).getroot().iter("datasource")]
    assert sources and all("user='ann'" in s and "password='it\\'s secret'" in s for s in sources)


def test_postgis_project_of_a_masking_role_opens_its_views(settings: Settings, loaded_db_url: str, policy: Policy,
                                                         tmp_path: Path) -> None:
    role = policy.role("planner")
    assert role is not None and role.view("pipelines").masked, "the policy masks pipeline fields for planners"
    out = _project(settings, loaded_db_url, tmp_path / "planner.qgs", "--role", "planner", "--source", "postgis",
                   "--db-user", "pat")
    sources = {(layer.findtext("id") or "").removeprefix(LAYER_ID_PREFIX): layer.findtext("datasource") or ""
               for layer in ET.parse(out).getroot().iter("maplayer")}
    assert 'table="gis_planner"."pipelines"' in sources["pipelines"]
    unmasked = next(layer_id for layer_id, view in role.views.items() if not view.masked)
    spec = role.view(unmasked).source
    assert f'table="{spec.domain.value}"."{spec.id}"' in sources[unmasked]


@pytest.mark.qgis
@pytest.mark.parametrize("role_name", ["analyst", "planner"])
def test_postgis_project_of_a_granted_login_role_opens_in_qgis(
        settings: Settings, clone_db: Callable[[], str], server_url: str, policy: Policy, tmp_path: Path,
        role_name: str) -> None:
    url = clone_db()
    user, password = f"qgs_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    granted = _gis(settings, url, "db", "grant", "--user", user, "--role", role_name, GIS_DB_USER_PASSWORD=password)
    assert granted.returncode == 0, granted.stderr
    try:
        out = _project(settings, url, tmp_path / "ann.qgs", "--role", role_name, "--source", "postgis",
                       "--db-user", user)
        report = _open_in_qgis(out, password)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:  # login roles belong to the whole cluster
            conn.execute(psycopg.sql.SQL("DROP ROLE IF EXISTS {}").format(psycopg.sql.Identifier(user)))
    role = policy.role(role_name)
    assert role is not None
    layers = {layer["id"].removeprefix(LAYER_ID_PREFIX): layer for layer in report["layers"]}
    assert set(layers) == set(role.views)
    assert all(layer["valid"] for layer in layers.values()), [k for k, v in layers.items() if not v["valid"]]
