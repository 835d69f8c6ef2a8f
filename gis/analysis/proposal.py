"""A proposal: the area a project would occupy, read from GeoJSON or an uploaded file, checked, in EPSG:4490.

Coordinates are read in the GIS axis order every GeoJSON, GeoPackage, Shapefile and KML file uses
(longitude/easting first), in the CRS the caller names, else the one the file declares, else CRS84.
Everything a caller can get wrong raises InvalidInput naming the parameter and the problem: an
invalid, empty or non-areal geometry, a file that is not what its name says, an unknown CRS, a
proposal outside the city (with a hint when swapped axes would put it inside), an oversized upload.
"""

import io
import json
import math
import re
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pyproj
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from gis import crs as crs_
from gis.errors import InvalidInput, SourceError
from gis.security.disclosure import without_paths

MAX_UPLOAD_BYTES = 20 * 2**20  # an uploaded file or a request body
MAX_UNZIPPED_BYTES = 200 * 2**20  # a zipped Shapefile, unpacked
MAX_VERTICES = 200_000
MAX_FEATURES = 10_000

CRS84_FORMS = frozenset(f.upper() for f in (
    "CRS84", "OGC:CRS84", "[OGC:CRS84]", "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
    "https://www.opengis.net/def/crs/OGC/1.3/CRS84", "urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:OGC::CRS84",
))
_EPSG_PREFIXES = ("EPSG:", "HTTP://WWW.OPENGIS.NET/DEF/CRS/EPSG/0/", "HTTPS://WWW.OPENGIS.NET/DEF/CRS/EPSG/0/",
                  "URN:OGC:DEF:CRS:EPSG::", "URN:OGC:DEF:CRS:EPSG:")

_USE_CODE = re.compile(r"^[A-Z][0-9]{0,3}$")
FORMAT_NAMES = {"gpkg": "GeoPackage", "shp": "zipped Shapefile", "geojson": "GeoJSON", "kml": "KML"}
_EXTENSIONS = {".gpkg": "gpkg", ".zip": "shp", ".shz": "shp", ".geojson": "geojson", ".json": "geojson",
               ".kml": "kml"}
_MEDIA_TYPES = {
    "application/geopackage+sqlite3": "gpkg", "application/x-sqlite3": "gpkg",
    "application/zip": "shp", "application/x-zip-compressed": "shp", "application/x-shapefile": "shp",
    "application/geo+json": "geojson", "application/json": "geojson",
    "application/vnd.google-earth.kml+xml": "kml",
}


class ProposalTooLarge(InvalidInput):
    """An upload or a geometry over the size limits."""


@dataclass(frozen=True)
class Proposal:
    geometry: BaseGeometry  # MultiPolygon, EPSG:4490 lon/lat, valid, inside the city
    source: str  # what it was read from, for the report
    crs: str  # the CRS the coordinates came in
    proposed_use: str | None = None
    project_fid: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def wkb(self) -> bytes:
        return bytes(shapely.to_wkb(self.geometry, output_dimension=2))

    def geojson(self) -> dict[str, Any]:
        """The geometry as a GeoJSON object, lon/lat to 7 decimals (about a centimetre)."""
        rounded = shapely.transform(self.geometry, lambda xy: np.round(xy, 7))
        geometry: dict[str, Any] = json.loads(shapely.to_geojson(rounded))
        return geometry


# -- CRS ---------------------------------------------------------------------------------------------

def resolve_crs(name: str, parameter: str = "crs") -> str:
    """A CRS name as gis.crs understands it: 'GCJ-02', 'OGC:CRS84' or 'EPSG:n'; unknown ones are refused."""
    text = str(name).strip()
    if not text:
        raise InvalidInput(parameter, "empty CRS name")
    if crs_.is_gcj02(text):
        return crs_.GCJ02
    if text.upper() in CRS84_FORMS:
        return "OGC:CRS84"
    upper = text.upper()
    for prefix in _EPSG_PREFIXES:
        if upper.startswith(prefix):
            code = upper[len(prefix):].rsplit(":", 1)[-1]
            if code.isdigit():
                return _epsg(int(code), text, parameter)
    raise InvalidInput(parameter, f"unknown CRS '{text[:80]}': use EPSG:NNNN (or its OGC URI), CRS84 or GCJ-02")


