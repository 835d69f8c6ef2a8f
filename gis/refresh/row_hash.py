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
import struct
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import psycopg
import shapely
from psycopg import sql

from gis import identifiers as ids
from gis.layers import FieldType, LayerSpec

SCHEME = "gis-row-hash: sha256/8 over binary-send columns, v1"  # kept as the row_hash column's comment
_EPOCH_DAY = date(2000, 1, 1).toordinal()
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_NULL = b"\x00"
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

def _microseconds(value: Any) -> int:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise ValueError(f"a timestamp without a zone cannot be hashed: {value!r}")
    delta = stamp.tz_convert("UTC") - pd.Timestamp(_EPOCH)
    return round(delta.value / 1000)  # PostgreSQL keeps microseconds, rounding half to even (rint)


def _date_bytes(value: Any) -> bytes:
    day = value.date() if isinstance(value, datetime) else value
    return struct.pack(">i", day.toordinal() - _EPOCH_DAY)


_ENCODERS: dict[FieldType, Callable[[Any], bytes]] = {
    FieldType.text: lambda v: str(v).encode("utf-8"),
    FieldType.integer: lambda v: struct.pack(">i", int(v)),
    FieldType.bigint: lambda v: struct.pack(">q", int(v)),
    FieldType.real: lambda v: struct.pack(">d", float(v)),
    FieldType.boolean: lambda v: b"\x01" if v else b"\x00",
    FieldType.date: _date_bytes,
    FieldType.timestamp: lambda v: struct.pack(">q", _microseconds(v)),
}


def _framed(values: Iterable[bytes | None]) -> list[bytes]:
    return [_NULL if b is None else b"\x01" + len(b).to_bytes(4, "big") + b for b in values]


def _column(values: pd.Series, kind: FieldType | None) -> list[bytes]:
    if kind is None:  # shapely geometries
        return _framed(shapely.to_wkb(values.to_numpy(), output_dimension=2, byte_order=1, include_srid=False))
    encode = _ENCODERS[kind]
    present = values.notna().to_numpy()
    return _framed(encode(v) if ok else None for v, ok in zip(values.tolist(), present, strict=True))


def row_hashes(frame: pd.DataFrame, spec: LayerSpec) -> list[bytes]:
    """The hash of each row of `frame` (its canonical columns as the layer stores them; geom as shapely)."""
    encoded = [_column(frame[name], kind) for name, kind in columns(spec)]
    sha = hashlib.sha256
    return [sha(b"".join(parts)).digest()[:8] for parts in zip(*encoded, strict=True)]


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
