"""A delivered file's bytes as the file the refresh reads: GeoPackage, zipped Shapefile, GeoJSON or CSV.

The file must be of the layer's declared source format (its layer file's `source.format`); a zipped Shapefile
is extracted (its parts only, by their base names: no paths from the archive reach the disk).
"""

import io
import zipfile
from pathlib import Path

from gis.errors import SourceError
from gis.layers import SourceFormat, SourceSpec
from gis.refresh.sources import SHAPEFILE_PARTS

MAX_UNZIPPED = 2 * 2**30  # a zip bomb stops here
_SQLITE = b"SQLite format 3\x00"


def kind_of(filename: str, content: bytes) -> SourceFormat:
    """What the bytes are, by their signature and name; SourceError naming the file when none fits."""
    lower = filename.lower()
    if content.startswith(_SQLITE):
        return SourceFormat.gpkg
    if content.startswith(b"PK\x03\x04"):
        return SourceFormat.shp
    if lower.endswith((".geojson", ".json")):
        return SourceFormat.geojson
    if lower.endswith(".csv"):
        return SourceFormat.csv
    raise SourceError(f"file: '{filename[:80]}' is not a GeoPackage, zipped Shapefile, GeoJSON or CSV")


def _extract_shapefile(content: bytes, directory: Path) -> Path:
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        raise SourceError("file: not a readable zip archive") from None
    members = [m for m in archive.infolist() if not m.is_dir() and Path(m.filename).suffix.lower() in SHAPEFILE_PARTS]
    shapes = [m for m in members if m.filename.lower().endswith(".shp")]
    if len(shapes) != 1:
        raise SourceError(f"file: the zip holds {len(shapes)} .shp files; a delivery is one Shapefile")
    if sum(m.file_size for m in members) > MAX_UNZIPPED:
        raise SourceError("file: the Shapefile is larger than 2 GiB unpacked")
    stem = Path(shapes[0].filename).stem
    for member in members:
        if Path(member.filename).stem != stem:
            continue
        target = directory / f"delivery{Path(member.filename).suffix.lower()}"
        target.write_bytes(archive.read(member))
    return directory / "delivery.shp"


def check_format(filename: str, content: bytes, source: SourceSpec) -> SourceFormat:
    """The file's format, which must be the layer's; SourceError naming both otherwise."""
    kind = kind_of(filename, content)
    if kind is not source.format:
        raise SourceError(f"file: a {kind.value} file; this layer takes {source.format.value} deliveries")
    return kind


def unpack(filename: str, content: bytes, source: SourceSpec, directory: Path) -> Path:
    """Write the delivery into `directory` as its layer's refresh reads it; the path to read."""
    kind = check_format(filename, content, source)
    if kind is SourceFormat.shp:
        return _extract_shapefile(content, directory)
    path = directory / f"delivery.{kind.value}"
    path.write_bytes(content)
    return path
