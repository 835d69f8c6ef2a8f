"""Real clients against the real service: OWSLib, GDAL's OAPIF driver (Debian gdal-bin), QGIS's OAPIF provider.

Each loads several layers, pages through every feature and must get exactly the database's count, with
the field types intact (integers stay integers, reals reals, dates dates).
"""

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest
from conftest import ADMIN_HEADERS, ADMIN_KEY
from owslib.ogcapi.features import Features

CLIENTS = Path(__file__).resolve().parent / "clients"
LAYERS = ("pipelines", "land_use_plan", "incidents", "buildings")
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def db(loaded_db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(loaded_db_url, autocommit=True) as conn:
        yield conn


def served_count(db: psycopg.Connection, layer: str) -> int:
    """What the layer holds now: the recorded count, or for a plan the parcels in force today."""
    if layer == "land_use_plan":
        row = db.execute("SELECT count(*) FROM planning.land_use_plan WHERE valid_from <= now() "
                         "AND (valid_to IS NULL OR valid_to > now())").fetchone()
    else:
        row = db.execute("SELECT row_count FROM ops.layer_stats WHERE layer_id = %s", (layer,)).fetchone()
    assert row is not None
    return int(row[0])


# -- OWSLib -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", LAYERS)
def test_owslib_pages_through_every_feature(api_url: str, db: psycopg.Connection, layer: str) -> None:
    api = Features(api_url, headers=ADMIN_HEADERS)
    assert layer in [c["id"] for c in api.collections()["collections"]]
    ids: list[str] = []
    params: dict[str, str] = {"limit": "500"}
    while True:
        page = api.collection_items(layer, **params)  # type: ignore[arg-type]
        ids += [f["id"] for f in page["features"]]
        nxt = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
        if nxt is None:
            break
        params = dict(parse_qsl(urlsplit(nxt).query))
    assert len(ids) == len(set(ids)) == served_count(db, layer)


def test_owslib_reads_queryables_and_one_item(api_url: str) -> None:
    api = Features(api_url, headers=ADMIN_HEADERS)
    assert api.collection_queryables("pipelines")["properties"]["diameter_mm"]["type"] == "integer"
    first = api.collection_items("pipelines", limit=1)["features"][0]
    assert api.collection_item("pipelines", first["id"])["id"] == first["id"]


def test_owslib_keeps_integers_and_dates(api_url: str) -> None:
    feature = Features(api_url, headers=ADMIN_HEADERS).collection_items("land_use_plan", limit=1)["features"][0]
    assert isinstance(feature["properties"]["plot_ratio"], float)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", feature["properties"]["approved_on"])


# -- GDAL (ogrinfo / ogr2ogr with the OAPIF driver) -----------------------------------------------------------

def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def _fields(ogrinfo_output: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+): (\w+) \(", ogrinfo_output, re.MULTILINE))


@pytest.fixture(scope="module")
def gdal_copy(api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test layer copied by ogr2ogr from the service into a GeoPackage (paging through all of it)."""
    out = tmp_path_factory.mktemp("gdal") / "copy.gpkg"
    _run(["ogr2ogr", "-f", "GPKG", str(out), f"OAPIF:{api_url}?api_key={ADMIN_KEY}", "-oo", "PAGE_SIZE=1000", *LAYERS])
    return out


@pytest.mark.parametrize("layer", LAYERS)
def test_ogr2ogr_copies_every_feature(gdal_copy: Path, db: psycopg.Connection, layer: str) -> None:
    info = _run(["ogrinfo", "-ro", "-so", str(gdal_copy), layer]).stdout
    assert int(re.search(r"Feature Count: (\d+)", info).group(1)) == served_count(db, layer)  # type: ignore[union-attr]


def test_ogr2ogr_keeps_field_types(gdal_copy: Path) -> None:
    fields = _fields(_run(["ogrinfo", "-ro", "-so", str(gdal_copy), "pipelines"]).stdout)
    assert (fields["diameter_mm"], fields["depth_start_m"], fields["utility"]) == ("Integer", "Real", "String")
    assert _fields(_run(["ogrinfo", "-ro", "-so", str(gdal_copy), "land_use_plan"]).stdout)["approved_on"] == "Date"


def test_ogrinfo_reports_the_layer_count_from_number_matched(api_url: str, db: psycopg.Connection) -> None:
    info = _run(["ogrinfo", "-ro", "-so", f"OAPIF:{api_url}?api_key={ADMIN_KEY}", "incidents"]).stdout
    assert int(re.search(r"Feature Count: (\d+)", info).group(1)) == served_count(db, "incidents")  # type: ignore[union-attr]
    assert _fields(info)["occurred_at"] == "DateTime"


def test_ogrinfo_pages_with_gdal_default_page_size(api_url: str, db: psycopg.Connection) -> None:
    info = _run(["ogrinfo", "-ro", "-al", "-q", f"OAPIF:{api_url}", "police_stations"]).stdout
    assert info.count("OGRFeature(police_stations)") == served_count(db, "police_stations")


# -- QGIS 3.22 (python3-qgis, the OAPIF provider) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def qgis_report(api_url: str) -> dict[str, dict[str, object]]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = _run([SYSTEM_PYTHON, str(CLIENTS / "qgis_oapif.py"), api_url, *LAYERS, "--query-suffix",
                   f"api_key={ADMIN_KEY}"], env=env)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return {layer["layer"]: layer for layer in report["layers"]}


@pytest.mark.qgis
@pytest.mark.parametrize("layer", LAYERS)
def test_qgis_reads_every_feature_once(qgis_report: dict[str, dict[str, object]], db: psycopg.Connection,
                                       layer: str) -> None:
    report = qgis_report[layer]
    assert report["valid"], report
    assert report["features_read"] == report["distinct_ids"] == served_count(db, layer)


@pytest.mark.qgis
@pytest.mark.parametrize("layer", LAYERS)
def test_qgis_feature_count_is_number_matched(qgis_report: dict[str, dict[str, object]], db: psycopg.Connection,
                                              layer: str) -> None:
    assert qgis_report[layer]["feature_count"] == served_count(db, layer)


@pytest.mark.qgis
def test_qgis_keeps_field_types(qgis_report: dict[str, dict[str, object]]) -> None:
    pipes, plan = qgis_report["pipelines"]["fields"], qgis_report["land_use_plan"]["fields"]
    assert (pipes["diameter_mm"], pipes["depth_start_m"], pipes["valid_from"]) == (  # type: ignore[index]
        "Integer", "Real", "DateTime")
    assert plan["approved_on"] == "Date"  # type: ignore[index]
