"""A layer as a file: GeoPackage, FlatGeobuf, zipped Shapefile or CSV, read in batches and never held whole.

The rows are the ones /items answers for the same query (the same FROM item and predicates from
gis.features.queries), so filters, row rules and masks behave exactly alike. File formats are written
by GDAL (pyogrio.write_arrow) from an Arrow stream that pulls one batch at a time from a server-side
cursor; CSV is PostgreSQL's own COPY output passed through chunk by chunk.

Geometries are written in the storage CRS, EPSG:4490 (CGCS2000), in the lon/lat order GIS files use.
The CSV carries them as WKT in a column named WKT, which GDAL and QGIS read as the geometry without
options, for every geometry type (x/y columns would only serve points).
"""

import asyncio
import shutil
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path

import pyarrow as pa
from psycopg import AsyncConnection, sql
from pyogrio import write_arrow

from gis.features.params import ItemsQuery
from gis.features.queries import Statement, bbox_params, filter_predicates, source, time_params
from gis.features.queryables import response_properties
from gis.layers import FieldType, LayerSpec
from gis.refresh.row_hash import ARROW_TYPES  # the Arrow type of each field type, as the refresh sends it

STORAGE_CRS = "EPSG:4490"
BATCH_ROWS = 20_000
ID_COLUMN = "id"  # GeoPackage keeps "fid" for its own integer key; the source's id is text
WKT_COLUMN = "WKT"
SHAPEFILE_NAME_MAX = 10


class Format(StrEnum):
    gpkg = "gpkg"
    fgb = "fgb"
    shp = "shp"
    csv = "csv"


@dataclass(frozen=True)
class FormatInfo:
    driver: str | None  # GDAL's; None for CSV (PostgreSQL writes it)
    media_type: str
    extension: str
    title: str


FORMATS: dict[Format, FormatInfo] = {
    Format.gpkg: FormatInfo("GPKG", "application/geopackage+sqlite3", "gpkg", "GeoPackage"),
    Format.fgb: FormatInfo("FlatGeobuf", "application/flatgeobuf", "fgb", "FlatGeobuf"),
    Format.shp: FormatInfo("ESRI Shapefile", "application/zip", "zip", "Shapefile (zipped, UTF-8 .cpg)"),
    Format.csv: FormatInfo(None, "text/csv; charset=utf-8", "csv", "CSV (geometry as WKT)"),
}

def columns(spec: LayerSpec) -> tuple[str, ...]:
    """The attribute columns of a download, in order: the id, then the properties /items gives."""
    return (ID_COLUMN, *response_properties(spec))


def _field_type(spec: LayerSpec, name: str) -> FieldType:
    if name == ID_COLUMN:
        return FieldType.text
    field = spec.field(name)
    return field.type if field is not None else FieldType.timestamp  # valid_from / valid_to


def arrow_schema(spec: LayerSpec) -> pa.Schema:
    attributes = [pa.field(name, ARROW_TYPES[_field_type(spec, name)]) for name in columns(spec)]
    return pa.schema([*attributes, pa.field("geometry", pa.binary())])


def shapefile_names(spec: LayerSpec) -> dict[str, str]:
    """column -> DBF field name (at most 10 characters), the same for every download of the layer.

    A name that fits is kept; a longer one is cut to 10, and when that is taken, to 7 plus _NN.
    """
    found: dict[str, str] = {}
    taken: set[str] = set()
    for name in columns(spec):
        short = name[:SHAPEFILE_NAME_MAX]
        number = 1
        while short.lower() in taken:
            short = f"{name[:SHAPEFILE_NAME_MAX - 3]}_{number:02d}"
            number += 1
        found[name] = short
        taken.add(short.lower())
    return found


# -- the statement ---------------------------------------------------------------------------------------

def _text(spec: LayerSpec, name: str) -> sql.Composable:
    """A column as CSV text: dates and instants as in the GeoJSON (ISO 8601), the rest as PostgreSQL writes it."""
    column = sql.Identifier("fid" if name == ID_COLUMN else name)
    if _field_type(spec, name) in (FieldType.date, FieldType.timestamp):
        return sql.SQL("to_json(t.{}) #>> '{{}}'").format(column)
    return sql.SQL("t.{}").format(column)


def export_statement(spec: LayerSpec, q: ItemsQuery, fmt: Format) -> Statement:
    """The rows of a download, ordered by id: attribute columns, then the geometry (WKB, or WKT for CSV)."""
    params: dict[str, object] = {**time_params(spec, q.time)}
    if q.bbox is not None:
        params.update(bbox_params(q.bbox))
    predicates, caller = filter_predicates(spec, q, params)
    selected: list[sql.Composable]
    if fmt is Format.csv:
        selected = [sql.SQL("{} AS {}").format(_text(spec, n), sql.Identifier(n)) for n in columns(spec)]
        selected.append(sql.SQL("ST_AsText(t.geom) AS {}").format(sql.Identifier(WKT_COLUMN)))
    else:
        selected = [sql.SQL("t.fid"), *(sql.SQL("t.{}").format(sql.Identifier(n)) for n in columns(spec)[1:]),
                    sql.SQL("ST_AsBinary(t.geom)")]
    query = sql.SQL("SELECT {} FROM {} ORDER BY t.fid").format(sql.SQL(", ").join(selected),
                                                               source(spec, q.time, predicates, caller))
    if fmt is Format.csv:
        query = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(query)
    return Statement(query, params)


