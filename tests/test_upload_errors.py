"""Damaged uploads of every format (GeoPackage, KML, zipped Shapefile, GeoJSON), read by the real GDAL: each is a
4xx naming `file`, never a 500, and no answer names the server's scratch directory, even one whose name a path
pattern cannot recognise (spaces, brackets, non-ASCII). The service writes uploads under GIS_TEMP_DIR only; a
damaged delivery's failure, kept for its sender, names no scratch path either.
"""

import base64
import io
import random
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import geopandas as gpd
import httpx
import process_client
import psycopg
import pytest
from conftest import TEST_KEYS, cloned_database
from shapely.geometry import box

from gis.analysis.proposal import proposal_from_file
from gis.deliveries import store
from gis.errors import InvalidInput
from gis.layers import LayerRegistry
from gis.settings import Settings

SQUARE = box(123.40, 41.75, 123.402, 41.752)
CITY = (122.2, 41.0, 124.0, 43.2)
# A scratch directory a path pattern stops short in: what is left after the first space would name the rest.
SCRATCH_NAME = "scratch dir (büro) #1"
MEDIA = {"gpkg": "application/geopackage+sqlite3", "kml": "application/vnd.google-earth.kml+xml",
         "zip": "application/zip", "geojson": "application/geo+json"}


def _samples(folder: Path) -> dict[str, bytes]:
    """A valid one-polygon proposal in each upload format."""
    frame = gpd.GeoDataFrame({"proposed_use": ["B"]}, geometry=[SQUARE], crs="EPSG:4490")
    frame.to_file(folder / "p.gpkg")
    frame.to_file(folder / "p.kml", driver="KML")
    frame.to_file(folder / "p.shp")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for ext in ("shp", "shx", "dbf", "prj"):
            z.write(folder / f"p.{ext}", f"p.{ext}")
    return {"gpkg": (folder / "p.gpkg").read_bytes(), "kml": (folder / "p.kml").read_bytes(),
            "zip": archive.getvalue(), "geojson": frame.to_json().encode()}


def _damaged(data: bytes, seed: int, flips: int = 40) -> list[bytes]:
    """Cut at every twentieth of its length, and with random bytes overwritten (after the magic bytes)."""
    rng = random.Random(seed)
    out = [data[:n] for n in sorted({len(data) * k // 20 for k in range(1, 20)})]
    for _ in range(flips):
        b = bytearray(data)
        for _ in range(rng.randint(1, 30)):
            b[rng.randrange(16, len(b))] = rng.randrange(256)
        out.append(bytes(b))
    return out


def _names_no_path(text: str, scratch: Path) -> None:
    for fragment in (str(scratch), SCRATCH_NAME, "büro", "gis-proposal-", "upload.zip", "/tmp/"):
        assert fragment not in text, (fragment, text)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return _samples(tmp_path_factory.mktemp("samples"))


@pytest.mark.parametrize("fmt", ["gpkg", "kml", "zip", "geojson"])
def test_damaged_files_are_refused_without_naming_the_scratch_directory(
        fmt: str, samples: dict[str, bytes], tmp_path: Path) -> None:
    scratch = tmp_path / SCRATCH_NAME
    scratch.mkdir()
    refused = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GDAL's warnings about the damage go to the log, not to the caller
        for data in _damaged(samples[fmt], seed=len(fmt)):
            try:
                proposal_from_file(data, f"plan.{fmt}", crs=None, city_extent=CITY, scratch_dir=scratch)
            except InvalidInput as exc:
                refused += 1
                assert exc.parameter.startswith("file") or exc.parameter in ("crs", "proposed_use"), exc
                _names_no_path(str(exc), scratch)
    assert refused >= 19  # every cut file at least
    assert list(scratch.iterdir()) == []  # each upload's directory went with it


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("service") / SCRATCH_NAME
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def api(loaded_db_url: str, serve_api: Callable[[str], AbstractContextManager[str]], scratch: Path) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GIS_TEMP_DIR", str(scratch))
        with serve_api(loaded_db_url) as url:
            yield url


# A few damaged files of each format over HTTP (every damage is covered above, in-process): the cut ones and
# the byte-flipped ones that GDAL opens and then fails to read, where it quotes the file's path.
def _http_cases(samples: dict[str, bytes]) -> list[tuple[str, bytes]]:
    cases = []
    for fmt, data in samples.items():
        variants = _damaged(data, seed=7, flips=6)
        cases.extend((fmt, v) for v in variants[::3])
    return cases


def test_damaged_uploads_to_the_overlap_check_answer_4xx_without_paths(
        api: str, samples: dict[str, bytes], scratch: Path) -> None:
    headers = {"X-API-Key": TEST_KEYS["planner"]}
    for fmt, data in _http_cases(samples):
        r = httpx.post(f"{api}/api/planning/overlap-checks", headers=headers, timeout=60,
                       files={"file": (f"plan.{fmt}", data, MEDIA[fmt])})
        assert r.status_code in (200, 400, 413, 422), (fmt, r.status_code, r.text[:300])
        _names_no_path(r.text, scratch)
        if r.status_code != 200:
            assert "file" in r.text
    assert list(scratch.iterdir()) == []


def test_damaged_uploads_to_the_overlap_process_answer_4xx_without_paths(
        api: str, samples: dict[str, bytes], scratch: Path) -> None:
    for fmt, data in _http_cases(samples):
        value = base64.b64encode(data).decode()
        r = process_client.execute(api, "overlap-check", {"file": {"value": value, "mediaType": MEDIA[fmt]},
                                                          "filename": f"plan.{fmt}"}, None, "planner")
        assert r.status_code in (200, 400, 413, 422), (fmt, r.status_code, r.text[:300])
        _names_no_path(r.text, scratch)
    assert list(scratch.iterdir()) == []


def test_a_damaged_delivery_is_failed_without_naming_the_scratch_directory(
        server_url: str, template_db: str, settings: Settings, registry: LayerRegistry, tmp_path: Path) -> None:
    spec = registry["pipe_nodes"]  # delivered as a GeoPackage
    data = (settings.samples_dir / spec.source.path).read_bytes()
    scratch = tmp_path / SCRATCH_NAME
    scratch.mkdir()
    sender = store.Sender("upload-errors-test", "pipeline_office", "api")
    with cloned_database(server_url, template_db, "gis_test_upload_errors") as url:
        for damaged in (data[:len(data) // 3], data[:4096], data[:100] + b"\xff" * 4000 + data[4100:]):
            with psycopg.connect(url) as conn:
                received = store.receive(conn, spec, sender, "pipelines.gpkg", damaged, None, None)
            result = store.run_delivery(url, spec, received.delivery_id, settings.city_extent, settings.rejects_dir,
                                        scratch)
            assert result["status"] == "failed", result
            with psycopg.connect(url) as conn:
                kept = conn.execute("SELECT d.result::text, j.message FROM ops.deliveries d JOIN ops.jobs j "
                                    "ON j.job_id = d.job_id WHERE d.delivery_id = %s",
                                    (received.delivery_id,)).fetchone()
            assert kept is not None
            for text in (str(result), *kept):
                _names_no_path(text, scratch)
    assert list(scratch.iterdir()) == []
