"""A version's row hash: one definition, computed in Python (refreshes, API edits) and in SQL (the PostGIS edit
trigger of QGIS edits, and `gis migrate` for rows hashed before it).

A refresh leaves a row alone when the delivered row's hash equals the stored one, so every writer must hash a
version alike, or a later delivery of the same content rewrites a feature edited elsewhere as a new version.
The hash is the first 8 bytes of SHA-256 over the version's canonical columns (staging.canonical_columns: fid,
the fields, the geometry, and the validity where the source gives it), each column as
    0x00                                 NULL
    0x01, length (4 bytes, big-endian), its bytes
with the bytes PostgreSQL's own binary send functions give, which Python reproduces exactly:
    text               UTF-8                         convert_to(x, 'UTF8')
    integer / bigint   4 / 8 bytes, big-endian       int4send / int8send
    real               IEEE 754 double, big-endian   float8send
    boolean            1 byte                        boolsend
    date               days since 2000-01-01, int4   date_send
    timestamp          microseconds since 2000-01-01 00:00 UTC, int8   timestamptz_send
    geometry           2D WKB, little-endian, no SRID (the layer fixes it)   ST_AsBinary(x, 'NDR')
No text form of a number or a time enters it, so no formatting difference can.
"""

import hashlib
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, cast

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from numpy.typing import NDArray
from psycopg import sql

from gis import identifiers as ids
from gis.layers import FieldType, LayerSpec

SCHEME = "gis-row-hash: sha256/8 over binary-send columns, v1"  # kept as the row_hash column's comment
_SEND = {
    FieldType.text: "convert_to({}, 'UTF8')",
    FieldType.integer: "int4send({})",
    FieldType.bigint: "int8send({})",
    FieldType.real: "float8send({})",
    FieldType.boolean: "boolsend({})",
    FieldType.date: "date_send({})",
    FieldType.timestamp: "timestamptz_send({})",
}
_GEOMETRY = "ST_AsBinary({}, 'NDR')"


def columns(spec: LayerSpec) -> list[tuple[str, FieldType | None]]:
    """(column, type) of what a version is made of, in hash order; type None is the geometry."""
    from gis.refresh.staging import canonical_columns  # staging imports this module

    types = {f.name: f.type for f in spec.fields}
    types.update(fid=FieldType.text, valid_from=FieldType.timestamp, valid_to=FieldType.timestamp)
    return [(name, types.get(name)) for name in canonical_columns(spec)]


# -- Python --------------------------------------------------------------------------------------------
# Column by column over Arrow arrays: each column becomes its framed bytes in a few vectorised steps, the
# columns are joined row by row in Arrow, and only SHA-256 itself runs once per row. The same typed arrays
# are what the refresh's binary COPY sends (gis.refresh.staging), so a value is converted once.

_EPOCH_US_1970 = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970
_EPOCH_DAYS_1970 = 10_957  # 2000-01-01 in days since 1970
# The Arrow type whose binary form each field type's PostgreSQL column takes (also the downloads' columns).
ARROW_TYPES: dict[FieldType, pa.DataType] = {
    FieldType.text: pa.string(),
    FieldType.integer: pa.int32(),
    FieldType.bigint: pa.int64(),
    FieldType.real: pa.float64(),
    FieldType.boolean: pa.bool_(),
    FieldType.date: pa.date32(),
    FieldType.timestamp: pa.timestamp("us", tz="UTC"),
}
type Column = pa.Array[Any]  # one column of a batch, as Arrow
GEOMETRY_TYPE = pa.binary()  # 2D WKB, little-endian, no SRID (the typed column gives it)


def _microseconds(value: Any) -> int:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise ValueError(f"a timestamp without a zone cannot be hashed: {value!r}")
    return round(stamp.tz_convert("UTC").value / 1000)  # PostgreSQL keeps microseconds, rounding half to even


