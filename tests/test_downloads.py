"""Downloads through the real service, read back with GDAL (pyogrio): the same features as /items.

Each format is compared with the API's own GeoJSON for the same filter: ids, attributes, geometries.
"""

import math
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyogrio
import pytest
from conftest import TEST_KEYS
from shapely.geometry import shape

from gis.downloads import shapefile_names
from gis.layers import FieldType, LayerRegistry
from gis.security import keys

FORMATS = ("gpkg", "fgb", "shp", "csv")
# pipelines: a LineString layer with integers, reals and text; a filter that matches a few hundred segments.
LAYER = "pipelines"
ADMIN = {"X-API-Key": TEST_KEYS["admin"]}
FILTER = "utility = 'gas' AND diameter_mm >= 200"


def _download(client: httpx.Client, tmp_path: Path, layer: str, fmt: str, **params: str) -> Path:
    response = client.get(f"/collections/{layer}/download", params={"f": fmt, **params})
    assert response.status_code == 200, response.text[:500]
    suffix = {"shp": "zip"}.get(fmt, fmt)
    path = tmp_path / f"{layer}.{suffix}"
    path.write_bytes(response.content)
    return path


def _read(path: Path, fmt: str) -> Any:
    source = f"/vsizip/{path}" if fmt == "shp" else str(path)
    return pyogrio.read_dataframe(source)


def _api_features(client: httpx.Client, layer: str, **params: str) -> tuple[list[dict[str, Any]], int | None]:
    """Every feature /items gives for the filter (all pages), and the first page's numberMatched."""
    url: str | None = f"/collections/{layer}/items"
    query: dict[str, str] | None = {"limit": "10000", **params}
    found: list[dict[str, Any]] = []
    matched = None
    while url is not None:
        page = client.get(url, params=query).json()
        matched = page.get("numberMatched") if matched is None and not found else matched
        found += page["features"]
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
        query = None
    return found, matched


def _same_value(expected: Any, got: Any, kind: FieldType) -> bool:
    if expected is None:
        return got is None or (isinstance(got, float) and math.isnan(got)) or got == ""
    if kind is FieldType.real:
        return math.isclose(float(got), expected, rel_tol=1e-9)
    if kind in (FieldType.integer, FieldType.bigint):
        return int(got) == expected
    if kind is FieldType.date:
        return str(got)[:10] == expected
    return str(got) == str(expected)


@pytest.fixture(scope="module")
def expected(client: httpx.Client) -> tuple[list[dict[str, Any]], int | None]:
    return _api_features(client, LAYER, filter=FILTER)


@pytest.mark.parametrize("fmt", FORMATS)
def test_download_has_the_features_items_gives(client: httpx.Client, tmp_path: Path, registry: LayerRegistry,
                                               expected: tuple[list[dict[str, Any]], int | None], fmt: str) -> None:
    features, matched = expected
    assert matched is not None and 0 < matched == len(features)
    frame = _read(_download(client, tmp_path, LAYER, fmt, filter=FILTER), fmt)
    assert len(frame) == matched
    spec = registry[LAYER]
    names = shapefile_names(spec) if fmt == "shp" else {n: n for n in ("id", *spec.field_names)}
    rows = {str(row[names["id"]]): row for _, row in frame.iterrows()}
    assert set(rows) == {f["id"] for f in features}
    for feature in features:
        row = rows[feature["id"]]
        for field in spec.fields:
            assert _same_value(feature["properties"][field.name], row[names[field.name]], field.type), \
                (feature["id"], field.name)
        want, got = shape(feature["geometry"]), row["geometry"]
        assert got.geom_type == want.geom_type
        assert got.equals_exact(want, 1e-6)


@pytest.mark.parametrize("fmt", ("gpkg", "csv"))
def test_download_applies_bbox_and_datetime(client: httpx.Client, tmp_path: Path, fmt: str) -> None:
    bbox = "123.30,41.75,123.45,41.85"
    features, _ = _api_features(client, "land_use_plan", bbox=bbox, datetime="2035-01-01")
    frame = _read(_download(client, tmp_path, "land_use_plan", fmt, bbox=bbox, datetime="2035-01-01"), fmt)
    assert features, "the box must hold parcels for the comparison to mean anything"
    assert sorted(frame["id"].astype(str)) == sorted(f["id"] for f in features)


