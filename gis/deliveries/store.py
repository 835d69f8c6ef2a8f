"""Deliveries kept in ops.deliveries, each loaded by an async job in ops.jobs (process id `delivery-refresh`).

`receive` stores the file with its checksum and sender and queues its job, in one transaction on the primary.
`run_delivery` is the job: unpack, the refresh job (read → normalise → validate → merge, all or nothing) with
progress in ops.jobs, then the result on both rows: counts, the refresh's id (what the delivery changed),
conflicts with later edits, or the failure and its rejects file. Any process that can reach the primary can
run it (the service in a thread, `gis refresh --watch`, a worker): everything it needs is in the database.
"""

import hashlib
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from gis.deliveries.unpack import check_format, unpack
from gis.errors import NotFound, SourceError, ValidationFailed
from gis.layers import LayerSpec
from gis.refresh.runner import RefreshRequest, run_refresh
from gis.refresh.validate import Extent
from gis.security.disclosure import scrubbed

PROCESS_ID = "delivery-refresh"
_PROGRESS_EVERY_S = 1.0


@dataclass(frozen=True)
class Sender:
    subject: str
    role: str
    method: str
    key_id: str | None = None


@dataclass(frozen=True)
class Received:
    delivery_id: int
    job_id: str
    checksum: str


def receive(conn: psycopg.Connection, spec: LayerSpec, sender: Sender, filename: str, content: bytes,
            cut_at: datetime | None, runner: str | None) -> Received:
    """Keep the delivery and queue its job (commits). SourceError for a file the layer cannot take."""
    check_format(filename, content, spec.source)  # refused before anything is stored
    if not content:
        raise SourceError("file: empty")
    checksum = hashlib.sha256(content).hexdigest()
    job_id = f"delivery-{hashlib.sha256(checksum.encode() + str(time.time_ns()).encode()).hexdigest()[:24]}"
    with conn.transaction():
        conn.execute(
            "INSERT INTO ops.jobs (job_id, process_id, status, message, progress, parameters, owner, runner) "
            "VALUES (%s, %s, 'accepted', 'queued', 0, %s, %s, %s)",
            (job_id, PROCESS_ID, Jsonb({"layer": spec.id, "filename": filename, "checksum": checksum}),
             sender.subject, runner))
        row = conn.execute(
            "INSERT INTO ops.deliveries (layer_id, subject, role, key_id, filename, checksum, size_bytes, cut_at, "
            "content, job_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING delivery_id",
            (spec.id, sender.subject, sender.role, sender.key_id, filename[:300], checksum, len(content), cut_at,
             content, job_id)).fetchone()
    assert row is not None
    return Received(int(row[0]), job_id, checksum)


def _job(conn: psycopg.Connection, job_id: str, **values: Any) -> None:
    """Update the job (autocommit connection); a dismissed job stays dismissed."""
    sets = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in values)
    conn.execute(sql.SQL("UPDATE ops.jobs SET {}, updated = clock_timestamp() WHERE job_id = %(job)s "
                         "AND status <> 'dismissed'").format(sets), {**values, "job": job_id})


def source_name(delivery_id: int, filename: str) -> str:
    """How ops.refresh_log names a delivery's source: its number and the file name it was sent with."""
    return f"delivery {delivery_id}: {filename}"


