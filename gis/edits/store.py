"""Writing one edit on the primary, in one transaction, keeping history.

This module is the edits' one write path: `connect_primary` is where its connections come from (the
primary's URL, never a standby's), and `apply_edit` does the rest. An edit takes the layer's refresh
lock (gis/refresh/runner.py), so a refresh and edits never interleave; it gets its own refresh id (one
ops.refresh_log row), which is the new version's id: the old version goes to the history table closed
by it, ops.layer_stats moves to it (ETags, tiles and caches follow), and ops.edits records who, when and
why. The audit row is written in the same transaction: an edit is never stored without it.
"""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import psycopg
import shapely
from psycopg import sql

from gis import identifiers as ids
from gis.edits.feature import CheckedFeature, InvalidFeature, check_feature, geometry_of, properties_of
from gis.errors import GisError, NotFound
from gis.features import crs as crs_
from gis.layers import LayerRegistry, LayerSpec
from gis.refresh import record
from gis.refresh.merge import MergeCounts
from gis.refresh.validate import Extent
from gis.security import audit
from gis.security.policy import RowRule
from gis.security.rows import claim_value

LOCK_TIMEOUT = "15s"  # a refresh of the layer may hold its lock this long before an edit gives up
MAX_FID = 200


class Operation(StrEnum):
    create = "create"  # POST /items
    replace = "replace"  # type: ignore[assignment]  # PUT /items/{fid}; hides str.replace, never called on one
    update = "update"  # PATCH /items/{fid} (JSON merge patch)
    delete = "delete"  # DELETE /items/{fid}


class EditBusy(GisError):
    """The layer stayed locked (a refresh running) longer than an edit waits."""


class EditForbidden(GisError):
    """The caller may not write this: a masked field, or a feature outside its rows."""


class FeatureExists(GisError):
    """A create naming the id of a current feature."""


class PreconditionFailed(GisError):
    """If-Match names a version that is no longer current."""


class PreconditionRequired(GisError):
    """The layer requires If-Match on updates and deletes, and none was sent."""


class NotEditable(GisError):
    """The layer is maintained by deliveries only."""


@dataclass(frozen=True)
class Editor:
    """Who edits, and the limits of their role on the layer."""

    subject: str
    role: str
    method: str  # api-key, basic, bearer, database
    key_id: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    rows: RowRule | None = None
    masked: tuple[str, ...] = ()


@dataclass(frozen=True)
class EditRequest:
    spec: LayerSpec
    operation: Operation
    editor: Editor
    fid: str | None = None  # None for a create without an id: one is made
    body: Mapping[str, Any] | None = None  # the Feature (create, replace) or the merge patch (update)
    geometry_crs: crs_.Crs = crs_.CRS84  # Content-Crs
    if_match: str | None = None
    reason: str | None = None
    path: str | None = None  # what was called, for the audit row


@dataclass(frozen=True)
class EditResult:
    fid: str
    etag: str | None  # the new version's; None after a delete
    refresh_id: int | None  # None when the edit changed nothing
    changed: bool


def connect_primary(url: str, editor: Editor) -> psycopg.Connection:
    """A connection to the primary for one edit (the URL is settings' database_url, never a read URL)."""
    return psycopg.connect(url, application_name=f"gis-edit:{editor.subject}"[:63])


def etag_of(refresh_id: int, row_hash: bytes) -> str:
    """A feature version's ETag: the write that made it and its content hash."""
    return f'"{int(refresh_id)}.{bytes(row_hash).hex()}"'


def etag_matches(if_match: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
    return "*" in tags or etag in tags


def _lock(conn: psycopg.Connection, spec: LayerSpec) -> None:
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
    try:
        for layer_id in sorted({spec.id, *spec.editing.lock_with}):  # one order: no deadlock between writers
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('gis-refresh:' || %s))", (layer_id,))
    except psycopg.errors.LockNotAvailable:
        raise EditBusy(f"'{spec.id}' is being refreshed; send the edit again in a minute") from None


@dataclass(frozen=True)
class _Current:
    values: dict[str, Any]
    geometry: shapely.Geometry
    valid_from: datetime
    valid_to: datetime | None
    row_hash: bytes
    refresh_id: int

    @property
    def etag(self) -> str:
        return etag_of(self.refresh_id, self.row_hash)


