"""Sensor readings posted as a batch: checked reading by reading, then written in one transaction.

A reading's id is its sensor and instant (`SN-000012@20261031T083000Z`), so the same reading posted twice,
or delivered in a file as well, is one feature. The batch is all or nothing: one bad reading and nothing is
stored, and the error lists every bad reading by its index. Re-posting a reading with the same values changes
nothing; with other values it is a correction: the old version goes to the layer's history, closed now.

Writes to the readings layer take the same per-layer lock as a refresh (gis/refresh/runner.py), so a
refresh and posts never interleave and each write's refresh id is higher than any committed before it
(the warnings' watch cursor relies on that). Each batch is one ops.refresh_log row, and the layer's counts
in ops.layer_stats are brought up to date incrementally (numberMatched, extents, the tile version).
"""

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from gis import identifiers as ids
from gis.errors import GisError
from gis.refresh import row_hash
from gis.security import inference
from gis.sensing.thresholds import READING_FIELDS, Thresholds

MAX_READINGS = 10_000
MAX_SENSOR_ID = 100
FUTURE_TOLERANCE = timedelta(minutes=5)  # sensor clocks run a little ahead
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)  # a sensor clock that was never set reads 1970 or 0001
LOCK_TIMEOUT = "15s"  # a refresh of the layer may hold its lock this long before a post gives up
_KEYS = frozenset({"sensor", "observed_at", "value", "quality", "unit"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # PostgreSQL text cannot hold NUL; no id needs the others
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$")


class InvalidReadings(GisError):
    """A batch refused whole; `errors` names each bad reading by index (`readings[3].value`)."""

    def __init__(self, parameter: str, description: str, errors: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(description)
        self.parameter = parameter
        self.details = {"errors": list(errors)} if errors else {}


class WriteBusy(GisError):
    """The readings layer stayed locked (a refresh running) longer than a post waits."""


@dataclass(frozen=True)
class Reading:
    index: int  # its position in the posted batch
    sensor: str
    observed_at: datetime  # aware
    value: float
    quality: str | None
    unit: str | None

    @property
    def fid(self) -> str:
        return reading_fid(self.sensor, self.observed_at)


@dataclass(frozen=True)
class StoreResult:
    refresh_id: int
    received: int
    inserted: int
    updated: int
    unchanged: int


def reading_fid(sensor: str, observed_at: datetime) -> str:
    """The reading's stable id: sensor @ UTC instant (microseconds only when there are some)."""
    at = observed_at.astimezone(UTC)
    fraction = f".{at.microsecond:06d}" if at.microsecond else ""
    return f"{sensor}@{at:%Y%m%dT%H%M%S}{fraction}Z"


def _problem(errors: list[dict[str, Any]], index: int, key: str, problem: str) -> None:
    errors.append({"index": index, "parameter": f"readings[{index}].{key}", "problem": problem})


def is_sensor_id(value: object) -> bool:
    return (isinstance(value, str) and bool(value.strip()) and len(value) <= MAX_SENSOR_ID
            and not _CONTROL.search(value))


def _time(value: object, now: datetime) -> datetime | str:
    if not isinstance(value, str) or not _RFC3339.match(value.strip()):
        return "an RFC 3339 date-time with its offset, e.g. 2026-10-31T08:30:00+08:00"
    try:
        stamp = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError as exc:
        return f"not a valid date-time: {exc}"
    if stamp > now + FUTURE_TOLERANCE:
        return f"in the future (the server's clock says {now.isoformat(timespec='seconds')})"
    if stamp < EARLIEST:
        return "before 1970: the sensor's clock is not set"
    return stamp


def _one(raw: object, index: int, qualities: frozenset[str], now: datetime,
         errors: list[dict[str, Any]]) -> Reading | None:
    if not isinstance(raw, dict):
        _problem(errors, index, "(reading)", "an object {sensor, observed_at, value[, quality, unit]}")
        return None
    before = len(errors)
    for key in sorted(set(raw) - _KEYS):
        _problem(errors, index, str(key)[:40], "unknown key; a reading has " + ", ".join(sorted(_KEYS)))
    sensor = raw.get("sensor")
    if not is_sensor_id(sensor):
        _problem(errors, index, "sensor", f"a sensor id (text, 1 to {MAX_SENSOR_ID} characters, no control "
                 "characters)")
    at = _time(raw.get("observed_at"), now)
    if isinstance(at, str):
        _problem(errors, index, "observed_at", at)
    value = raw.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        _problem(errors, index, "value", "a finite number")
    quality = raw.get("quality")
    if quality is not None and (not isinstance(quality, str) or quality not in qualities):
        _problem(errors, index, "quality", f"one of {', '.join(sorted(qualities))} (or left out)")
    unit = raw.get("unit")
    if unit is not None and not isinstance(unit, str):
        _problem(errors, index, "unit", "text (the sensor type's unit) or left out")
    if len(errors) > before:
        return None
    assert isinstance(sensor, str) and isinstance(at, datetime) and isinstance(value, int | float)
    return Reading(index, sensor.strip(), at, float(value), quality, unit)


def parse_batch(body: object, thresholds: Thresholds, now: datetime | None = None) -> list[Reading]:
    """The batch's readings, or InvalidReadings listing every problem the body alone shows."""
    if not isinstance(body, dict) or set(body) != {"readings"}:
        raise InvalidReadings("body", 'body: a JSON object {"readings": [ ... ]}')
    raw = body["readings"]
    if not isinstance(raw, list) or not raw:
        raise InvalidReadings("readings", "readings: a non-empty list of readings")
    if len(raw) > MAX_READINGS:
        raise InvalidReadings("readings", f"readings: {len(raw):,} readings; at most {MAX_READINGS:,} per batch")
    qualities = frozenset(thresholds.readings.known_field("quality").values or ())
    moment = now or datetime.now(UTC)
    errors: list[dict[str, Any]] = []
    readings = [r for i, item in enumerate(raw) if (r := _one(item, i, qualities, moment, errors)) is not None]
    if errors:
        raise _refused(errors, len(raw))
    return readings


def _refused(errors: list[dict[str, Any]], total: int) -> InvalidReadings:
    errors.sort(key=lambda e: e["index"])
    bad = len({e["index"] for e in errors})
    first = errors[0]
    return InvalidReadings("readings", f"{bad} of {total} readings are invalid, nothing was stored (first: "
                           f"{first['parameter']}: {first['problem']})", errors)


def _sensors_sql(thresholds: Thresholds) -> sql.Composed:
    return sql.SQL("SELECT fid, sensor_type FROM {} WHERE fid = ANY(%s)").format(
        ids.current_table(thresholds.sensors))


# What the checks against the sensors layer depend on. A writer that may not read that layer whole (a sensor
# gateway: role sensor_writer) learns nothing from them: see check_blind.
SENSOR_CHECKS = inference.Dependency(
    "sensor-readings/sensor-checks", "pipe_sensors", ("fid", "sensor_type"),
    "whether each reading's sensor exists, and its value and unit against the sensor type's range and unit")


def _duplicates(readings: list[Reading], errors: list[dict[str, Any]]) -> dict[str, Reading]:
    """One reading per sensor and instant: an exact repeat is dropped, a conflicting one is an error."""
    kept: dict[str, Reading] = {}
    for r in readings:
        earlier = kept.get(r.fid)
        if earlier is not None and (earlier.value, earlier.quality) != (r.value, r.quality):
            _problem(errors, r.index, "observed_at", f"same sensor and instant as readings[{earlier.index}], "
                     "with another value or quality")
        elif earlier is None:
            kept[r.fid] = r
    return kept


async def _sensor_types(conn: psycopg.AsyncConnection, thresholds: Thresholds, readings: list[Reading]
                        ) -> dict[str, str]:
    cursor = await conn.execute(_sensors_sql(thresholds), (sorted({r.sensor for r in readings}),))
    return dict(await cursor.fetchall())


async def check_against_sensors(conn: psycopg.AsyncConnection, thresholds: Thresholds,
                                readings: list[Reading]) -> list[Reading]:
    """Known sensors, values in their type's range, units as declared; one reading per sensor and instant
    (an exact repeat inside the batch is dropped, a conflicting one refused). InvalidReadings otherwise.

    For writers that may read the sensors layer: the errors name each reading's sensor and its type."""
    types = await _sensor_types(conn, thresholds, readings)
    errors: list[dict[str, Any]] = []
    known = []
    for r in readings:
        kind = types.get(r.sensor)
        if kind is None:
            _problem(errors, r.index, "sensor", f"no sensor '{r.sensor[:MAX_SENSOR_ID]}' in "
                     f"{thresholds.sensors.id}")
            continue
        declared = thresholds.file.sensor_types[kind]
        if not declared.min <= r.value <= declared.max:
            _problem(errors, r.index, "value", f"{r.value:g} is outside what a {kind} sensor can read "
                     f"({declared.min:g} to {declared.max:g} {declared.unit})")
        if r.unit is not None and r.unit != declared.unit:
            _problem(errors, r.index, "unit", f"a {kind} sensor reports in {declared.unit}, not '{r.unit[:20]}'")
        known.append(r)
    kept = _duplicates(known, errors)
    if errors:
        raise _refused(errors, len(readings))
    return list(kept.values())


@dataclass(frozen=True)
class BlindCheck:
    """The readings to store, and how many were dropped for what only the sensors layer tells."""

    kept: list[Reading]
    dropped: int


async def check_blind(conn: psycopg.AsyncConnection, thresholds: Thresholds, readings: list[Reading]) -> BlindCheck:
    """The checks for a writer that may not read the sensors layer: whatever they refuse depends only on the body
    (a conflicting repeat, a unit no sensor type has); a reading whose sensor does not exist, or whose value or unit
    does not fit its sensor's type, is dropped without saying which, so the answer tells nothing of the sensors
    (which exist, of what type). The operators see the count in ops.refresh_log (`rejected`)."""
    errors: list[dict[str, Any]] = []
    units = {t.unit for t in thresholds.file.sensor_types.values()}
    for r in readings:
        if r.unit is not None and r.unit not in units:
            _problem(errors, r.index, "unit", f"'{r.unit[:20]}' is no sensor type's unit ({', '.join(sorted(units))})")
    kept = _duplicates(readings, errors)
    if errors:
        raise _refused(errors, len(readings))
    types = await _sensor_types(conn, thresholds, list(kept.values()))
    fits = []
    for r in kept.values():
        declared = thresholds.file.sensor_types.get(types.get(r.sensor, ""))
        if declared is not None and declared.min <= r.value <= declared.max and r.unit in (None, declared.unit):
            fits.append(r)
    return BlindCheck(fits, len(kept) - len(fits))


# The layer is partitioned by month of observed_at (layers/pipeline/sensor_readings.yml, gis.db.layer_partitions),
# so its unique key is (fid, observed_at). A posted reading's fid is its sensor and instant, so a fid has one
# instant; `moved` still removes a delivered row whose fid held another instant, so a fid is never current twice.
_UPSERT = """
WITH incoming AS (
  SELECT i.fid, i.sensor, s.{sensor_type} AS sensor_type, s.{utility} AS utility, i.observed_at, i.value,
         u.unit, i.quality, s.geom
  FROM unnest(%(fid)s::text[], %(sensor)s::text[], %(at)s::timestamptz[], %(value)s::float8[],
              %(quality)s::text[]) AS i(fid, sensor, observed_at, value, quality)
  JOIN {sensors} s ON s.fid = i.sensor
  JOIN unnest(%(types)s::text[], %(units)s::text[]) AS u(sensor_type, unit) ON u.sensor_type = s.{sensor_type}
), changed AS (
  SELECT i.*, c.fid IS NULL AS is_new{c_kept} FROM incoming i LEFT JOIN {readings} c ON c.fid = i.fid
  WHERE c.fid IS NULL OR ({c_mine}, c.geom) IS DISTINCT FROM
        (i.sensor, i.sensor_type, i.utility, i.observed_at, i.value, i.unit, i.quality, i.geom)
), closed AS (
  INSERT INTO {history} (fid, {all_fields}, geom, valid_from, valid_to, row_hash, refresh_id, closed_refresh_id)
  SELECT c.fid, {c_all}, c.geom, c.valid_from, greatest(now(), c.valid_from), c.row_hash, c.refresh_id, %(rid)s
  FROM {readings} c JOIN changed x ON x.fid = c.fid
  RETURNING 1
), moved AS (
  DELETE FROM {readings} c USING changed x WHERE c.fid = x.fid AND c.{observed_at} <> x.observed_at
  RETURNING 1
), written AS (
  INSERT INTO {readings} AS c (fid, {mine}, geom, valid_from, row_hash, refresh_id)
  SELECT x.fid, x.sensor, x.sensor_type, x.utility, x.observed_at, x.value, x.unit, x.quality, x.geom, now(),
         {row_hash}, %(rid)s
  FROM changed x
  ON CONFLICT (fid, {observed_at}) DO UPDATE SET {set_mine}, geom = EXCLUDED.geom, valid_from = EXCLUDED.valid_from,
    row_hash = EXCLUDED.row_hash, refresh_id = EXCLUDED.refresh_id
  RETURNING 1
)
SELECT (SELECT count(*) FROM changed WHERE is_new), (SELECT count(*) FROM changed WHERE NOT is_new),
       (SELECT count(*) FROM closed),
       (SELECT ARRAY[ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)] FROM (SELECT ST_Extent(geom) e FROM changed) b),
       (SELECT min(observed_at) FROM changed), (SELECT max(observed_at) FROM changed)
"""

_LOG = """
INSERT INTO ops.refresh_log (refresh_id, layer_id, status, started_at, source_path, inserted, updated, closed,
                             unchanged, rejected, timings)
VALUES (%(rid)s, %(layer)s, 'succeeded', %(started)s, %(source)s, %(inserted)s, %(updated)s, 0, %(unchanged)s,
        %(rejected)s, '{}'::jsonb)
"""

# Counts grow by what the batch inserted; the extents widen to the batch's; the version moves when rows changed.
_STATS = """
UPDATE ops.layer_stats SET row_count = row_count + %(inserted)s,
  extent = CASE WHEN %(extent)s::float8[] IS NULL THEN extent ELSE ARRAY[
    least(extent[1], (%(extent)s::float8[])[1]), least(extent[2], (%(extent)s::float8[])[2]),
    greatest(extent[3], (%(extent)s::float8[])[3]), greatest(extent[4], (%(extent)s::float8[])[4])] END,
  time_extent = CASE WHEN %(t0)s::timestamptz IS NULL THEN time_extent ELSE ARRAY[
    least(time_extent[1], %(t0)s::timestamptz), greatest(time_extent[2], %(t1)s::timestamptz)] END,
  last_refresh_id = %(rid)s,
  changed_refresh_id = CASE WHEN %(changed)s THEN %(rid)s ELSE changed_refresh_id END,
  changed_at = CASE WHEN %(changed)s THEN now() ELSE changed_at END
WHERE layer_id = %(layer)s
"""

_FIRST_STATS = """
INSERT INTO ops.layer_stats (layer_id, row_count, extent, time_extent, last_refresh_id, changed_refresh_id,
                             changed_at)
SELECT %(layer)s, count(*), ARRAY[ST_XMin(ST_Extent(geom)), ST_YMin(ST_Extent(geom)), ST_XMax(ST_Extent(geom)),
       ST_YMax(ST_Extent(geom))], ARRAY[min({observed_at}), max({observed_at})], %(rid)s, %(rid)s, now()
FROM {readings}
"""


def _statements(thresholds: Thresholds) -> dict[str, sql.Composed]:
    spec = thresholds.readings
    mine = [ids.column(spec, name) for name in READING_FIELDS]
    every = ids.field_columns(spec)
    # Fields the readings do not set keep the stored version's values; the hash is the refresh's (row_hash), so a
    # file delivery of a posted reading leaves it alone.
    kept = [ids.column(spec, name) for name in spec.field_names if name not in READING_FIELDS]
    names = {
        "readings": ids.current_table(spec), "history": ids.history_table(spec),
        "sensors": ids.current_table(thresholds.sensors),
        "sensor_type": ids.column(thresholds.sensors, "sensor_type"),
        "utility": ids.column(thresholds.sensors, "utility"),
        "mine": sql.SQL(", ").join(mine), "c_mine": sql.SQL(", ").join(sql.SQL("c.{}").format(c) for c in mine),
        "all_fields": sql.SQL(", ").join(every), "c_all": sql.SQL(", ").join(sql.SQL("c.{}").format(c) for c in every),
        "set_mine": sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(c) for c in mine),
        "observed_at": ids.column(spec, "observed_at"),
        "c_kept": sql.SQL("").join(sql.SQL(", c.{}").format(c) for c in kept),
        "row_hash": row_hash.hash_sql(spec, "x"),
    }
    return {"upsert": sql.SQL(_UPSERT).format(**names), "first_stats": sql.SQL(_FIRST_STATS).format(**names)}


async def store(conn: psycopg.AsyncConnection, thresholds: Thresholds, readings: list[Reading],
                source: str, rejected: int = 0) -> StoreResult:
    """Write the checked readings in one transaction (the caller's connection, not in a transaction yet);
    `rejected`: readings dropped by check_blind, for the refresh log."""
    spec = thresholds.readings
    statements = _statements(thresholds)
    started = datetime.now(UTC)
    types = list(thresholds.file.sensor_types)
    async with conn.transaction():
        await conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        try:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('gis-refresh:' || %s))", (spec.id,))
        except psycopg.errors.LockNotAvailable:
            raise WriteBusy(f"'{spec.id}' is being refreshed; post the batch again in a minute") from None
        row = await (await conn.execute("SELECT nextval('ops.refresh_log_refresh_id_seq')")).fetchone()
        assert row is not None
        rid = int(row[0])
        cursor = await conn.execute(statements["upsert"], {
            "fid": [r.fid for r in readings], "sensor": [r.sensor for r in readings],
            "at": [r.observed_at for r in readings], "value": [r.value for r in readings],
            "quality": [r.quality for r in readings], "types": types,
            "units": [thresholds.file.sensor_types[t].unit for t in types], "rid": rid})
        counts = await cursor.fetchone()
        assert counts is not None
        inserted, updated, _closed, extent, t0, t1 = counts
        unchanged = len(readings) - inserted - updated
        await conn.execute(_LOG, {"rid": rid, "layer": spec.id, "started": started, "source": source,
                                  "inserted": inserted, "updated": updated, "unchanged": unchanged,
                                  "rejected": rejected})
        stats = await conn.execute(_STATS, {"inserted": inserted, "extent": extent, "t0": t0, "t1": t1, "rid": rid,
                                            "changed": bool(inserted or updated), "layer": spec.id})
        if stats.rowcount == 0:
            await conn.execute(statements["first_stats"], {"layer": spec.id, "rid": rid})
        await conn.execute("UPDATE ops.refresh_log SET row_count = s.row_count, extent = s.extent "
                           "FROM ops.layer_stats s WHERE s.layer_id = refresh_log.layer_id "
                           "AND refresh_log.refresh_id = %s", (rid,))
    return StoreResult(rid, len(readings), inserted, updated, unchanged)
