"""`gis check-overlap FILE`: a table on the terminal, reports on request, one-line errors."""

import json
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box, mapping

from gis.cli import main
from gis.settings import Settings

SQUARE = box(123.40, 41.75, 123.402, 41.752)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, loaded_db_url: str, settings: Settings) -> None:
    monkeypatch.setenv("GIS_DATABASE_URL", loaded_db_url)
    monkeypatch.setenv("GIS_LAYERS_DIR", str(settings.layers_dir))
    monkeypatch.setenv("GIS_STYLES_DIR", str(settings.styles_dir))


def test_prints_a_table_with_the_verdict(env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "plan.geojson"
    path.write_text(json.dumps(mapping(SQUARE)))
    assert main(["check-overlap", str(path), "--use", "R"]) == 0
    out = capsys.readouterr().out
    assert "ecological_redline" in out and "pipeline_corridors" in out and "verdict:" in out


def test_writes_the_html_report(env: None, tmp_path: Path) -> None:
    path = tmp_path / "plan.shp"
    gpd.GeoDataFrame({"use": ["R"]}, geometry=[SQUARE], crs="EPSG:4490").to_crs(4549).to_file(path)
    report = tmp_path / "out.html"
    assert main(["check-overlap", str(path), "--use", "R", "--report", str(report)]) == 0
    assert report.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_a_project_and_fail_on_conflict(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-overlap", "--project", "XM202300046", "--fail-on-conflict"]) == 3
    assert "verdict: CONFLICT" in capsys.readouterr().out


def test_bad_file_is_one_line_and_status_1(env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "plan.gpkg"
    path.write_text("not a geopackage")
    assert main(["check-overlap", str(path)]) == 1
    assert capsys.readouterr().err.startswith("gis: file: 'plan.gpkg' claims to be GeoPackage")
