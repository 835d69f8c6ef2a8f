"""One refresh job: read → normalise → validate → stage → merge, all or nothing.

Everything from staging to the log row happens in one transaction: a failure, or a job killed half
way, leaves the served layer exactly as it was, and the next run starts clean.
"""

import csv
import hashlib
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from tqdm import tqdm

from gis.crs import parse_crs
from gis.edits import conflicts
from gis.errors import GisError, SourceError, ValidationFailed
from gis.layers import LayerSpec
from gis.refresh import memo, merge, record, sources, staging
from gis.refresh.merge import MergeCounts
from gis.refresh.normalise import Rejects, normalise_batch, resolve_columns
from gis.refresh.staging import LoadMode
from gis.refresh.validate import Extent, validate_batch

LOCK_WAIT_SECONDS = 60


@dataclass(frozen=True)
class RefreshResult:
    layer_id: str
    refresh_id: int
    source_unchanged: bool
    counts: MergeCounts
    seconds: float
    conflicts: int = 0  # features edited after the delivery was cut that it would change (gis/edits/conflicts.py)
    conflicts_path: Path | None = None

    def summary(self) -> str:
        if self.source_unchanged:
            return f"{self.layer_id}: source unchanged since the last refresh, nothing to do"
        c = self.counts
        conflicts = (f"; {self.conflicts} conflict(s) with later edits, listed in {self.conflicts_path}"
                     if self.conflicts else "")
        return (f"{self.layer_id}: {c.inserted} inserted, {c.updated} updated, {c.closed} closed, "
                f"{c.unchanged} unchanged in {self.seconds:.1f}s (refresh {self.refresh_id}){conflicts}")


@dataclass(frozen=True)
class RefreshRequest:
    spec: LayerSpec
    source_path: Path
    city_extent: Extent
    rejects_dir: Path
    force: bool = False
    progress: bool = True
    cut_at: datetime | None = None  # when the delivery was cut (default: the file's modification time)
    on_progress: Callable[[int, int], None] | None = None  # (rows read, rows in the file), after each batch
    # What ops.refresh_log records as the source: a delivery's own name (its number and file name), since its
    # file is read from a scratch directory that means nothing later; default the path read.
    source_name: str | None = None

    def logged_source(self, path: Path) -> str:
        return self.source_name or str(path)

    def logged_message(self, message: str) -> str:
        """A failure's message as logged: a named delivery's scratch path (quoted by GDAL, the refresh) named."""
        if self.source_name is None:
            return message
        for scratch in (str(self.source_path), str(self.source_path.parent)):
            message = message.replace(scratch, self.source_name)
        return message


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.timings[step] = round(self.timings.get(step, 0.0) + now - self._last, 3)
        self._last = now


def source_checksum(info: sources.SourceInfo, spec: LayerSpec) -> str:
    """The delivery's bytes and the layer's definition: either changing means the rows must be compared."""
    digest = hashlib.sha256(info.checksum.encode())
    digest.update(spec.model_dump_json().encode())
    return digest.hexdigest()


def acquire_layer_lock(conn: psycopg.Connection, layer_id: str) -> None:
    """One refresh per layer at a time. A killed job's server session may hold it a moment longer."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        row = conn.execute("SELECT pg_try_advisory_xact_lock(hashtext('gis-refresh:' || %s))", (layer_id,))
        got = row.fetchone()
        if got and got[0]:
            return
        if time.monotonic() > deadline:
            raise GisError(f"a refresh of '{layer_id}' is already running")
        time.sleep(0.5)


def write_rejects(rejects: Rejects, rejects_dir: Path, layer_id: str) -> Path:
    rejects_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    path = rejects_dir / f"{layer_id}-{stamp}.csv"
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["source_row", "fid", "problem"])
        for row, (fid, problems) in sorted(rejects.rows.items()):
            writer.writerow([row, fid or "", "; ".join(problems)])
    return path


def _rejection_message(rejects: Rejects, path: Path) -> str:
    row, (fid, problems) = min(rejects.rows.items())
    return (f"{len(rejects)} row(s) rejected, nothing loaded (first: row {row}, fid {fid or '-'}: "
            f"{problems[0]}); rejects listed in {path}")


def _stream(conn: psycopg.Connection, request: RefreshRequest, info: sources.SourceInfo,
            columns: dict[str, str], mode: LoadMode, refresh_id: int, delivery: staging.Delivery,
            rejects: Rejects, timer: _Timer, freeze: bool = False) -> bool:
    """Read, normalise, validate every batch and COPY its new and changed rows. Rows the layer's memo vouches
    for are counted unchanged without being normalised (gis.refresh.memo). Returns whether every accepted row's
    source hash was recorded, so the delivery can be the next refresh's memo."""
    spec = request.spec
    show = request.progress and sys.stderr.isatty()
    known = delivery.known
    sieve = memo.Sieve(spec, columns, known.result if isinstance(known, Future) else lambda: known)
    with tqdm(total=info.feature_count, desc=f"refresh {spec.id}", unit=" rows", disable=not show,
              file=sys.stderr) as bar, staging.copy_stream(conn, spec, mode, freeze) as copy, \
            sources.read_ahead(sources.read_batches(info.path, spec.source, sieve)) as batches:
        for batch in batches:
            timer.lap("read")
            sifted: memo.Sifted | None = batch.sifted
            if sifted is not None:
                delivery.take_vouched(sifted.at, sifted.rows, sifted.sources)
            if len(batch.attributes):
                normalised = normalise_batch(batch, spec, columns, rejects)
                validate_batch(normalised, spec, request.city_extent, rejects)
                skip = rejects.mask(normalised.row_numbers())
                timer.lap("normalise")
                copy.write(staging.record_batch(normalised, spec, mode, refresh_id, skip, delivery))
                if sifted is not None:
                    delivery.sources.append(sifted.kept[~skip])
                timer.lap("stage")
            read = batch.first_row - 1 + (len(batch.attributes) if sifted is None else
                                          len(sifted.kept) + len(sifted.at))
            bar.update(read - bar.n)
            if request.on_progress is not None:
                request.on_progress(read, info.feature_count)
    timer.lap("stage")  # the writer thread's last batches
    delivery.reject_duplicates(rejects)
    return bool(sieve.recording)


