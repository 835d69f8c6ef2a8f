"""Deliveries and edits together: a refresh never silently overwrites an edit made after its delivery was cut.

For a layer both delivered and edited (`editing.maintained_by: both`), the refresh asks, before it merges,
which features were edited (created, changed or deleted through gis.edits) after the delivery's cut time
and which of them the delivery would change: overwrite, close (it no longer has them) or bring back
(the edit deleted them). Each such feature is a conflict, settled by the layer's declared rule:

- `keep_edit`: the delivery's version of the feature is left out of the merge; the edit stays current;
- `take_delivery`: the delivery's version is merged; the edited version is closed into history as usual.

Either way every conflict is reported: in the refresh's ops.refresh_log row (conflicts, conflict_details)
and in a conflicts file beside the rejects files.
"""

import csv
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from gis import identifiers as ids
from gis.layers import LayerSpec

_EDITED_AFTER = (
    "SELECT DISTINCT ON (fid) fid, at, refresh_id, operation FROM ops.edits "
    "WHERE layer_id = %s AND at > %s ORDER BY fid, at DESC"
)


@dataclass(frozen=True)
class Conflict:
    fid: str
    edited_at: datetime
    edit_refresh_id: int
    edit: str  # the last edit's operation: create, replace, update, delete
    delivery: str  # what the delivery would do: overwrite, close, restore
    resolution: str  # kept_edit or took_delivery


def _staged(conn: psycopg.Connection, spec: LayerSpec, fids: list[str]) -> set[str]:
    rows = conn.execute(sql.SQL("SELECT fid FROM {} WHERE fid = ANY(%s::text[])").format(ids.staging_table(spec)),
                        (fids,)).fetchall()
    return {r[0] for r in rows}


def settle(conn: psycopg.Connection, spec: LayerSpec, cut_at: datetime, gone: list[str]
           ) -> tuple[list[str], list[Conflict]]:
    """Find the conflicts in the staged delivery and apply the layer's rule (in the refresh's transaction).

    Returns the fids to close (`gone` less the edits kept) and the conflicts. Staging must hold the new and
    changed rows of the delivery (gis.refresh.staging's merge mode).
    """
    if spec.editing.maintained_by != "both":
        return gone, []
    edited = conn.execute(_EDITED_AFTER, (spec.id, cut_at)).fetchall()
    if not edited:
        return gone, []
    staged = _staged(conn, spec, [row[0] for row in edited])
    closing = set(gone)
    keep = spec.editing.on_conflict == "keep_edit"
    found: list[Conflict] = []
    for fid, at, refresh_id, operation in edited:
        if fid in staged:
            action = "restore" if operation == "delete" else "overwrite"
        elif fid in closing and operation != "delete":
            action = "close"
        else:
            continue  # the delivery agrees with the edit, or does not touch the feature
        found.append(Conflict(fid, at, int(refresh_id), operation, action, "kept_edit" if keep else "took_delivery"))
    if keep and found:
        kept = [c.fid for c in found]
        conn.execute(sql.SQL("DELETE FROM {} WHERE fid = ANY(%s::text[])").format(ids.staging_table(spec)), (kept,))
        gone = [fid for fid in gone if fid not in set(kept)]
    return gone, found


def record(conn: psycopg.Connection, refresh_id: int, conflicts: list[Conflict]) -> None:
    """The conflicts on the refresh's log row (in its transaction)."""
    details = [{"fid": c.fid, "edited_at": c.edited_at.isoformat(), "edit_refresh_id": c.edit_refresh_id,
                "edit": c.edit, "delivery": c.delivery, "resolution": c.resolution} for c in conflicts]
    conn.execute("UPDATE ops.refresh_log SET conflicts = %s, conflict_details = %s WHERE refresh_id = %s",
                 (len(conflicts), Jsonb(details), refresh_id))


def write_file(conflicts: list[Conflict], directory: Path, layer_id: str) -> Path:
    """The conflicts file, beside the rejects files: one line per conflicting feature."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{layer_id}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-conflicts.csv"
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["fid", "edited_at", "edit_refresh_id", "edit", "delivery", "resolution"])
        for c in conflicts:
            writer.writerow([c.fid, c.edited_at.isoformat(), c.edit_refresh_id, c.edit, c.delivery, c.resolution])
    return path