def _read_current(conn: psycopg.Connection, spec: LayerSpec, fid: str) -> _Current | None:
    fields = ids.field_columns(spec)
    row = conn.execute(sql.SQL(
        "SELECT {}, ST_AsBinary(geom), valid_from, valid_to, row_hash, refresh_id FROM {} WHERE fid = %s FOR UPDATE"
    ).format(sql.SQL(", ").join(fields), ids.current_table(spec)), (fid,)).fetchone()
    if row is None:
        return None
    n = len(spec.fields)
    return _Current(dict(zip(spec.field_names, row[:n], strict=True)), shapely.from_wkb(bytes(row[n])),
                    row[n + 1], row[n + 2], bytes(row[n + 3]), int(row[n + 4]))


def _inside_rows(conn: psycopg.Connection, registry: LayerRegistry, editor: Editor,
                 values: Mapping[str, Any], geometry: shapely.Geometry) -> bool:
    """Whether a version passes the editor's row rule (the rule the API applies to reads)."""
    rule = editor.rows
    if rule is None:
        return True
    claim = claim_value(editor.claims, rule)
    if claim is None:
        return False
    if rule.within is None:
        assert rule.field is not None
        return values.get(rule.field) is not None and str(values[rule.field]) == claim
    other = registry[rule.within.layer]
    row = conn.execute(sql.SQL(
        "SELECT coalesce(ST_Intersects(ST_GeomFromWKB(%(g)s, 4490), "
        "(SELECT ST_Union(geom) FROM {} WHERE {} = %(claim)s::text)), false)"
    ).format(ids.current_table(other), ids.column(other, rule.within.field)),
        {"g": shapely.to_wkb(geometry), "claim": claim}).fetchone()
    return bool(row and row[0])


def _check_masked(request: EditRequest, properties: Mapping[str, Any]) -> None:
    for name in properties:
        if name in request.editor.masked:
            raise EditForbidden(f"properties.{name}: role '{request.editor.role}' may not write this field")


def _new_version(request: EditRequest, fid: str, current: _Current | None, city_extent: Extent) -> CheckedFeature:
    """The version the body asks for, checked; masked fields keep their current values."""
    spec, body = request.spec, request.body or {}
    if request.operation is Operation.update:
        if not isinstance(body, Mapping):
            raise InvalidFeature("body", "a JSON merge patch is an object")
        patch = body.get("properties") or {}
        if not isinstance(patch, dict):
            raise InvalidFeature("properties", "must be an object")
        _check_masked(request, patch)
        assert current is not None
        kept = {name: value for name, value in current.values.items() if name not in patch}
        if spec.has_valid_time:
            kept |= {"valid_from": current.valid_from, "valid_to": current.valid_to}
        if "geometry" in body and body["geometry"] is not None:
            return check_feature(spec, fid, patch, geometry_of(body, request.geometry_crs),
                                 request.geometry_crs, city_extent, kept)
        if "geometry" in body:
            raise InvalidFeature("geometry", "a feature of this layer needs a geometry; it cannot be removed")
        return check_feature(spec, fid, patch, current.geometry, crs_.CRS84, city_extent, kept)
    properties = properties_of(body)
    _check_masked(request, properties)
    masked = {name: current.values[name] for name in request.editor.masked} if current is not None else {}
    return check_feature(spec, fid, properties, geometry_of(body, request.geometry_crs), request.geometry_crs,
                         city_extent, masked)


_NOWHERE = shapely.Point()  # an empty geometry: inside no one's rows


def _chosen_id(request: EditRequest) -> bool:
    return request.fid is not None or (isinstance(request.body, Mapping) and request.body.get("id") is not None)


def _fid_of(request: EditRequest) -> str:
    body_id = (request.body or {}).get("id") if isinstance(request.body, Mapping) else None
    if body_id is not None and not isinstance(body_id, str | int):
        raise InvalidFeature("id", "must be a string or a number")
    if request.fid is not None:
        if body_id is not None and str(body_id) != request.fid and request.operation is not Operation.delete:
            raise InvalidFeature("id", f"'{str(body_id)[:60]}' differs from the feature in the path")
        fid = request.fid
    elif body_id is not None:
        fid = str(body_id)
    else:
        fid = uuid.uuid4().hex
    fid = fid.strip()
    # Any other character is fine: a path carries it percent-encoded (a slash as %2F, services/common/encoded_paths.py).
    # "." and ".." are not: URL clients resolve them as dot-segments, encoded or not (RFC 3986, 6.2.2.2).
    if not fid or len(fid) > MAX_FID or any(ord(c) < 32 for c in fid) or fid in (".", ".."):
        raise InvalidFeature("id", f"an id is 1 to {MAX_FID} characters, without control characters, "
                             "and neither '.' nor '..'")
    return fid