def _fail_on_rejects(rejects: Rejects, request: RefreshRequest) -> None:
    if rejects:
        path = write_rejects(rejects, request.rejects_dir, request.spec.id)
        raise ValidationFailed(_rejection_message(rejects, path), str(path))


def _load(url: str, request: RefreshRequest, info: sources.SourceInfo, columns: dict[str, str],
          checksum: str, started_at: datetime, rejects: Rejects) -> RefreshResult:
    """The refresh, in one transaction: a killed or failed one leaves the layer as it was."""
    spec, timer = request.spec, _Timer()
    with psycopg.connect(url, application_name=f"gis-refresh:{spec.id}") as conn, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="gis-refresh-compare") as fetcher:
        acquire_layer_lock(conn, spec.id)
        if not request.force and record.last_success_checksum(conn, spec.id) == checksum:
            refresh_id = record.write_unchanged_source(conn, spec, started_at, request.logged_source(info.path),
                                                        checksum)
            timer.lap("record")
            return RefreshResult(spec.id, refresh_id, True, MergeCounts(0, 0, 0, 0), sum(timer.timings.values()))
        refresh_id = record.next_refresh_id(conn)
        merge.compress_wal(conn)
        key = memo.memo_key(spec, request.city_extent)
        # Source-given validity may be missing on a row: filled from the stored start or the delivery time
        # (staging.with_starts), which needs the layer's rows, so those layers always merge.
        first_load = not spec.has_valid_time and merge.layer_is_empty(conn, spec)
        mode = LoadMode.first_load if first_load else LoadMode.merge
        freeze = False
        if first_load:
            freeze = merge.begin_first_load(conn, spec)
            delivery = staging.Delivery(staging.CurrentRows.empty())
        else:
            # Fetched on a connection of its own while the first batches are read and normalised.
            known = fetcher.submit(merge.fetch_current_rows, url, spec, key)
            staging.create_staging(conn, spec)
            delivered_at = conn.execute("SELECT now()").fetchone()
            delivery = staging.Delivery(known, delivered_at=delivered_at[0] if delivered_at else None,
                                        starts=merge.current_starts(conn, spec))
        timer.lap("compare")
        recorded = _stream(conn, request, info, columns, mode, refresh_id, delivery, rejects, timer, freeze)
        _fail_on_rejects(rejects, request)
        # Saved on a connection of its own while this one builds indexes or merges.
        saving = fetcher.submit(memo.save, url, spec, key, delivery) if recorded else None
        found: list[conflicts.Conflict] = []
        if first_load:
            counts = merge.finish_first_load(conn, spec, delivery.sent)
            timer.lap("index")
        else:
            # `missing: keep`: events the delivery leaves out (posted over HTTP meanwhile) stay current.
            gone = delivery.gone() if spec.temporal.missing == "close" else []
            gone, found = conflicts.settle(conn, spec, _cut_at(request), gone)  # edits made after the cut
            counts = merge.merge(conn, spec, refresh_id, gone, delivery.unchanged)
            staging.drop_staging(conn, spec)
        timer.lap("merge")
        record.write_success(conn, spec, refresh_id, started_at, request.logged_source(info.path), checksum, counts,
                             timer.timings)
        found_path = None
        if found:
            conflicts.record(conn, refresh_id, found)
            found_path = conflicts.write_file(found, request.rejects_dir, spec.id)
        timer.lap("record")
        if saving is not None:
            saving.result()
    return RefreshResult(spec.id, refresh_id, False, counts, sum(timer.timings.values()), len(found), found_path)


def _cut_at(request: RefreshRequest) -> datetime:
    if request.cut_at is not None:
        return request.cut_at
    return datetime.fromtimestamp(request.source_path.stat().st_mtime, UTC)


def run_refresh(url: str, request: RefreshRequest) -> RefreshResult:
    """Refresh one layer from its delivery. Raises SourceError / ValidationFailed with a one-line reason."""
    spec, started_at = request.spec, datetime.now(UTC)
    if not spec.editing.deliveries:
        raise SourceError(f"layer '{spec.id}' is maintained by edits only (editing.maintained_by); "
                          "it takes no deliveries")
    rejects = Rejects()
    try:
        parse_crs(spec.source.crs)
        info = sources.inspect(request.source_path, spec.source)
        columns = resolve_columns(spec, info.columns)
        checksum = source_checksum(info, spec)
        result = _load(url, request, info, columns, checksum, started_at, rejects)
        c = result.counts
        if c.inserted or c.updated or c.closed:
            began = time.perf_counter()
            merge.vacuum(url, spec)
            result = replace(result, seconds=result.seconds + time.perf_counter() - began)
    except SourceError as exc:
        record.write_failure(url, spec, started_at, request.logged_source(request.source_path),
                             request.logged_message(str(exc)), len(rejects) or None)
        raise
    return result
