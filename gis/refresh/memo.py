"""What a refresh remembers of each delivered row, so the next refresh need not normalise it again.

Normalising a row (parsing, reprojecting, repairing, hashing: gis.refresh.normalise, row_hash) is a function of
that row's source values, the layer file, the city extent and the code and libraries that do it. A refresh
records, per accepted row, its fid, a hash of its source values (as GDAL's Arrow stream gives them) and the row
hash normalising gave. The next refresh hashes each delivered row's source values (a few vectorised steps, no
parsing) and counts a row unchanged without normalising it when the memo has the same source hash for its fid
and the layer's current version of that fid still has the memo's row hash: normalising it would give that
hash again, which equals the current one. Any other row (new, changed, edited since, or a memo made under
another key) is normalised and compared as before, so the result is the same with or without a memo.

The memo is one Arrow IPC stream per layer in ops.refresh_memo (migration 038), replaced by each refresh on a
connection of its own while the refresh builds its indexes or merges. An entry is a fact about normalising,
true whether or not the refresh that wrote it committed: a failed refresh's memo only vouches for rows whose
current version has the hash it names.
"""

import dataclasses
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyogrio
import pyproj
import shapely
from numpy.typing import NDArray

from gis.layers import FieldType, LayerSpec
from gis.refresh import normalise, row_hash, staging, validate

# The code a row's normalising runs through: a change to any of these files is a new key.
_CODE = (normalise, row_hash, staging, validate, sys.modules[__name__])


def memo_key(spec: LayerSpec, city_extent: validate.Extent) -> str:
    """What normalising depends on besides the row: the layer file, the extent, the code and the libraries."""
    from gis import crs

    digest = hashlib.sha256()
    parts = [spec.model_dump_json(), repr(tuple(city_extent)), shapely.geos_version_string, pyproj.__version__,
             pyproj.proj_version_str, pyogrio.__gdal_version_string__, pd.__version__, pa.__version__,
             version("polars")]
    parts += [Path(str(module.__file__)).read_text(encoding="utf-8") for module in (*_CODE, crs)]
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def applies(spec: LayerSpec, columns: dict[str, str], schema: pa.Schema) -> bool:
    """Whether a row's normalising depends on that row alone, so a memo may vouch for it. Not where a missing
    start is filled from the stored version (staging.with_starts), nor where a text field comes as floating point
    (normalise.as_text writes whole numbers without ".0" only when the whole batch is whole)."""
    if spec.source.valid_from:
        return False
    texts = {"fid"} | {f.name for f in spec.fields if f.type is FieldType.text}
    return not any(pa.types.is_floating(schema.field(columns[name]).type) for name in texts
                   if schema.get_field_index(columns[name]) >= 0)


def source_hashes(raw: pa.RecordBatch) -> NDArray[np.uint64] | None:
    """A 64-bit hash of each row's source values (polars' row hash, which keeps column boundaries and NULL
    apart from empty), the columns' names and types mixed into its seed; None where polars cannot take a
    column (those rows are then normalised, as without a memo)."""
    import polars as pl  # here, in the reading thread, while the refresh's own thread starts (0.3 s)

    seed = int.from_bytes(hashlib.sha256(raw.schema.to_string(show_schema_metadata=False).encode()).digest()[:8])
    columns: list[Any] = list(raw.columns)
    plain = [c.storage if isinstance(c.type, pa.ExtensionType) else c for c in columns]
    try:
        frame = pl.from_arrow(pa.RecordBatch.from_arrays(plain, names=raw.schema.names))
        assert isinstance(frame, pl.DataFrame)
        return np.asarray(frame.hash_rows(seed=seed).to_numpy(), dtype=np.uint64)
    except (pl.exceptions.PolarsError, pa.ArrowException, TypeError, ValueError):
        return None