# -- CSV: PostgreSQL's COPY, passed through ----------------------------------------------------------------

UTF8_BOM = b"\xef\xbb\xbf"  # spreadsheet programs then read the Chinese text as UTF-8


async def csv_chunks(conn: AsyncConnection, statement: Statement) -> AsyncIterator[bytes]:
    """The CSV as it arrives from the server; the first chunk is the BOM and the header line."""
    # COPY takes no server-side parameters: psycopg merges the values in, quoted, on the client.
    async with conn.cursor() as cursor, cursor.copy(statement.query, statement.params or None) as copy:
        first = True
        async for chunk in copy:
            yield (UTF8_BOM + bytes(chunk)) if first else bytes(chunk)
            first = False


# -- file formats: a server-side cursor feeding GDAL through Arrow -----------------------------------------

@dataclass
class Written:
    path: Path  # the file to send (a zip for shapefiles)
    features: int
    workdir: Path  # delete when sent


Rows = list[tuple[object, ...]]


def _batch(schema: pa.Schema, rows: Rows) -> pa.RecordBatch:
    arrays = [pa.array(values, type=f.type) for values, f in zip(zip(*rows, strict=True), schema, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _reader(schema: pa.Schema, fetch: Callable[[], Rows], counter: list[int]) -> pa.RecordBatchReader:
    def batches() -> Iterator[pa.RecordBatch]:
        while rows := fetch():
            counter[0] += len(rows)
            yield _batch(schema, rows)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _write(spec: LayerSpec, fmt: Format, reader: pa.RecordBatchReader, path: Path) -> None:
    info = FORMATS[fmt]
    options: dict[str, object] = {}
    stream: pa.RecordBatchReader = reader
    if fmt is Format.shp:
        names = shapefile_names(spec)
        renamed = pa.schema([f.with_name(names.get(f.name, f.name)) for f in reader.schema])
        stream = pa.RecordBatchReader.from_batches(
            renamed, (pa.RecordBatch.from_arrays(b.columns, schema=renamed) for b in reader))
        options["encoding"] = "UTF-8"  # GDAL writes the .cpg
    write_arrow(stream, str(path), layer=spec.id, driver=info.driver, geometry_name="geometry",
                geometry_type=spec.geometry.value, crs=STORAGE_CRS, **options)


def _zip_shapefile(spec: LayerSpec, folder: Path, target: Path) -> None:
    names = shapefile_names(spec)
    listing = "column,shapefile_field\n" + "".join(f"{long},{short}\n" for long, short in names.items())
    # Level 1: most of the gain (DBF padding) for a fraction of the time of the default level.
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for part in sorted(folder.iterdir()):
            archive.write(part, part.name)
        archive.writestr(f"{spec.id}_fields.csv", listing)


async def write_file(conn: AsyncConnection, spec: LayerSpec, statement: Statement, fmt: Format,
                     batch_rows: int = BATCH_ROWS, scratch_dir: Path | None = None) -> Written:
    """Write the rows into a temporary file of the format (in `scratch_dir`, the temp_dir setting; None: the
    system's); the caller sends it and removes `workdir`."""
    workdir = Path(tempfile.mkdtemp(prefix=f"gis-download-{spec.id}-", dir=scratch_dir))
    loop = asyncio.get_running_loop()
    counter = [0]
    try:
        async with conn.transaction(), conn.cursor(name="download", binary=True) as cursor:
            cursor.itersize = batch_rows
            await cursor.execute(statement.query, statement.params)

            failures: list[BaseException] = []

            def fetch() -> Rows:
                # GDAL pulls from the writer thread; the fetch itself runs on the event loop's connection.
                try:
                    return asyncio.run_coroutine_threadsafe(cursor.fetchmany(batch_rows), loop).result()
                except BaseException as exc:
                    failures.append(exc)  # Arrow and GDAL wrap it; the caller gets the database's own error
                    raise

            reader = _reader(arrow_schema(spec), fetch, counter)
            folder = workdir / "shp" if fmt is Format.shp else workdir
            folder.mkdir(exist_ok=True)
            target = folder / f"{spec.id}.{'shp' if fmt is Format.shp else FORMATS[fmt].extension}"
            try:
                await asyncio.to_thread(_write, spec, fmt, reader, target)
            except Exception:
                if failures:
                    raise failures[0] from None
                raise
            path = target
            if fmt is Format.shp:
                path = workdir / f"{spec.id}.zip"
                await asyncio.to_thread(_zip_shapefile, spec, folder, path)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return Written(path, counter[0], workdir)


def filename(spec: LayerSpec, fmt: Format, day: date | datetime) -> str:
    """`pipelines-20261122.gpkg`: the layer and the day it was downloaded."""
    return f"{spec.id}-{day:%Y%m%d}.{FORMATS[fmt].extension}"