def _day(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value


def _plain_array(values: "pd.Series[Any]", kind: pa.DataType) -> Column:
    """An Arrow array of `kind` from a pandas series (its own Arrow data where it has some)."""
    array: Any = pa.array(values.array, from_pandas=True)  # pandas' own Arrow data, where it has some
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return cast("Column", array.cast(kind))


def arrow_column(values: "pd.Series[Any] | NDArray[np.object_]", kind: FieldType | None) -> Column:
    """A canonical column as the Arrow type its PostgreSQL column takes; kind None: shapely geometries."""
    if kind is None:
        wkb = shapely.to_wkb(np.asarray(values, dtype=object), output_dimension=2, byte_order=1, include_srid=False)
        return pa.array(wkb, type=GEOMETRY_TYPE, from_pandas=True)
    assert isinstance(values, pd.Series)
    present = values.notna().to_numpy()
    if kind is FieldType.timestamp:
        micros = [_microseconds(v) if ok else 0 for v, ok in zip(values.tolist(), present, strict=True)]
        return pa.array(micros, type=pa.int64(), mask=~present).cast(ARROW_TYPES[kind])
    if kind is FieldType.date:
        days = [_day(v) if ok else None for v, ok in zip(values.tolist(), present, strict=True)]
        return pa.array(days, type=pa.date32())
    if kind is FieldType.text:
        values = values.astype(pd.StringDtype("pyarrow"))  # what is not text yet as str() writes it
    elif kind is FieldType.boolean:
        values = values.astype("boolean")
    return _plain_array(values, ARROW_TYPES[kind])


def _from_fixed(raw: NDArray[np.uint8], present: NDArray[np.bool_]) -> Column:
    """Rows of `raw` (n × width bytes) as a binary array, null where not present."""
    n, width = raw.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    validity = pa.py_buffer(np.packbits(present, bitorder="little"))
    return pa.Array.from_buffers(pa.binary(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(raw.tobytes())])


def _send_bytes(array: Column) -> Column:
    """Each value as PostgreSQL's binary send function gives it (see the table above), null where NULL."""
    kind = array.type
    if pa.types.is_binary(kind):
        return array
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return array.cast(pa.binary())
    present = array.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_timestamp(kind):
        numbers = array.cast(pa.int64()).fill_null(0).to_numpy() - _EPOCH_US_1970
        wire = ">i8"
    elif pa.types.is_date32(kind):
        numbers = array.cast(pa.int32()).fill_null(0).to_numpy() - _EPOCH_DAYS_1970
        wire = ">i4"
    elif pa.types.is_boolean(kind):
        numbers, wire = array.fill_null(False).to_numpy(zero_copy_only=False), "u1"
    else:
        numbers, wire = array.fill_null(0).to_numpy(), {pa.int32(): ">i4", pa.int64(): ">i8", pa.float64(): ">f8"}[kind]
    raw = np.ascontiguousarray(numbers.astype(wire)).view(np.uint8).reshape(len(array), -1)
    return _from_fixed(raw, present)


def _framed(values: Column) -> list[Column]:
    """NULL as 0x00; a value as 0x01, its length (4 bytes, big-endian), its bytes: a prefix and the value."""
    n = len(values)
    present = values.is_valid().to_numpy(zero_copy_only=False)
    head = np.zeros((n, 5), dtype=np.uint8)
    head[:, 0] = present
    lengths = pc.binary_length(values).fill_null(0).to_numpy().astype(">u4")  # type: ignore[call-overload]
    head[:, 1:] = lengths.view(np.uint8).reshape(n, 4)
    keep = np.ones((n, 5), dtype=bool)
    keep[~present, 1:] = False
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.where(present, 5, 1), out=offsets[1:])
    prefix = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(head[keep].tobytes())])
    return [prefix, values.fill_null(b"")]


def digests(arrays: Sequence[Column]) -> bytes:
    """The rows' hashes, 8 bytes each, concatenated: `arrays` are the canonical columns in hash order, typed as
    arrow_column makes them."""
    if not len(arrays[0]):
        return b""
    parts = [part for array in arrays for part in _framed(_send_bytes(array))]
    joined = pc.binary_join_element_wise(*parts, b"")  # type: ignore[call-overload]
    sha = hashlib.sha256
    return b"".join([sha(row).digest()[:8] for row in joined.to_pylist()])


def row_hashes(frame: pd.DataFrame, spec: LayerSpec) -> list[bytes]:
    """The hash of each row of `frame` (its canonical columns as the layer stores them; geom as shapely)."""
    joined = digests([arrow_column(frame[name], kind) for name, kind in columns(spec)])
    return [joined[i:i + 8] for i in range(0, len(joined), 8)]


# -- SQL -----------------------------------------------------------------------------------------------

def hash_sql(spec: LayerSpec, row: str | None = None) -> sql.Composable:
    """The same hash as an SQL expression over the columns of `row` (e.g. NEW in a trigger), else unqualified."""
    parts: list[sql.Composable] = []
    for name, kind in columns(spec):
        column = sql.Identifier(row, name) if row else sql.Identifier(name)
        value = sql.SQL(_GEOMETRY if kind is None else _SEND[kind]).format(column)
        parts.append(sql.SQL("coalesce('\\x01'::bytea || int4send(octet_length({v})) || {v}, '\\x00'::bytea)")
                     .format(v=value))
    return sql.SQL("substring(sha256({}) FROM 1 FOR 8)").format(sql.SQL(" || ").join(parts))


def ensure_hashed(conn: psycopg.Connection, spec: LayerSpec) -> int:
    """Rehash the layer's stored versions if they were hashed by another scheme or over other columns (a field
    added since): the row_hash column's comment names both. The number of rows rewritten; a no-op once done."""
    done = 0
    marker = f"{SCHEME} over {', '.join(name for name, _ in columns(spec))}"
    for table, name in ((ids.current_table(spec), spec.id), (ids.history_table(spec), spec.history_table)):
        row = conn.execute("SELECT col_description(c.oid, a.attnum) FROM pg_class c "
                           "JOIN pg_namespace n ON n.oid = c.relnamespace "
                           "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'row_hash' "
                           "WHERE n.nspname = %s AND c.relname = %s", (spec.domain.value, name)).fetchone()
        if row is None or row[0] == marker:
            continue
        # As the tables' owner: the QGIS edit trigger does not fire for it, so rehashing makes no versions.
        done += conn.execute(sql.SQL("UPDATE {} SET row_hash = {} WHERE row_hash IS DISTINCT FROM {}").format(
            table, hash_sql(spec), hash_sql(spec))).rowcount
        conn.execute(sql.SQL("COMMENT ON COLUMN {}.row_hash IS {}").format(table, sql.Literal(marker)))
    return done
