"""Streaming a delivery into PostgreSQL: one binary COPY, batch after batch, each row with its version hash.

Where rows go depends on the load mode. A first load into an empty layer copies straight into the
layer (its indexes are built once, after the load: gis.refresh.merge); every later load copies into a
scratch table that the merge compares with the layer. Rows travel as Arrow record batches encoded in
PostgreSQL's binary COPY format (pgpq): no value is formatted as text or parsed back, and the geometry goes as
the very WKB its hash was computed from. The COPY is written through a queue drained by psycopg's writer
thread, so PostgreSQL ingests one batch while Python reads and normalises the next.

A row's hash covers its canonical values (fid, fields, geometry and the validity the source gives) and is
computed from the same Arrow columns the COPY sends (gis.refresh.row_hash, the one the PostGIS edit trigger
computes in SQL too). A delivered row whose hash equals the layer's is counted and never sent, so a rerun of
the same delivery writes nothing; the comparison is one vectorised look-up per batch.
"""

from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd
import pgpq
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray
from psycopg import sql
from psycopg.copy import Copy, QueuedLibpqWriter

from gis import identifiers as ids
from gis.layers import LayerSpec
from gis.refresh import row_hash
from gis.refresh.normalise import NormalisedBatch, Rejects

DUPLICATE = "fid: appears more than once in the delivery"
_HASH = pa.binary(8)


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
    # geom typed as the layer's: the WKB sent carries no SRID, the column's type gives it.
    conn.execute(sql.SQL(
        "CREATE UNLOGGED TABLE {} (source_row integer NOT NULL, fid text, {}, geom {}, "
        "valid_from timestamptz, valid_to timestamptz, row_hash bytea NOT NULL)"
    ).format(ids.staging_table(spec), fields, ids.geometry_type(spec)))


def drop_staging(conn: psycopg.Connection, spec: LayerSpec) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ids.staging_table(spec)))


def copy_schema(spec: LayerSpec, mode: LoadMode) -> pa.Schema:
    """The COPY's columns, in order, with the Arrow type whose binary form the PostgreSQL column takes."""
    canonical = [pa.field(name, row_hash.GEOMETRY_TYPE if kind is None else row_hash.ARROW_TYPES[kind])
                 for name, kind in row_hash.columns(spec)]
    if mode is LoadMode.merge:
        return pa.schema([pa.field("source_row", pa.int32()), *canonical, pa.field("row_hash", pa.binary())])
    return pa.schema([*canonical, pa.field("row_hash", pa.binary()), pa.field("refresh_id", pa.int64())])


class BinaryCopy:
    """A COPY ... (FORMAT binary) fed with Arrow record batches of copy_schema."""

    def __init__(self, copy: Copy, schema: pa.Schema) -> None:
        self._copy = copy
        self._encoder = pgpq.ArrowToPostgresBinaryEncoder(schema)
        copy.write(bytes(self._encoder.write_header()))

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._copy.write(bytes(self._encoder.write_batch(batch)))

    def finish(self) -> None:
        self._copy.write(bytes(self._encoder.finish()))


@contextmanager
def copy_stream(conn: psycopg.Connection, spec: LayerSpec, mode: LoadMode,
                freeze: bool = False) -> Iterator[BinaryCopy]:
    """`freeze`: the table was truncated in this transaction (merge.begin_first_load), its rows go in frozen."""
    table = ids.staging_table(spec) if mode is LoadMode.merge else ids.current_table(spec)
    schema = copy_schema(spec, mode)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary{})").format(
        table, sql.SQL(", ").join(sql.Identifier(n) for n in schema.names), sql.SQL(", FREEZE" if freeze else ""))
    cursor = conn.cursor()
    with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
        stream = BinaryCopy(copy, schema)
        yield stream
        stream.finish()


@dataclass(frozen=True)
class CurrentRows:
    """The layer's current versions as a delivery is compared with them: fid -> row hash (as an integer)."""

    fids: pd.Index
    hashes: NDArray[np.uint64]
    # The source hashes the layer's memo vouches for, and the position of the current row each vouches for
    # (gis.refresh.memo.vouch).
    by_source: pd.Index | None = None
    source_at: NDArray[np.intp] | None = None
    arrow: Any = None  # the fids as an Arrow string array, where they came as one (merge.current_rows)

    def arrow_fids(self) -> Any:
        return self.arrow if self.arrow is not None else pa.array(self.fids.to_numpy(), type=pa.string())

    @staticmethod
    def empty() -> "CurrentRows":
        return CurrentRows(pd.Index([], dtype=object), np.zeros(0, dtype=np.uint64))

    def positions(self, fids: "pd.Series[Any]") -> NDArray[np.intp]:
        """Each fid's position among the current rows, -1 where the layer has none."""
        if not len(self.fids):
            return np.full(len(fids), -1, dtype=np.intp)
        return self.fids.get_indexer(pd.Index(fids.astype(object)))

    def compare(self, fids: "pd.Series[Any]", digests: bytes) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        """Each row's position among the current rows (-1: none), and whether its hash equals that row's."""
        positions = self.positions(fids)
        known = positions >= 0
        stored = np.zeros(len(fids), dtype=np.uint64)
        stored[known] = self.hashes[positions[known]]
        return positions, known & (stored == as_integers(digests))


def as_integers(digests: bytes) -> NDArray[np.uint64]:
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


