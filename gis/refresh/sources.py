"""Reading a delivered file in batches: attributes as a DataFrame, geometries as a shapely array.

Batches keep memory flat however large the delivery is (a million pipe segments read as a stream).
"""

import hashlib
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyogrio
import shapely
from numpy.typing import NDArray

from gis.errors import SourceError
from gis.layers import SourceFormat, SourceSpec

BATCH_ROWS = 50_000  # with one read ahead and one in the COPY queue, a few batches in memory at once
# Files that make up one Shapefile delivery; all of them count for its checksum.
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


@dataclass(frozen=True)
class SourceBatch:
    first_row: int  # 1-based number of the batch's first feature in the delivery
    attributes: pd.DataFrame  # source column names
    geometries: NDArray[np.object_]  # in the source CRS; None where the row has none
    rows: NDArray[np.int64] | None = None  # each row's 1-based number, where not first_row onwards (sifted)
    sifted: Any = None  # what the sieve learnt of the batch's rows (read_batches)

    def row_numbers(self) -> NDArray[np.int64]:
        if self.rows is not None:
            return self.rows
        return np.arange(self.first_row, self.first_row + len(self.attributes), dtype=np.int64)


# Given a batch as GDAL's Arrow stream gives it and its row numbers: which rows to read on (None: all), and
# what it learnt of them, handed on with the batch (gis.refresh.memo).
type Sieve = Callable[[pa.RecordBatch, NDArray[np.int64]], tuple[NDArray[np.bool_] | None, Any]]


@dataclass(frozen=True)
class SourceInfo:
    path: Path
    feature_count: int
    columns: tuple[str, ...]
    checksum: str


def _files_of(path: Path, fmt: SourceFormat) -> list[Path]:
    if fmt is SourceFormat.shp:
        return [p for p in (path.with_suffix(s) for s in SHAPEFILE_PARTS) if p.is_file()]
    return [path]


def checksum(path: Path, fmt: SourceFormat) -> str:
    digest = hashlib.sha256()
    for part in _files_of(path, fmt):
        with part.open("rb") as stream:
            for block in iter(partial(stream.read, 1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def inspect(path: Path, spec: SourceSpec) -> SourceInfo:
    """Open the delivery far enough to know it is what it claims; SourceError otherwise."""
    if not path.is_file():
        raise SourceError(f"source file not found: {path}")
    if spec.format is SourceFormat.csv:
        try:
            header = pd.read_csv(path, nrows=0, encoding=spec.encoding or "utf-8")
            with path.open("rb") as stream:
                count = max(sum(1 for _ in stream) - 1, 0)
        except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise SourceError(f"{path}: not a readable CSV ({exc.__class__.__name__}: {exc})") from exc
        columns = tuple(header.columns)
    else:
        try:
            info = pyogrio.read_info(path, layer=spec.layer, encoding=spec.encoding)
        except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
            raise SourceError(f"{path}: not a readable {spec.format.value} file ({exc})") from exc
        count = int(info["features"])
        columns = tuple(info["fields"])
    return SourceInfo(path, count, columns, checksum(path, spec.format))


def _read_csv(path: Path, spec: SourceSpec) -> Iterator[SourceBatch]:
    assert spec.x and spec.y  # guaranteed by SourceSpec's validator
    first = 1
    # Everything as text: the layer's field types decide how to parse, and a bad value is a reject.
    chunks = pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=BATCH_ROWS,
                         encoding=spec.encoding or "utf-8")
    for chunk in chunks:
        chunk = chunk.replace("", None)
        if spec.x not in chunk.columns or spec.y not in chunk.columns:
            raise SourceError(f"{path}: coordinate columns '{spec.x}', '{spec.y}' missing")
        x = pd.to_numeric(chunk[spec.x], errors="coerce").to_numpy(float)
        y = pd.to_numeric(chunk[spec.y], errors="coerce").to_numpy(float)
        points = shapely.points(np.column_stack([x, y]))
        assert isinstance(points, np.ndarray)  # an array of coordinates gives an array of points
        points[np.isnan(x) | np.isnan(y)] = None
        yield SourceBatch(first, chunk.drop(columns=[spec.x, spec.y]).reset_index(drop=True), points)
        first += len(chunk)


def _read_ogr(path: Path, spec: SourceSpec, sieve: Sieve | None) -> Iterator[SourceBatch]:
    first = 1
    try:
        with pyogrio.open_arrow(
            path, layer=spec.layer, encoding=spec.encoding, batch_size=BATCH_ROWS, use_pyarrow=True
        ) as (meta, reader):
            geometry_column = meta["geometry_name"] or "wkb_geometry"
            for batch in reader:
                count, rows, sifted = len(batch), None, None
                if sieve is not None:  # before pandas and shapely, which then see only the rows kept
                    numbers = np.arange(first, first + count, dtype=np.int64)
                    keep, sifted = sieve(batch, numbers)
                    if keep is not None:
                        batch, rows = batch.filter(pa.array(keep)), numbers[keep]
                table = batch.to_pandas(date_as_object=True)
                wkb = table.pop(geometry_column).to_numpy(dtype=object) if geometry_column in table else None
                geometries = shapely.from_wkb(wkb, on_invalid="ignore") if wkb is not None \
                    else np.full(len(table), None, dtype=object)
                yield SourceBatch(first, table, geometries, rows, sifted)
                first += count
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise SourceError(f"{path}: cannot be read as {spec.format.value} ({exc})") from exc


def read_batches(path: Path, spec: SourceSpec, sieve: Sieve | None = None) -> Iterator[SourceBatch]:
    """The delivery's batches; a GDAL-read one first through `sieve`, in the reading thread (read_ahead)."""
    if spec.format is SourceFormat.csv:
        return _read_csv(path, spec)
    return _read_ogr(path, spec, sieve)


_DONE = object()


@contextmanager
def read_ahead(batches: Iterator[SourceBatch], depth: int = 2) -> Iterator[Iterator[SourceBatch]]:
    """The batches, read by a thread of their own up to `depth` ahead: GDAL reads (without the GIL) while the
    caller normalises the batch before. An error in the reader is raised in the caller; leaving early stops it."""
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the caller, raised there
            put(exc)
        finally:
            close = getattr(batches, "close", None)  # a generator's open file is closed here, in its thread
            if close is not None:
                close()

    def consume() -> Iterator[SourceBatch]:
        while (item := handoff.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield cast(SourceBatch, item)

    reader = threading.Thread(target=read, name="gis-refresh-read", daemon=True)
    reader.start()
    try:
        yield consume()
    finally:
        stop.set()
        reader.join()