def test_download_files_declare_cgcs2000(client: httpx.Client, tmp_path: Path) -> None:
    for fmt in ("gpkg", "fgb", "shp"):
        path = _download(client, tmp_path, "police_stations", fmt)
        info = pyogrio.read_info(f"/vsizip/{path}" if fmt == "shp" else str(path))
        assert info["crs"] == "EPSG:4490", fmt


def test_shapefile_zip_has_cpg_prj_and_field_list(client: httpx.Client, tmp_path: Path,
                                                   registry: LayerRegistry) -> None:
    path = _download(client, tmp_path, LAYER, "shp", filter=FILTER)
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        assert {f"{LAYER}.{ext}" for ext in ("shp", "shx", "dbf", "prj", "cpg")} <= names
        assert archive.read(f"{LAYER}.cpg").decode().strip().upper() in ("UTF-8", "UTF8")
        listing = archive.read(f"{LAYER}_fields.csv").decode().splitlines()
    mapping = dict(line.split(",") for line in listing[1:])
    assert mapping == shapefile_names(registry[LAYER])
    assert all(len(short) <= 10 for short in mapping.values())
    assert len({s.lower() for s in mapping.values()}) == len(mapping)
    frame = _read(path, "shp")
    assert set(mapping.values()) <= set(frame.columns)


def test_shapefile_names_are_stable_and_unique_when_cut() -> None:
    from gis.layers import LayerSpec

    spec = LayerSpec.model_validate({
        "id": "x", "domain": "base", "title": {"zh": "x", "en": "x"}, "description": "x", "department": "x",
        "geometry": "Point", "temporal": {"kind": "versioned"}, "access": "public", "audiences": ["analysts"],
        "update_frequency": "never", "style": "x.qml",
        "source": {"path": "x.gpkg", "format": "gpkg", "crs": "EPSG:4490", "fid": "id"},
        "fields": [{"name": "depth_start_m", "type": "real"}, {"name": "depth_start_x", "type": "real"},
                   {"name": "depth_start_y", "type": "real"}],
    })
    assert shapefile_names(spec) == {"id": "id", "depth_start_m": "depth_star", "depth_start_x": "depth_s_01",
                                     "depth_start_y": "depth_s_02", "valid_from": "valid_from",
                                     "valid_to": "valid_to"}