def run_delivery(url: str, spec: LayerSpec, delivery_id: int, city_extent: Extent, rejects_dir: Path,
                 scratch_dir: Path | None = None) -> dict[str, Any]:
    """The job: load the delivery with the refresh job (unpacked in `scratch_dir`, the temp_dir setting); its
    result, also kept on the delivery and the job."""
    with psycopg.connect(url, autocommit=True, application_name=f"gis-delivery:{delivery_id}") as conn:
        row = conn.execute("SELECT filename, content, cut_at, job_id FROM ops.deliveries WHERE delivery_id = %s "
                           "AND layer_id = %s", (delivery_id, spec.id)).fetchone()
        if row is None:
            raise NotFound(f"no delivery {delivery_id} of '{spec.id}'")
        filename, content, cut_at, job_id = row
        if content is None:  # only a finished delivery's bytes are ever pruned (gis/db/retention.py)
            raise NotFound(f"delivery {delivery_id} of '{spec.id}' is finished and its file is no longer kept")
        conn.execute("UPDATE ops.deliveries SET status = 'running' WHERE delivery_id = %s", (delivery_id,))
        _job(conn, job_id, status="running", message="reading the delivery", progress=5, started=datetime.now(UTC))
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= _PROGRESS_EVERY_S:
                last[0] = now
                _job(conn, job_id, progress=min(90, 10 + int(80 * done / max(total, 1))),
                     message=f"{done:,} of {total:,} rows checked")

        rejects: str | None = None
        unpacked = ""
        try:
            with tempfile.TemporaryDirectory(prefix="gis-delivery-", dir=scratch_dir) as directory:
                unpacked = directory
                path = unpack(filename, bytes(content), spec.source, Path(directory))
                refreshed = run_refresh(url, RefreshRequest(spec, path, city_extent, rejects_dir, progress=False,
                                                            cut_at=cut_at, on_progress=progress,
                                                            source_name=source_name(delivery_id, filename)))
            c = refreshed.counts
            result: dict[str, Any] = {
                "status": "succeeded", "refresh_id": refreshed.refresh_id, "unchanged_file": refreshed.source_unchanged,
                "inserted": c.inserted, "updated": c.updated, "closed": c.closed, "unchanged": c.unchanged,
                "conflicts": refreshed.conflicts, "summary": refreshed.summary()}
        except ValidationFailed as exc:
            rejects = Path(exc.rejects_path).read_text(encoding="utf-8") if exc.rejects_path else None
            result = {"status": "failed", "message": str(exc).split("; rejects listed in")[0],
                      "rejected": max(0, (rejects or "").count("\n") - 1)}
        except SourceError as exc:
            result = {"status": "failed", "message": str(exc)}
        # Kept and shown to the sender: without the scratch directory (exactly, whatever characters its name has)
        # or the server's rejects directory.
        result = scrubbed(result, (unpacked, str(rejects_dir)) if unpacked else (str(rejects_dir),))
        ok = result["status"] == "succeeded"
        conn.execute("UPDATE ops.deliveries SET status = %s, refresh_id = %s, result = %s, rejects = %s "
                     "WHERE delivery_id = %s", (result["status"], result.get("refresh_id"), Jsonb(result), rejects,
                                                delivery_id))
        _job(conn, job_id, status="successful" if ok else "failed", progress=100, finished=datetime.now(UTC),
             message="delivery loaded" if ok else str(result["message"])[:2000], mimetype="application/json",
             result=orjson.dumps(result))
    return result


COLUMNS = ("delivery_id", "layer_id", "received_at", "subject", "role", "filename", "checksum", "size_bytes",
           "cut_at", "job_id", "status", "refresh_id", "result", "has_rejects", "progress", "job_message")
_SELECT = ("SELECT d.delivery_id, d.layer_id, d.received_at, d.subject, d.role, d.filename, d.checksum, d.size_bytes, "
           "d.cut_at, d.job_id, d.status, d.refresh_id, d.result, d.rejects IS NOT NULL, j.progress, j.message "
           "FROM ops.deliveries d LEFT JOIN ops.jobs j ON j.job_id = d.job_id ")


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(COLUMNS, row, strict=True))
    for key in ("received_at", "cut_at"):
        if out[key] is not None:
            out[key] = out[key].isoformat()
    return out


async def list_deliveries(conn: psycopg.AsyncConnection, layer_id: str, limit: int) -> list[dict[str, Any]]:
    cursor = await conn.execute(_SELECT + "WHERE d.layer_id = %s ORDER BY d.delivery_id DESC LIMIT %s",
                                (layer_id, int(limit)))
    return [_record(r) for r in await cursor.fetchall()]


async def get_delivery(conn: psycopg.AsyncConnection, layer_id: str, delivery_id: int) -> dict[str, Any]:
    cursor = await conn.execute(_SELECT + "WHERE d.layer_id = %s AND d.delivery_id = %s", (layer_id, delivery_id))
    row = await cursor.fetchone()
    if row is None:
        raise NotFound(f"no delivery {delivery_id} of '{layer_id}'")
    return _record(row)


async def rejects_of(conn: psycopg.AsyncConnection, layer_id: str, delivery_id: int) -> str | None:
    cursor = await conn.execute("SELECT rejects FROM ops.deliveries WHERE layer_id = %s AND delivery_id = %s",
                                (layer_id, delivery_id))
    row = await cursor.fetchone()
    if row is None:
        raise NotFound(f"no delivery {delivery_id} of '{layer_id}'")
    rejects: str | None = row[0]
    return rejects