def _close(conn: psycopg.Connection, spec: LayerSpec, fid: str, refresh_id: int) -> None:
    fields = ids.field_columns(spec)
    names = {"cur": ids.current_table(spec), "hist": ids.history_table(spec), "fields": sql.SQL(", ").join(fields)}
    conn.execute(sql.SQL(
        "INSERT INTO {hist} (fid, {fields}, geom, valid_from, valid_to, row_hash, refresh_id, closed_refresh_id) "
        "SELECT fid, {fields}, geom, valid_from, greatest(now(), valid_from), row_hash, refresh_id, %(rid)s "
        "FROM {cur} WHERE fid = %(fid)s"
    ).format(**names), {"rid": refresh_id, "fid": fid})


def _write(conn: psycopg.Connection, spec: LayerSpec, new: CheckedFeature, refresh_id: int, insert: bool) -> None:
    fields = ids.field_columns(spec)
    params = {**{f"v{i}": new.values[name] for i, name in enumerate(spec.field_names)},
              "fid": new.fid, "geom": shapely.to_wkb(new.geometry), "vf": new.valid_from, "vt": new.valid_to,
              "hash": new.row_hash, "rid": refresh_id}
    placeholders = [sql.Placeholder(f"v{i}") for i in range(len(fields))]
    if insert:
        statement = sql.SQL(
            "INSERT INTO {} (fid, {}, geom, valid_from, valid_to, row_hash, refresh_id) VALUES (%(fid)s, {}, "
            "ST_GeomFromWKB(%(geom)s, 4490), coalesce(%(vf)s, now()), %(vt)s, %(hash)s, %(rid)s)"
        ).format(ids.current_table(spec), sql.SQL(", ").join(fields), sql.SQL(", ").join(placeholders))
    else:
        sets = sql.SQL(", ").join(sql.SQL("{} = {}").format(f, p) for f, p in zip(fields, placeholders, strict=True))
        statement = sql.SQL(
            "UPDATE {} SET {}, geom = ST_GeomFromWKB(%(geom)s, 4490), valid_from = coalesce(%(vf)s, now()), "
            "valid_to = %(vt)s, row_hash = %(hash)s, refresh_id = %(rid)s WHERE fid = %(fid)s"
        ).format(ids.current_table(spec), sets)
    conn.execute(statement, params)


# One edit moves the layer's counts and extents by itself: no scan of the layer (a refresh recomputes them).
_STATS = """
UPDATE ops.layer_stats SET row_count = row_count + %(delta)s, last_refresh_id = %(rid)s, changed_refresh_id = %(rid)s,
  changed_at = now(),
  extent = CASE WHEN %(box)s::float8[] IS NULL OR extent IS NULL THEN extent ELSE ARRAY[
    least(extent[1], (%(box)s::float8[])[1]), least(extent[2], (%(box)s::float8[])[2]),
    greatest(extent[3], (%(box)s::float8[])[3]), greatest(extent[4], (%(box)s::float8[])[4])] END,
  time_extent = CASE WHEN %(t)s::timestamptz IS NULL OR time_extent IS NULL THEN time_extent ELSE ARRAY[
    least(time_extent[1], %(t)s::timestamptz), greatest(time_extent[2], %(t)s::timestamptz)] END
WHERE layer_id = %(layer)s
"""
_LOG = """
INSERT INTO ops.refresh_log (refresh_id, layer_id, status, started_at, source_path, inserted, updated, closed,
                             unchanged, rejected, timings)
VALUES (%(rid)s, %(layer)s, 'succeeded', %(started)s, %(source)s, %(inserted)s, %(updated)s, %(closed)s, 0, 0,
        '{}'::jsonb)
"""


def _bump(conn: psycopg.Connection, spec: LayerSpec, refresh_id: int, started: datetime, source: str,
          counts: MergeCounts, new: CheckedFeature | None) -> None:
    """The edit's ops.refresh_log row and the layer's stats, moved to its version."""
    conn.execute(_LOG, {"rid": refresh_id, "layer": spec.id, "started": started, "source": source,
                        "inserted": counts.inserted, "updated": counts.updated, "closed": counts.closed})
    box = list(shapely.bounds(new.geometry)) if new is not None else None
    when = new.values.get(spec.temporal.field) if new is not None and spec.temporal.field else None
    moved = conn.execute(_STATS, {"delta": counts.inserted - counts.closed, "rid": refresh_id, "box": box,
                                  "t": when, "layer": spec.id})
    if moved.rowcount == 0:  # never refreshed: the stats from the table, once
        conn.execute("DELETE FROM ops.refresh_log WHERE refresh_id = %s", (refresh_id,))
        record.write_success(conn, spec, refresh_id, started, source, None, counts, {})


