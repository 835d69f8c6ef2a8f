"""Streaming a delivery into PostgreSQL: one COPY, batch after batch, each row with its version hash.

Where rows go depends on the load mode. A first load into an empty layer copies straight into the
layer (one write, one GiST build at the end); every later load copies into a scratch table that the
merge compares with the layer. The COPY is written through a queue drained by psycopg's writer
thread, so PostgreSQL ingests one batch while Python normalises the next.

A row's hash covers its canonical values (fid, fields, geometry and the validity the source gives) and is
computed before any CSV is written: rows whose hash equals the layer's are counted and never formatted or
sent, so a rerun of the same delivery writes nothing. The hash is gis.refresh.row_hash's, the one the PostGIS
edit trigger computes in SQL too.
"""

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg import sql
from psycopg.copy import Copy, QueuedLibpqWriter

from gis import identifiers as ids
from gis.layers import LayerSpec
from gis.refresh import row_hash
from gis.refresh.normalise import NormalisedBatch, Rejects

DUPLICATE = "fid: appears more than once in the delivery"
# Ends each canonical record, so the batch's CSV text splits into rows even where a value holds a newline.
_RECORD_END = "\x1e"


class LoadMode(Enum):
    first_load = "first_load"  # the layer is empty: rows go straight into it
    merge = "merge"  # rows go to staging and are compared with the layer


def canonical_columns(spec: LayerSpec) -> list[str]:
    """What a version is made of: the validity columns only where the source gives them."""
    names = ["fid", *spec.field_names, "geom"]
    if spec.source.valid_from:
        names.append("valid_from")
    if spec.source.valid_to:
        names.append("valid_to")
    return names


def create_staging(conn: psycopg.Connection, spec: LayerSpec) -> None:
    fields = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(f.name), ids.pg_type(f.type)) for f in spec.fields
    )
    drop_staging(conn, spec)
    conn.execute(sql.SQL(
        "CREATE UNLOGGED TABLE {} (source_row integer NOT NULL, fid text, {}, geom geometry, "
        "valid_from timestamptz, valid_to timestamptz, row_hash bytea NOT NULL)"
    ).format(ids.staging_table(spec), fields))


def drop_staging(conn: psycopg.Connection, spec: LayerSpec) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ids.staging_table(spec)))


@contextmanager
def copy_stream(conn: psycopg.Connection, spec: LayerSpec, mode: LoadMode) -> Iterator[Copy]:
    if mode is LoadMode.merge:
        table, names = ids.staging_table(spec), ["source_row", *canonical_columns(spec), "row_hash"]
    else:
        table, names = ids.current_table(spec), [*canonical_columns(spec), "row_hash", "refresh_id"]
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        table, sql.SQL(", ").join(sql.Identifier(n) for n in names))
    cursor = conn.cursor()
    with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
        yield copy


def canonical_frame(batch: NormalisedBatch, spec: LayerSpec) -> pd.DataFrame:
    frame = batch.frame[["fid", *spec.field_names]].copy()
    frame["geom"] = shapely.to_wkb(shapely.set_srid(batch.geometries, spec.srid), hex=True, include_srid=True)
    for name in canonical_columns(spec)[len(spec.field_names) + 2:]:
        frame[name] = batch.frame[name]
    return frame


def row_hashes(batch: NormalisedBatch, spec: LayerSpec) -> list[bytes]:
    """Each row's version hash (gis.refresh.row_hash; the same as the edit trigger's in SQL).

    64 bits suffice: a hash only has to tell a row's new version from its old one, and the chance that
    a change keeps the hash is 2^-64 per changed row.
    """
    frame = batch.frame[[c for c in canonical_columns(spec) if c != "geom"]].copy()
    frame["geom"] = batch.geometries
    return row_hash.row_hashes(frame, spec)


def _csv_lines(frame: pd.DataFrame) -> list[str]:
    text = frame.to_csv(header=False, index=False, lineterminator=_RECORD_END, quoting=csv.QUOTE_MINIMAL)
    return text.split(_RECORD_END)[:-1]


@dataclass
class Delivery:
    """What streaming a delivery learns: the fids seen, and how many rows equal the layer's current ones."""

    current: dict[str, bytes]  # fid -> row hash of the layer's current rows (empty for a first load)
    seen: dict[str, int] = field(default_factory=dict)  # fid -> its first source row
    # Layers whose source gives valid_from: the time a row delivered without it starts (the refresh transaction's
    # now()), and fid -> the start of each current row (merge.current_starts).
    delivered_at: datetime | None = None
    starts: dict[str, datetime] = field(default_factory=dict)
    unchanged: int = 0
    sent: int = 0

    def gone(self) -> list[str]:
        """Current fids the delivery no longer has."""
        return [fid for fid in self.current if fid not in self.seen]


def with_starts(batch: NormalisedBatch, spec: LayerSpec, delivery: Delivery) -> NormalisedBatch:
    """The batch with an empty valid_from filled as it will be stored, so the row is hashed over what the layer
    keeps and the SQL hash of the stored row (the edit trigger's, `gis migrate`'s) is the same: a row otherwise
    equal to its current version keeps that version's start (nothing new was delivered); any other starts at the
    delivery time."""
    if not spec.source.valid_from:
        return batch
    missing = batch.frame["valid_from"].isna().to_numpy()
    if not missing.any():
        return batch
    if delivery.delivered_at is None:
        raise ValueError("a delivery of a layer with source-given validity needs its delivery time")
    frame = batch.frame.copy()
    kept = frame["fid"].map(delivery.starts)
    frame["valid_from"] = frame["valid_from"].astype(object)
    frame.loc[missing, "valid_from"] = kept[missing]
    hashes = row_hashes(NormalisedBatch(batch.first_row, frame, batch.geometries), spec)
    same = np.array([delivery.current.get(fid) == h for fid, h in zip(frame["fid"].tolist(), hashes, strict=True)],
                    dtype=bool)
    frame.loc[missing & ~same, "valid_from"] = delivery.delivered_at
    frame["valid_from"] = pd.to_datetime(frame["valid_from"], utc=True)
    return NormalisedBatch(batch.first_row, frame, batch.geometries)


def csv_rows(batch: NormalisedBatch, spec: LayerSpec, mode: LoadMode, refresh_id: int, skip: np.ndarray,
             delivery: Delivery, rejects: Rejects) -> str:
    """The batch's rows for copy_stream: new and changed ones only (an unchanged row is counted, not sent).

    Rows already rejected (`skip`) are left out; a fid seen twice rejects both rows.
    """
    batch = with_starts(batch, spec, delivery)
    frame = canonical_frame(batch, spec)
    hashes = row_hashes(batch, spec)
    send = np.zeros(len(frame), dtype=bool)
    for position, fid in enumerate(frame["fid"].tolist()):
        if skip[position]:
            continue
        row = batch.first_row + position
        first = delivery.seen.setdefault(fid, row)
        if first != row:
            rejects.add(first, fid, DUPLICATE)
            rejects.add(row, fid, DUPLICATE)
        elif delivery.current.get(fid) == hashes[position]:
            delivery.unchanged += 1
        else:
            send[position] = True
    positions = np.flatnonzero(send)
    delivery.sent += len(positions)
    if not len(positions):
        return ""
    buffer = io.StringIO()
    for sent, line in zip(positions.tolist(), _csv_lines(frame.iloc[positions]), strict=True):
        digest = hashes[sent].hex()
        if mode is LoadMode.merge:
            buffer.write(f"{batch.first_row + sent},{line},\\x{digest}\n")
        else:
            buffer.write(f"{line},\\x{digest},{refresh_id}\n")
    return buffer.getvalue()