def _epsg(code: int, text: str, parameter: str) -> str:
    try:
        found = pyproj.CRS.from_epsg(code)
    except pyproj.exceptions.CRSError:
        raise InvalidInput(parameter, f"unknown CRS '{text[:80]}': EPSG has no code {code}") from None
    if not (found.is_projected or found.is_geographic) or len(found.axis_info) < 2:
        raise InvalidInput(parameter, f"EPSG:{code} ({found.name}) is not a horizontal CRS")
    return f"EPSG:{code}"


def _file_crs(declared: str, parameter: str) -> str:
    """The CRS a file declares (an EPSG code or WKT from GDAL), usable by gis.crs."""
    try:
        found = pyproj.CRS.from_user_input(declared)
    except pyproj.exceptions.CRSError:
        raise InvalidInput(parameter, f"the file's CRS cannot be understood ({declared[:80]}); give crs") from None
    code = found.to_epsg(min_confidence=90)
    return f"EPSG:{code}" if code else found.to_wkt()


def _to_storage(geometries: np.ndarray, crs_name: str, parameter: str) -> np.ndarray:
    try:
        return crs_.to_storage_crs(geometries, crs_name)
    except SourceError as exc:
        raise InvalidInput(parameter, str(exc)) from None
    except pyproj.exceptions.ProjError as exc:
        raise InvalidInput(parameter, f"coordinates cannot be transformed from {crs_name}: {exc}") from None


# -- GeoJSON -----------------------------------------------------------------------------------------

def _geometry_of(obj: Any, where: str) -> BaseGeometry:
    if not isinstance(obj, Mapping) or "type" not in obj:
        raise InvalidInput(where, "not a GeoJSON geometry (an object with 'type' and 'coordinates')")
    try:
        geom = shape(dict(obj))
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, shapely.errors.GEOSException) as exc:
        raise InvalidInput(where, f"not a valid GeoJSON {obj.get('type')!s:.40}: {exc}") from None
    return geom


def _declared_crs(obj: Mapping[str, Any]) -> str | None:
    """The old GeoJSON `crs` member ({"type": "name", "properties": {"name": ...}}), if any."""
    member = obj.get("crs")
    if isinstance(member, Mapping) and isinstance(member.get("properties"), Mapping):
        name = member["properties"].get("name")
        if isinstance(name, str):
            return name
    return None


def read_geojson(obj: Any, parameter: str = "geometry") -> tuple[list[BaseGeometry], list[Mapping[str, Any]],
                                                                   str | None]:
    """(geometries, properties, declared CRS) of a GeoJSON geometry, Feature or FeatureCollection."""
    if not isinstance(obj, Mapping):
        raise InvalidInput(parameter, "expected a GeoJSON object (geometry, Feature or FeatureCollection)")
    kind = obj.get("type")
    declared = _declared_crs(obj)
    if kind == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise InvalidInput(parameter, "a FeatureCollection needs a 'features' list")
        if not features:
            raise InvalidInput(parameter, "the FeatureCollection has no features")
        if len(features) > MAX_FEATURES:
            raise ProposalTooLarge(parameter, f"{len(features)} features; at most {MAX_FEATURES}")
        geoms, props = [], []
        for i, feature in enumerate(features):
            g, p = _feature(feature, f"{parameter}.features[{i}]")
            geoms.append(g)
            props.append(p)
        return geoms, props, declared
    if kind == "Feature":
        g, p = _feature(obj, parameter)
        return [g], [p], declared
    return [_geometry_of(obj, parameter)], [{}], declared