def _encode(fids: Any, sources: NDArray[np.uint64], hashes: NDArray[np.uint64]) -> memoryview:
    table = pa.table({"fid": fids, "source": pa.array(sources), "row_hash": pa.array(hashes)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return memoryview(sink.getvalue())


def save(url: str, spec: LayerSpec, key: str, delivery: staging.Delivery) -> None:
    """The delivery's rows as the layer's memo, on a connection of its own; nothing to do when the memo vouched
    for every row it has and for every row delivered (it would be written again as it is). A memo is a speed-up
    only: a failure to save it is told, and the refresh stands."""
    current = delivery.current
    if current.by_source is not None and delivery.vouched == delivery.accepted == len(current.by_source):
        return
    fids = pa.chunked_array(delivery.fids, type=pa.string())
    data = _encode(fids, np.concatenate(delivery.sources), np.concatenate(delivery.hashes))
    try:
        with psycopg.connect(url, autocommit=True, application_name=f"gis-refresh:{spec.id}:memo") as conn:
            conn.execute(
                "INSERT INTO ops.refresh_memo (layer_id, memo_key, rows, data) VALUES (%s, %s, %s, %b) "
                "ON CONFLICT (layer_id) DO UPDATE SET memo_key = excluded.memo_key, rows = excluded.rows, "
                "data = excluded.data, saved_at = now()", (spec.id, key, len(fids), data))
    except psycopg.Error as exc:
        print(f"gis: refresh {spec.id}: its memo for the next refresh was not saved ({exc})", file=sys.stderr)


def vouch(conn: psycopg.Connection, spec: LayerSpec, key: str, current: staging.CurrentRows) -> staging.CurrentRows:
    """The current rows with the memo's source hashes that vouch for them: those of the memo saved under `key`
    whose fid has a current version with the row hash the memo names, each with that row's position."""
    row = conn.execute("SELECT data FROM ops.refresh_memo WHERE layer_id = %s AND memo_key = %s",
                       (spec.id, key), binary=True).fetchone()
    if row is None or not len(current.fids):
        return current
    table = pa.ipc.open_stream(bytes(row[0])).read_all()
    # In Arrow, without the GIL or a Python string per fid: where each memo fid is among the current rows.
    found = pc.index_in(table.column("fid"), value_set=current.arrow_fids()).to_numpy(zero_copy_only=False)
    known = ~np.isnan(found) if found.dtype.kind == "f" else np.ones(len(found), dtype=bool)
    at = found[known].astype(np.intp)
    same = current.hashes[at] == table.column("row_hash").to_numpy()[known]
    keys, at = table.column("source").to_numpy()[known][same], at[same]
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    single = first[counts == 1]  # a source hash twice (never from one delivery) vouches for neither
    return dataclasses.replace(current, by_source=pd.Index(keys[single]), source_at=at[single])


@dataclass(frozen=True)
class Sifted:
    """What the sieve learnt of one batch: the source hashes of the rows read on, and the rows the memo vouches
    for (their positions among the current rows, their row numbers, their source hashes)."""

    kept: NDArray[np.uint64]
    at: NDArray[np.intp]
    rows: NDArray[np.int64]
    sources: NDArray[np.uint64]


class Sieve:
    """Runs in the reading thread (sources.read_batches), before a batch becomes pandas and shapely: hashes each
    row's source values and sets apart the rows the memo vouches for, which are then never converted."""

    def __init__(self, spec: LayerSpec, columns: dict[str, str], current: Callable[[], staging.CurrentRows]) -> None:
        self._spec, self._columns, self._current = spec, columns, current
        self.recording: bool | None = None  # whether every batch's rows were hashed (the memo can be saved)

    def __call__(self, raw: pa.RecordBatch, rows: NDArray[np.int64]) -> tuple[NDArray[np.bool_] | None, Any]:
        if self.recording is None:
            self.recording = applies(self._spec, self._columns, raw.schema)
        hashed = source_hashes(raw) if self.recording else None
        if hashed is None:
            self.recording = False
            return None, None
        current = self._current()
        none = np.zeros(0, dtype=np.intp)
        if current.by_source is None or current.source_at is None:
            return None, Sifted(hashed, none, rows[:0], hashed[:0])
        found = current.by_source.get_indexer(pd.Index(hashed))
        vouched = found >= 0
        if not vouched.any():
            return None, Sifted(hashed, none, rows[:0], hashed[:0])
        return ~vouched, Sifted(hashed[~vouched], current.source_at[found[vouched]], rows[vouched], hashed[vouched])