def test_csv_is_utf8_with_wkt_and_a_filename(client: httpx.Client, tmp_path: Path) -> None:
    response = client.get("/collections/place_names/download", params={"f": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;") and 'filename="place_names-' in disposition
    assert response.content.startswith(b"\xef\xbb\xbf")
    header = response.content.decode("utf-8-sig").splitlines()[0].split(",")
    assert header[0] == "id" and header[-1] == "WKT"
    path = tmp_path / "place_names.csv"
    path.write_bytes(response.content)
    matched = client.get("/collections/place_names/items", params={"limit": "1"}).json()["numberMatched"]
    assert len(_read(path, "csv")) == matched


def test_download_content_disposition_names_layer_and_format(client: httpx.Client) -> None:
    response = client.get("/collections/roads/download", params={"f": "fgb"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/flatgeobuf"
    assert f'filename="roads-{datetime.now(UTC):%Y%m%d}' in response.headers["content-disposition"]
    assert response.headers["content-disposition"].endswith('.fgb"')


def test_masked_fields_are_not_in_the_download(api_url: str, tmp_path: Path) -> None:
    with httpx.Client(base_url=api_url, headers={"X-API-Key": TEST_KEYS["planner"]}, timeout=60) as planner:
        for fmt in ("gpkg", "csv"):
            frame = _read(_download(planner, tmp_path, LAYER, fmt, filter=FILTER), fmt)
            assert "utility" in frame.columns
            assert not {"pressure_class", "owner"} & set(frame.columns), fmt


def test_hidden_layer_downloads_as_missing(api_url: str) -> None:
    for fmt in FORMATS:
        response = httpx.get(f"{api_url}/collections/{LAYER}/download", params={"f": fmt}, timeout=60)
        assert response.status_code == 404, fmt
        assert "text/csv" not in response.headers["content-type"]


def test_unknown_format_is_a_400_naming_f(client: httpx.Client) -> None:
    response = client.get(f"/collections/{LAYER}/download", params={"f": "kml"})
    assert response.status_code == 400
    assert response.json()["parameter"] == "f"


@pytest.mark.parametrize(("params", "parameter"), [
    ({"filter": "diameter_mm >"}, "filter"),
    ({"bbox": "1,2,3"}, "bbox"),
    ({"datetime": "yesterday"}, "datetime"),
    ({"limit": "10"}, "limit"),
])
@pytest.mark.parametrize("fmt", ("gpkg", "csv"))
def test_bad_filters_are_400s_like_items(client: httpx.Client, params: dict[str, str], parameter: str,
                                         fmt: str) -> None:
    response = client.get(f"/collections/{LAYER}/download", params={"f": fmt, **params})
    assert response.status_code == 400, response.text[:300]
    assert response.json()["parameter"] == parameter
    if parameter != "limit":  # /items takes limit; the download has no pages
        items = client.get(f"/collections/{LAYER}/items", params=params)
        assert items.status_code == 400 and items.json()["parameter"] == parameter


def test_download_of_an_internal_layer_is_audited(client: httpx.Client, db: psycopg.Connection) -> None:
    before = db.execute("SELECT coalesce(max(audit_id), 0) FROM ops.audit_log").fetchone()
    assert before is not None
    response = client.get(f"/collections/{LAYER}/download", params={"f": "fgb", "filter": FILTER})
    assert response.status_code == 200
    row = db.execute("SELECT layer_id, features, query->>'format', query->>'filter' FROM ops.audit_log "
                     "WHERE audit_id > %s AND path LIKE '%%/download' ORDER BY audit_id DESC LIMIT 1",
                     before).fetchone()
    assert row == (LAYER, int(response.headers["x-feature-count"]), "fgb", FILTER)


def test_collection_links_its_downloads(client: httpx.Client) -> None:
    links = client.get(f"/collections/{LAYER}").json()["links"]
    enclosures = {link["href"].rsplit("f=", 1)[1] for link in links if link["rel"] == "enclosure"}
    assert enclosures == set(FORMATS)


def test_row_rule_limits_the_download_as_it_limits_items(
        clone_db: Callable[[], str], serve_api: Callable[[str], AbstractContextManager[str]], tmp_path: Path) -> None:
    url = clone_db()
    with psycopg.connect(url) as conn:
        station = conn.execute("SELECT station FROM policing.police_jurisdictions ORDER BY fid LIMIT 1").fetchone()
        assert station is not None
        _record, police = keys.create_key(conn, "police of one station", "policing_app", "",
                                          {"jurisdiction": station[0]})
        total = conn.execute("SELECT count(*) FROM policing.incidents").fetchone()
        conn.commit()
    assert total is not None
    with serve_api(url) as api, httpx.Client(base_url=api, headers={"X-API-Key": police}, timeout=60) as http:
        features, _ = _api_features(http, "incidents")
        for fmt in ("fgb", "csv"):
            frame = _read(_download(http, tmp_path, "incidents", fmt), fmt)
            assert sorted(frame["id"].astype(str)) == sorted(f["id"] for f in features), fmt
    assert 0 < len(features) < total[0]


@pytest.mark.parametrize("fmt", ("fgb", "csv"))
def test_a_filter_the_database_cannot_evaluate_is_a_400(client: httpx.Client, fmt: str) -> None:
    params = {"filter": "S_INTERSECTS(geometry, POINT(1e30 1e30))",
              "filter-crs": "http://www.opengis.net/def/crs/EPSG/0/4549"}  # far outside the Gauss-Krüger zone
    items = client.get(f"/collections/{LAYER}/items", params=params)
    assert items.status_code == 400  # the same refusal as /items
    response = client.get(f"/collections/{LAYER}/download", params={"f": fmt, **params})
    assert response.status_code == 400, response.text[:300]
    assert response.json()["parameter"] == "filter"


def test_no_temporary_file_is_left_even_when_the_client_leaves(
        loaded_db_url: str, serve_api: Callable[[str], AbstractContextManager[str]], tmp_path: Path) -> None:
    # The service's own scratch directory (GIS_TEMP_DIR), so another suite's downloads in /tmp cannot interfere.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before = scratch.stat().st_mtime_ns
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GIS_TEMP_DIR", str(scratch))
        with serve_api(loaded_db_url) as api, httpx.Client(base_url=api, headers=ADMIN, timeout=60) as client:
            with client.stream("GET", f"/collections/{LAYER}/download", params={"f": "gpkg"}) as response:
                assert response.status_code == 200
                next(response.iter_raw(1024))  # then hang up
            response = client.get(f"/collections/{LAYER}/download", params={"f": "shp"})
            assert response.status_code == 200
    assert scratch.stat().st_mtime_ns > before  # the files were written there (and removed)
    assert list(scratch.iterdir()) == []