def _record(conn: psycopg.Connection, request: EditRequest, fid: str, refresh_id: int, started: datetime,
            counts: MergeCounts, previous: int | None, new: CheckedFeature | None = None) -> None:
    editor, spec = request.editor, request.spec
    _bump(conn, spec, refresh_id, started, f"edit:{request.operation.value} {fid}"[:300], counts, new)
    conn.execute(
        "INSERT INTO ops.edits (refresh_id, layer_id, fid, operation, subject, role, method, reason, "
        "previous_refresh_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (refresh_id, spec.id, fid, request.operation.value, editor.subject, editor.role, editor.method,
         request.reason, previous))
    audit.record(conn, audit.AuditEntry(
        editor.subject, editor.role, editor.method, editor.key_id, f"edit:{request.operation.value}", spec.id,
        request.path, {"fid": fid, "version": refresh_id, **({"reason": request.reason} if request.reason else {})},
        1, 200))


def _precondition(request: EditRequest, current: _Current) -> None:
    if request.if_match is not None:
        if not etag_matches(request.if_match, current.etag):
            raise PreconditionFailed(f"If-Match: the feature has changed; its version now is {current.etag}")
    elif request.spec.editing.require_if_match:
        raise PreconditionRequired(f"If-Match: layer '{request.spec.id}' requires the feature's ETag on "
                                   "updates and deletes")


def apply_edit(conn: psycopg.Connection, registry: LayerRegistry, city_extent: Extent,
               request: EditRequest) -> EditResult:
    """One edit in one transaction on `conn` (from connect_primary). Raises the errors above, InvalidFeature
    (naming the member at fault) or NotFound (no such feature, or one outside the editor's rows)."""
    spec = request.spec
    if not spec.editing.edits:
        raise NotEditable(f"layer '{spec.id}' is maintained by deliveries only; it cannot be edited")
    if request.operation is Operation.create and request.editor.rows is not None and _chosen_id(request):
        # "exists" (409) against "created" would tell which ids exist outside the editor's rows
        raise InvalidFeature("id", "a role under a row rule cannot choose the id of a new feature; leave it out and "
                                   "the service makes one")
    fid = _fid_of(request)
    started = datetime.now(UTC)
    with conn.transaction():
        _lock(conn, spec)
        current = _read_current(conn, spec, fid)
        if request.operation is Operation.create:
            if current is not None:
                raise FeatureExists(f"id: a feature '{fid[:60]}' exists in '{spec.id}'; replace it with PUT")
        else:
            # the row test runs for a missing feature too: a 404 outside the rows costs what one for no feature does
            inside = _inside_rows(conn, registry, request.editor, current.values if current else {},
                                  current.geometry if current else _NOWHERE)
            if current is None or not inside:
                raise NotFound(f"no feature '{fid[:200]}' in '{spec.id}'")
            _precondition(request, current)
        if request.operation is Operation.delete:
            assert current is not None
            refresh_id = record.next_refresh_id(conn)
            _close(conn, spec, fid, refresh_id)
            conn.execute(sql.SQL("DELETE FROM {} WHERE fid = %s").format(ids.current_table(spec)), (fid,))
            _record(conn, request, fid, refresh_id, started, MergeCounts(0, 0, 1, 0), current.refresh_id)
            return EditResult(fid, None, refresh_id, True)
        new = _new_version(request, fid, current, city_extent)
        if not _inside_rows(conn, registry, request.editor, new.values, new.geometry):
            raise EditForbidden(f"the feature would lie outside the rows role '{request.editor.role}' may edit")
        if current is not None and current.row_hash == new.row_hash:
            return EditResult(fid, current.etag, None, False)  # nothing changes: no new version
        refresh_id = record.next_refresh_id(conn)
        if current is not None:
            _close(conn, spec, fid, refresh_id)
        _write(conn, spec, new, refresh_id, insert=current is None)
        counts = MergeCounts(1, 0, 0, 0) if current is None else MergeCounts(0, 1, 0, 0)
        _record(conn, request, fid, refresh_id, started, counts, None if current is None else current.refresh_id,
                new)
        return EditResult(fid, etag_of(refresh_id, new.row_hash), refresh_id, True)