def _feature(obj: Any, where: str) -> tuple[BaseGeometry, Mapping[str, Any]]:
    if not isinstance(obj, Mapping) or obj.get("type") != "Feature":
        raise InvalidInput(where, "not a GeoJSON Feature")
    if obj.get("geometry") is None:
        raise InvalidInput(where, "the feature has no geometry")
    properties = obj.get("properties") or {}
    if not isinstance(properties, Mapping):
        raise InvalidInput(f"{where}.properties", "must be an object")
    return _geometry_of(obj["geometry"], f"{where}.geometry"), properties


# -- files -------------------------------------------------------------------------------------------

def sniff_format(data: bytes) -> str | None:
    """What the bytes are, from their first bytes: gpkg, shp (a zip), geojson, kml, or None."""
    head = data[:1024]
    if head.startswith(b"SQLite format 3\x00"):
        return "gpkg"
    if head.startswith(b"PK\x03\x04"):
        return "shp"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"{"):
        return "geojson"
    if text.startswith(b"<") and b"<kml" in head:
        return "kml"
    return None


def claimed_format(filename: str | None, media_type: str | None) -> str | None:
    """The format a file's name (else its media type) claims; None when it claims nothing we know of."""
    if filename:
        name = filename.lower()
        if name.endswith(".shp.zip"):
            return "shp"
        suffix = Path(name).suffix
        if suffix:
            if suffix not in _EXTENSIONS:
                raise InvalidInput("file", f"'{filename[:80]}': unsupported file type '{suffix}'; send a "
                                   "GeoPackage (.gpkg), zipped Shapefile (.zip), GeoJSON (.geojson) or KML (.kml)")
            return _EXTENSIONS[suffix]
    if media_type:
        base = media_type.split(";")[0].strip().lower()
        return _MEDIA_TYPES.get(base)
    return None


def _read_ogr(path: str, fmt: str, label: str, scratch: str) -> tuple[list[BaseGeometry], list[Mapping[str, Any]],
                                                                   str | None]:
    """Read the upload GDAL opens at `path`; a failure is the file's (InvalidInput), its message scrubbed of
    `path` and of the `scratch` directory the upload was written to."""
    def refused(problem: str, exc: BaseException) -> InvalidInput:
        return InvalidInput("file", f"{label}: {problem} ({_first_line(exc, (path, scratch))})")

    # Any exception of the reader on an untrusted file is the file's fault, not the server's: GDAL and pyogrio
    # raise their own errors, but also ValueError, NotImplementedError, GEOS errors or a pyogrio bug's
    # UnboundLocalError on damaged bytes (tests/test_upload_errors.py finds them by damaging real files).
    try:
        layers = pyogrio.list_layers(path)
    except Exception as exc:
        raise refused(f"cannot be read as {FORMAT_NAMES[fmt]}", exc) from None
    names = [str(row[0]) for row in layers if row[1] is not None]
    if not names:
        raise InvalidInput("file", f"{label}: no layer with geometries")
    if fmt == "gpkg" and len(names) > 1:
        raise InvalidInput("file", f"{label}: the GeoPackage has {len(names)} layers with geometries "
                           f"({', '.join(names[:10])}); send one")
    geoms: list[BaseGeometry] = []
    props: list[Mapping[str, Any]] = []
    declared: str | None = None
    for name in names:  # KML: each folder is a layer, all of them make the proposal
        try:
            frame = pyogrio.read_dataframe(path, layer=name)
            crs = frame.crs.to_wkt() if frame.crs is not None else None
        except Exception as exc:
            raise refused(f"layer '{name[:80]}' cannot be read", exc) from None
        if crs is not None and declared is None:
            declared = crs
        for i, geom in enumerate(frame.geometry.to_numpy()):
            if geom is None:
                raise InvalidInput("file", f"{label}: feature {i + 1} of layer '{name[:80]}' has no geometry")
            geoms.append(geom)
        records = frame.drop(columns=frame.geometry.name).to_dict("records")
        props.extend(records)
        if len(geoms) > MAX_FEATURES:
            raise ProposalTooLarge("file", f"{label}: more than {MAX_FEATURES} features")
    if fmt == "kml":
        declared = "OGC:CRS84"  # KML is always WGS 84 lon/lat
    return geoms, props, declared


