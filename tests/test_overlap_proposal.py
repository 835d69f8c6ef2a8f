"""Reading proposals: GeoJSON in any supported CRS, uploaded files, and every kind of bad input named."""

import io
import json
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely
from shapely.geometry import box, mapping

from gis.analysis.proposal import (
    MAX_UPLOAD_BYTES,
    ProposalTooLarge,
    proposal_from_file,
    proposal_from_geojson,
)
from gis.crs import from_storage_to_gcj02
from gis.errors import InvalidInput

CITY = (122.2, 41.0, 124.0, 43.2)
SQUARE = box(123.40, 41.75, 123.402, 41.752)  # CGCS2000 lon/lat, about 170 m x 220 m


def _in(crs: str) -> dict:
    if crs == "GCJ-02":
        return mapping(from_storage_to_gcj02(np.array([SQUARE], dtype=object))[0])
    t = pyproj.Transformer.from_crs(4490, crs, always_xy=True)
    return mapping(shapely.transform(SQUARE, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1]))))


@pytest.mark.parametrize("crs", ["EPSG:4549", "EPSG:4550", "GCJ-02", "http://www.opengis.net/def/crs/EPSG/0/4326"])
def test_every_supported_crs_lands_on_the_same_place(crs: str) -> None:
    found = proposal_from_geojson(_in(crs.rsplit("/", 1)[-1] if crs.startswith("http") else crs), crs=crs,
                                  city_extent=CITY)
    assert shapely.hausdorff_distance(found.geometry, SQUARE) < 1e-7  # about a centimetre


def test_no_crs_means_crs84() -> None:
    assert proposal_from_geojson(mapping(SQUARE), crs=None, city_extent=CITY).crs == "OGC:CRS84"


def test_unknown_crs_is_named() -> None:
    with pytest.raises(InvalidInput, match=r"^crs: unknown CRS 'EPSG:999999'"):
        proposal_from_geojson(mapping(SQUARE), crs="EPSG:999999", city_extent=CITY)


def test_invalid_geometry_says_why() -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[123.40, 41.75], [123.41, 41.76], [123.41, 41.75],
                                                  [123.40, 41.76], [123.40, 41.75]]]}
    with pytest.raises(InvalidInput, match=r"^geometry: the geometry is not valid: Self-intersection"):
        proposal_from_geojson(bowtie, crs=None, city_extent=CITY)


def test_empty_geometry_is_refused() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        proposal_from_geojson({"type": "Polygon", "coordinates": []}, crs=None, city_extent=CITY)


def test_a_line_is_not_a_proposal() -> None:
    with pytest.raises(InvalidInput, match=r"an area .* not a LineString"):
        proposal_from_geojson({"type": "LineString", "coordinates": [[123.4, 41.75], [123.41, 41.76]]},
                              crs=None, city_extent=CITY)


def test_far_outside_the_city_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"outside the city: [\d,.]+ km from"):
        proposal_from_geojson(mapping(box(116.3, 39.9, 116.31, 39.91)), crs=None, city_extent=CITY)


def test_swapped_axes_get_a_hint() -> None:
    swapped = mapping(shapely.transform(SQUARE, lambda xy: xy[:, ::-1]))
    with pytest.raises(InvalidInput, match="x and y swapped"):
        proposal_from_geojson(swapped, crs=None, city_extent=CITY)


def test_a_feature_collection_is_one_proposal() -> None:
    left, right = box(123.40, 41.75, 123.401, 41.752), box(123.401, 41.75, 123.402, 41.752)
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"proposed_use": "R"}, "geometry": mapping(g)} for g in (left, right)]}
    found = proposal_from_geojson(fc, crs=None, city_extent=CITY)
    assert found.proposed_use == "R" and abs(found.geometry.area - SQUARE.area) < 1e-12


def test_features_disagreeing_on_use_are_refused() -> None:
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"proposed_use": u}, "geometry": mapping(SQUARE)} for u in ("R", "M")]}
    with pytest.raises(InvalidInput, match="proposed_use: the features disagree"):
        proposal_from_geojson(fc, crs=None, city_extent=CITY)


def _frame(crs: str = "EPSG:4490", column: str = "proposed_use") -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({column: ["B"]}, geometry=[SQUARE], crs="EPSG:4490").to_crs(crs)


def test_geopackage_upload(tmp_path: Path) -> None:
    path = tmp_path / "plan.gpkg"
    _frame("EPSG:4549").to_file(path, driver="GPKG")
    found = proposal_from_file(path.read_bytes(), "plan.gpkg", crs=None, city_extent=CITY)
    assert found.proposed_use == "B" and shapely.hausdorff_distance(found.geometry, SQUARE) < 1e-7


def _zipped_shapefile(tmp_path: Path, with_prj: bool = True) -> bytes:
    _frame("EPSG:4550", "use").to_file(tmp_path / "plan.shp")  # dBase names are 10 characters at most
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for part in tmp_path.glob("plan.*"):
            if with_prj or part.suffix != ".prj":
                archive.write(part, part.name)
    return buffer.getvalue()


def test_zipped_shapefile_upload(tmp_path: Path) -> None:
    found = proposal_from_file(_zipped_shapefile(tmp_path), "plan.zip", crs=None, city_extent=CITY)
    assert shapely.hausdorff_distance(found.geometry, SQUARE) < 1e-7


def test_shapefile_without_prj_asks_for_crs(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"^crs: the zipped Shapefile has no \.prj"):
        proposal_from_file(_zipped_shapefile(tmp_path, with_prj=False), "plan.zip", crs=None, city_extent=CITY)


def test_kml_upload(tmp_path: Path) -> None:
    path = tmp_path / "plan.kml"
    _frame("EPSG:4326").to_file(path, driver="KML")
    found = proposal_from_file(path.read_bytes(), "plan.kml", crs=None, city_extent=CITY)
    assert shapely.hausdorff_distance(found.geometry, SQUARE) < 1e-7


def test_geojson_upload_with_old_crs_member() -> None:
    obj = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:4550"}},
           "features": [{"type": "Feature", "properties": {}, "geometry": _in("EPSG:4550")}]}
    found = proposal_from_file(json.dumps(obj).encode(), "plan.geojson", crs=None, city_extent=CITY)
    assert shapely.hausdorff_distance(found.geometry, SQUARE) < 1e-7


def test_file_that_is_not_what_it_claims() -> None:
    with pytest.raises(InvalidInput, match=r"'plan\.gpkg' claims to be GeoPackage but its content is GeoJSON"):
        proposal_from_file(json.dumps(mapping(SQUARE)).encode(), "plan.gpkg", crs=None, city_extent=CITY)


def test_corrupt_geopackage_is_named() -> None:
    with pytest.raises(InvalidInput, match="cannot be read as GeoPackage"):
        proposal_from_file(b"SQLite format 3\x00" + b"\x00" * 200, "plan.gpkg", crs=None, city_extent=CITY)


def test_unsupported_extension_is_named() -> None:
    with pytest.raises(InvalidInput, match=r"unsupported file type '\.dwg'"):
        proposal_from_file(b"AC1027", "plan.dwg", crs=None, city_extent=CITY)


def test_oversized_upload_is_refused() -> None:
    with pytest.raises(ProposalTooLarge, match=f"at most {MAX_UPLOAD_BYTES:,}"):
        proposal_from_file(b"{" + b" " * MAX_UPLOAD_BYTES, "plan.geojson", crs=None, city_extent=CITY)