@dataclass
class Delivery:
    """What streaming a delivery learns: the fids seen, and how many rows equal the layer's current ones.

    The layer's current rows may still be on their way (a Future, fetched on another connection while the first
    batches are read and normalised): the first comparison waits for them.
    """

    known: "CurrentRows | Future[CurrentRows]"
    # Layers whose source gives valid_from: the time a row delivered without it starts (the refresh transaction's
    # now()), and fid -> the start of each current row (merge.current_starts).
    delivered_at: datetime | None = None
    starts: dict[str, datetime] = field(default_factory=dict)
    fids: list[row_hash.Column] = field(default_factory=list)  # every accepted row's fid, batch by batch
    rows: list[NDArray[np.int64]] = field(default_factory=list)  # ... and its source row
    hashes: list[NDArray[np.uint64]] = field(default_factory=list)  # ... and its row hash
    sources: list[NDArray[np.uint64]] = field(default_factory=list)  # ... and its source hash (gis.refresh.memo)
    unchanged: int = 0
    sent: int = 0
    vouched: int = 0  # rows counted unchanged on the memo's word (take_vouched)

    _seen: NDArray[np.bool_] | None = field(init=False, default=None)

    @property
    def current(self) -> CurrentRows:
        if isinstance(self.known, Future):
            self.known = self.known.result()
        return self.known

    @property
    def seen(self) -> NDArray[np.bool_]:
        """Per current row: whether the delivery has its fid."""
        if self._seen is None:
            self._seen = np.zeros(len(self.current.fids), dtype=bool)
        return self._seen

    def take_vouched(self, at: NDArray[np.intp], rows: NDArray[np.int64], sources: NDArray[np.uint64]) -> None:
        """Rows the memo vouches for (gis.refresh.memo.Sieve): the current rows at `at` delivered again as they
        are, so counted unchanged (as record_batch would count them) without being normalised."""
        if not len(at):
            return
        current = self.current
        self.seen[at] = True
        self.fids.append(current.arrow_fids().take(pa.array(at)).cast(pa.string()))
        self.rows.append(rows)
        self.hashes.append(current.hashes[at])
        self.sources.append(sources)
        self.unchanged += len(at)
        self.vouched += len(at)

    @property
    def accepted(self) -> int:
        return sum(len(rows) for rows in self.rows)

    def gone(self) -> list[str]:
        """Current fids the delivery no longer has."""
        return [str(fid) for fid in self.current.fids[~self.seen]]

    def reject_duplicates(self, rejects: Rejects) -> None:
        """A fid delivered more than once rejects every row that has it."""
        if not self.fids:
            return
        fids = pa.chunked_array(self.fids, type=pa.string())
        counts = pc.value_counts(fids)
        repeated = counts.field("values").filter(pc.greater(counts.field("counts"), pa.scalar(1)))
        if not len(repeated):
            return
        rows = np.concatenate(self.rows)
        for position in np.flatnonzero(pc.is_in(fids, value_set=repeated).to_numpy(zero_copy_only=False)):
            rejects.add(int(rows[position]), fids[int(position)].as_py(), DUPLICATE)


def _arrow_columns(batch: NormalisedBatch, spec: LayerSpec) -> list[row_hash.Column]:
    return [row_hash.arrow_column(batch.geometries if kind is None else batch.frame[name], kind)
            for name, kind in row_hash.columns(spec)]


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
    kept_batch = NormalisedBatch(batch.first_row, frame, batch.geometries, batch.rows)
    _, same = delivery.current.compare(frame["fid"], row_hash.digests(_arrow_columns(kept_batch, spec)))
    frame.loc[missing & ~same, "valid_from"] = delivery.delivered_at
    frame["valid_from"] = pd.to_datetime(frame["valid_from"], utc=True)
    return NormalisedBatch(batch.first_row, frame, batch.geometries, batch.rows)


def record_batch(batch: NormalisedBatch, spec: LayerSpec, mode: LoadMode, refresh_id: int, skip: np.ndarray,
                 delivery: Delivery) -> pa.RecordBatch:
    """The batch's rows for copy_stream: new and changed ones only (an unchanged row is counted, not sent).

    Rows already rejected (`skip`) are left out; duplicate fids are found once the whole delivery is read
    (Delivery.reject_duplicates).
    """
    batch = with_starts(batch, spec, delivery)
    frame = batch.frame
    arrays = _arrow_columns(batch, spec)
    digests = row_hash.digests(arrays)
    accepted = ~skip
    positions, same = delivery.current.compare(frame["fid"], digests)
    same &= accepted
    delivery.seen[positions[accepted & (positions >= 0)]] = True
    delivery.fids.append(arrays[0].filter(pa.array(accepted)))
    delivery.rows.append(batch.row_numbers()[accepted])
    delivery.hashes.append(as_integers(digests)[accepted])
    delivery.unchanged += int(same.sum())
    send = accepted & ~same
    delivery.sent += int(send.sum())
    hashes = pa.Array.from_buffers(_HASH, len(frame), [None, pa.py_buffer(digests)]).cast(pa.binary())
    if mode is LoadMode.merge:
        source_rows = pa.array(batch.row_numbers().astype(np.int32))
        columns = [source_rows, *arrays, hashes]
    else:
        columns = [*arrays, hashes, pa.array(np.full(len(frame), refresh_id, dtype=np.int64))]
    return pa.RecordBatch.from_arrays(columns, schema=copy_schema(spec, mode)).filter(pa.array(send))


def row_hashes(batch: NormalisedBatch, spec: LayerSpec) -> list[bytes]:
    """Each row's version hash (gis.refresh.row_hash; the same as the edit trigger's in SQL)."""
    frame = batch.frame[[c for c in canonical_columns(spec) if c != "geom"]].copy()
    frame["geom"] = batch.geometries
    return row_hash.row_hashes(frame, spec)