def _first_line(exc: BaseException, known: Iterable[str] = ()) -> str:
    """The first line of a reader's error, without the server's file names: GDAL quotes the path it opened, which
    is our scratch directory; those `known` paths go exactly, anything else path-like by pattern."""
    text = without_paths(str(exc).strip(), "<upload>", known)
    return text.splitlines()[0][:200] if text else exc.__class__.__name__


def _shapefile_in_zip(data: bytes, label: str) -> tuple[str, bool]:
    """The .shp member of a zipped Shapefile and whether a .prj comes with it."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError) as exc:
        raise InvalidInput("file", f"{label}: not a readable zip archive ({exc})") from None
    if sum(m.file_size for m in members) > MAX_UNZIPPED_BYTES:
        raise ProposalTooLarge("file", f"{label}: unpacks to more than {MAX_UNZIPPED_BYTES // 2**20} MiB")
    shps = [m.filename for m in members if m.filename.lower().endswith(".shp")]
    if len(shps) != 1:
        raise InvalidInput("file", f"{label}: a zipped Shapefile holds exactly one .shp; found {len(shps)}")
    stem = shps[0][:-4].lower()
    present = {m.filename.lower() for m in members}
    missing = [s for s in (".shx", ".dbf") if stem + s not in present]
    if missing:
        raise InvalidInput("file", f"{label}: the Shapefile lacks its {' and '.join(missing)}")
    return shps[0], stem + ".prj" in present


def read_file(data: bytes, filename: str | None, media_type: str | None = None, scratch_dir: Path | None = None
              ) -> tuple[list[BaseGeometry], list[Mapping[str, Any]], str | None, str]:
    """(geometries, properties, declared CRS, format) of an uploaded GeoPackage, zipped Shapefile, GeoJSON or KML.

    GDAL reads files, so the upload is written to a directory of its own under `scratch_dir` (the temp_dir
    setting; None: the system's), removed afterwards."""
    label = f"'{filename[:80]}'" if filename else "the upload"
    if len(data) > MAX_UPLOAD_BYTES:
        raise ProposalTooLarge("file", f"{label} is {len(data):,} bytes; at most {MAX_UPLOAD_BYTES:,}")
    if not data:
        raise InvalidInput("file", f"{label} is empty")
    claimed = claimed_format(filename, media_type)
    found = sniff_format(data)
    if claimed is not None and found != claimed:
        what = FORMAT_NAMES[found] if found else "no format we read"
        raise InvalidInput("file", f"{label} claims to be {FORMAT_NAMES[claimed]} but its content is {what}")
    fmt = found or claimed
    if fmt is None:
        raise InvalidInput("file", f"{label}: not a GeoPackage, zipped Shapefile, GeoJSON or KML file")
    if fmt == "geojson":
        try:
            obj = json.loads(data.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput("file", f"{label}: not valid GeoJSON ({exc})") from None
        geoms, props, declared = read_geojson(obj, "file")
        return geoms, props, declared, fmt
    with tempfile.TemporaryDirectory(prefix="gis-proposal-", dir=scratch_dir) as tmp:
        if fmt == "shp":
            member, has_prj = _shapefile_in_zip(data, label)
            archive = Path(tmp) / "upload.zip"
            archive.write_bytes(data)
            geoms, props, declared = _read_ogr(f"/vsizip/{archive}/{member}", fmt, label, tmp)
            if not has_prj:
                declared = None
        else:
            path = Path(tmp) / f"upload.{fmt}"
            path.write_bytes(data)
            geoms, props, declared = _read_ogr(str(path), fmt, label, tmp)
    return geoms, props, declared, fmt


# -- the checked proposal ----------------------------------------------------------------------------

def _check_shapes(geoms: list[BaseGeometry], parameter: str) -> None:
    vertices = 0
    for i, geom in enumerate(geoms):
        where = parameter if len(geoms) == 1 else f"{parameter} (feature {i + 1})"
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise InvalidInput(where, f"a proposal is an area (Polygon or MultiPolygon), not a {geom.geom_type}")
        if geom.is_empty:
            raise InvalidInput(where, "the geometry is empty")
        coords = shapely.get_coordinates(geom)
        if not np.isfinite(coords).all():
            raise InvalidInput(where, "coordinates must be finite numbers")
        vertices += len(coords)
        if vertices > MAX_VERTICES:
            raise ProposalTooLarge(parameter, f"more than {MAX_VERTICES:,} vertices")
        if not geom.is_valid:
            raise InvalidInput(where, f"the geometry is not valid: {shapely.is_valid_reason(geom)}")


def _distance_km(bounds: tuple[float, float, float, float], box: tuple[float, float, float, float]) -> float:
    """Roughly how far (km) a lon/lat box is from another."""
    dx = max(box[0] - bounds[2], bounds[0] - box[2], 0.0)
    dy = max(box[1] - bounds[3], bounds[1] - box[3], 0.0)
    lat = math.radians((box[1] + box[3]) / 2)
    return math.hypot(dx * 111.32 * math.cos(lat), dy * 110.57)


def _inside(bounds: tuple[float, ...], box: tuple[float, float, float, float]) -> bool:
    return bool(np.isfinite(bounds).all()) and bounds[0] >= box[0] and bounds[1] >= box[1] \
        and bounds[2] <= box[2] and bounds[3] <= box[3]


def _check_extent(stored: np.ndarray, source: list[BaseGeometry], crs_name: str,
                  city: tuple[float, float, float, float], parameter: str) -> None:
    bounds = tuple(shapely.total_bounds(stored))
    if _inside(bounds, city):
        return
    swapped = [shapely.transform(g, lambda xy: xy[:, ::-1]) for g in source]
    hint = ""
    try:
        swapped_bounds = tuple(shapely.total_bounds(_to_storage(np.array(swapped, dtype=object), crs_name, parameter)))
        if _inside(swapped_bounds, city):
            hint = " (with x and y swapped it would be inside: give x = longitude/easting first)"
    except InvalidInput:
        pass
    if not hint and crs_name in ("OGC:CRS84", "EPSG:4326", "EPSG:4490"):
        hint = f"; are the coordinates really in {crs_name}? give crs"
    where = "not within" if not np.isfinite(bounds).all() else f"{_distance_km(bounds, city):,.1f} km from"
    raise InvalidInput(parameter, f"the proposal lies outside the city: {where} the city's extent "
                       f"{list(city)} (lon/lat){hint}")


def build_proposal(geoms: list[BaseGeometry], properties: Iterable[Mapping[str, Any]], *, crs: str | None,
                   declared_crs: str | None, city_extent: tuple[float, float, float, float], source: str,
                   proposed_use: str | None = None, parameter: str = "geometry") -> Proposal:
    """Check the shapes, transform to EPSG:4490, check the extent, and join the parts into one MultiPolygon."""
    crs_name = resolve_crs(crs) if crs else (_file_crs(declared_crs, parameter) if declared_crs else "OGC:CRS84")
    if declared_crs and not crs and crs_.is_gcj02(declared_crs):
        crs_name = crs_.GCJ02
    _check_shapes(geoms, parameter)
    stored = _to_storage(np.array(geoms, dtype=object), crs_name, "crs")
    _check_extent(stored, geoms, crs_name, city_extent, parameter)
    joined = shapely.union_all(stored) if len(stored) > 1 else stored[0]
    if not joined.is_valid:
        joined = shapely.make_valid(joined)
    polygons = shapely.get_parts(joined)
    polygons = polygons[shapely.get_type_id(polygons) == 3]
    if not len(polygons) or shapely.area(shapely.multipolygons(polygons)) <= 0:
        raise InvalidInput(parameter, "the geometry has no area")
    use = _use_of(properties, proposed_use)
    return Proposal(shapely.multipolygons(polygons), source, crs_name if len(crs_name) < 40 else "(file's CRS)",
                    use, None, _first_properties(properties))


def _first_properties(properties: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    for p in properties:
        return {str(k): v for k, v in p.items() if isinstance(v, str | int | float | bool) or v is None}
    return {}


def normalise_use(value: Any, parameter: str = "proposed_use") -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().upper()
    if not text:
        return None
    if not _USE_CODE.match(text):
        raise InvalidInput(parameter, f"'{str(value)[:20]}' is not a GB 50137 land-use code (R, A, B, M, R2 ...)")
    return text


def _use_of(properties: Iterable[Mapping[str, Any]], given: str | None) -> str | None:
    if given:
        return normalise_use(given)
    found: set[str] = set()
    for props in properties:
        for key, value in props.items():
            if str(key).lower() == "proposed_use":
                use = normalise_use(value, "proposed_use (feature property)")
                if use:
                    found.add(use)
    if len(found) > 1:
        raise InvalidInput("proposed_use", f"the features disagree ({', '.join(sorted(found))}); give proposed_use")
    return found.pop() if found else None


def proposal_from_geojson(obj: Any, *, crs: str | None, city_extent: tuple[float, float, float, float],
                          proposed_use: str | None = None) -> Proposal:
    geoms, props, declared = read_geojson(obj)
    kind = obj.get("type") if isinstance(obj, Mapping) else None
    count = f" ({len(geoms)} features)" if len(geoms) > 1 else ""
    return build_proposal(geoms, props, crs=crs, declared_crs=declared, city_extent=city_extent,
                          source=f"GeoJSON {kind}{count}", proposed_use=proposed_use)


def proposal_from_file(data: bytes, filename: str | None, *, media_type: str | None = None, crs: str | None,
                       city_extent: tuple[float, float, float, float], proposed_use: str | None = None,
                       scratch_dir: Path | None = None) -> Proposal:
    geoms, props, declared, fmt = read_file(data, filename, media_type, scratch_dir)
    if declared is None and crs is None and fmt == "shp":
        raise InvalidInput("crs", "the zipped Shapefile has no .prj: give its CRS (e.g. EPSG:4549)")
    name = f"'{Path(filename).name}'" if filename else "upload"
    return build_proposal(geoms, props, crs=crs, declared_crs=declared, city_extent=city_extent,
                          source=f"{FORMAT_NAMES[fmt]} {name} ({len(geoms)} feature{'s' if len(geoms) != 1 else ''})",
                          proposed_use=proposed_use, parameter="file")


def proposal_from_path(path: Path, *, crs: str | None, city_extent: tuple[float, float, float, float],
                       proposed_use: str | None = None) -> Proposal:
    """A file on disk (the CLI): a .shp is zipped with its sidecar files first."""
    if not path.is_file():
        raise InvalidInput("file", f"no file {path}")
    if path.suffix.lower() == ".shp":
        parts = [p for p in path.parent.glob(path.stem + ".*") if p.suffix.lower() in
                 (".shp", ".shx", ".dbf", ".prj", ".cpg")]
        if sum(p.stat().st_size for p in parts) > MAX_UPLOAD_BYTES:
            raise ProposalTooLarge("file", f"{path.name} and its sidecar files are over {MAX_UPLOAD_BYTES:,} bytes")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for part in parts:
                archive.write(part, part.name)
        return proposal_from_file(buffer.getvalue(), path.with_suffix(".zip").name, crs=crs,
                                  city_extent=city_extent, proposed_use=proposed_use)
    if path.stat().st_size > MAX_UPLOAD_BYTES:
        raise ProposalTooLarge("file", f"{path.name} is {path.stat().st_size:,} bytes; at most {MAX_UPLOAD_BYTES:,}")
    return proposal_from_file(path.read_bytes(), path.name, crs=crs, city_extent=city_extent,
                              proposed_use=proposed_use)
