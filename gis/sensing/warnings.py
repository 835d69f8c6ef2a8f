"""Graded warnings: readings that reach a threshold of layers/sensor-thresholds.yml, derived when read.

Nothing is stored besides the readings: a reading's level is the most severe limit it reaches, computed in
SQL with the thresholds in force (so a corrected reading, or a changed limit, is graded anew). Readings of
quality `bad` are not graded.

Order and the watch cursor: warnings come in the order their readings were written, (refresh id, fid).
Writes to the readings layer are serialised (gis/sensing/readings.py), so a reading committed later always
sorts after every reading visible earlier: a client that passes back the `cursor` of its last answer as
`since` gets exactly the warnings written since, each once (a corrected reading comes again, graded anew).
The cursor of an answer with nothing new is the newest reading of any level, so a watcher that filters
on one sensor does not rescan the others.
"""

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql

from gis import identifiers as ids
from gis.features.temporal import TimeRange
from gis.sensing.thresholds import INSPECTION_FIELDS, READING_FIELDS, Thresholds

MAX_LIMIT = 1000


class InvalidCursor(ValueError):
    """`since` is not a cursor this service gave out."""


@dataclass(frozen=True)
class Cursor:
    refresh_id: int
    fid: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{self.refresh_id}:{self.fid}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")
            rid, fid = raw.split(":", 1)
            if "\x00" in fid:
                raise ValueError(fid)
            return cls(int(rid), fid)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidCursor("not a cursor from this service (pass back the `cursor` of an answer)") from None


@dataclass(frozen=True)
class WarningQuery:
    levels: tuple[str, ...] = ()  # empty: every level
    sensors: tuple[str, ...] = ()  # empty: every sensor
    time: TimeRange | None = None  # on observed_at
    since: Cursor | None = None
    limit: int = 100
    inspections: bool = False  # field inspections' severities too (the caller may read that layer)


@dataclass(frozen=True)
class WarningPage:
    features: list[dict[str, Any]]
    cursor: Cursor | None  # where the next watch starts; None when the layer has no readings yet
    more: bool  # another page follows at once


_WARNINGS = """
WITH t AS (
  SELECT * FROM unnest(%(t_id)s::text[], %(t_type)s::text[], %(t_utility)s::text[], %(t_dir)s::text[],
                       %(t_severity)s::int[], %(t_level)s::text[], %(t_limit)s::float8[])
    AS t(threshold, sensor_type, utility, direction, severity, level, lim)
), graded AS (
  SELECT DISTINCT ON (r.refresh_id, r.fid) r.refresh_id, r.fid, r.geom, {r_fields}, t.threshold, t.direction,
         t.severity, t.level, t.lim
  FROM {readings} r
  JOIN t ON t.sensor_type = r.{sensor_type} AND (t.utility IS NULL OR t.utility = r.{utility})
        AND CASE WHEN t.direction = 'above' THEN r.{value} >= t.lim ELSE r.{value} <= t.lim END
  WHERE r.{quality} IS DISTINCT FROM 'bad'{filters}
  ORDER BY r.refresh_id, r.fid, t.severity DESC
){inspected}, page AS (
  SELECT * FROM (SELECT * FROM graded{union_inspected}) g
  WHERE (%(levels)s::text[] IS NULL OR g.level = ANY(%(levels)s::text[]))
  ORDER BY g.refresh_id, g.fid LIMIT %(limit)s
)
SELECT p.refresh_id, p.fid, ST_AsGeoJSON(p.geom, 7), {p_fields}, p.threshold, p.direction, p.severity, p.level,
       p.lim, NULL::bigint, NULL::text FROM page p
UNION ALL
SELECT NULL, NULL, NULL, {nulls}, NULL, NULL, NULL, NULL, NULL, n.refresh_id, n.fid
FROM (SELECT * FROM ((SELECT refresh_id, fid FROM {readings} ORDER BY refresh_id DESC, fid DESC LIMIT 1)
                     {newest_inspected}) x ORDER BY refresh_id DESC, fid DESC LIMIT 1) n
"""

# Field inspections with a severity of a level join the warnings: their finding is the `threshold`
# (inspection:<finding>), the node or pipe they concern the `sensor`, their time the `observed_at`.
_INSPECTED = """, inspected AS (
  SELECT i.refresh_id, i.fid, i.geom, coalesce(i.{node_fid}, i.{pipe_fid}), NULL::text, NULL::text, i.{inspected_at},
         NULL::float8, NULL::text, NULL::text, 'inspection:' || i.{finding}, NULL::text, l.severity, i.{severity},
         NULL::float8
  FROM {inspections} i JOIN unnest(%(l_id)s::text[], %(l_sev)s::int[]) AS l(level, severity) ON l.level = i.{severity}
  WHERE true{filters}
)"""


def _threshold_params(thresholds: Thresholds) -> dict[str, list[Any]]:
    rows: list[tuple[Any, ...]] = []
    for t in thresholds.file.thresholds:
        for utility in t.utility or (None,):
            for level_id, limit in t.limits.items():
                rows.append((t.id, t.sensor_type, utility, t.direction, thresholds.severity(level_id), level_id,
                             limit))
    keys = ("t_id", "t_type", "t_utility", "t_dir", "t_severity", "t_level", "t_limit")
    return {key: [r[i] for r in rows] for i, key in enumerate(keys)}


def _statement(thresholds: Thresholds, q: WarningQuery) -> tuple[sql.Composed, dict[str, Any]]:
    spec = thresholds.readings
    col = {name: ids.column(spec, name) for name in READING_FIELDS}
    params: dict[str, Any] = {**_threshold_params(thresholds), "levels": list(q.levels) or None,
                              "limit": q.limit + 1}
    filters: list[sql.Composable] = []
    if q.sensors:
        filters.append(sql.SQL("r.{} = ANY(%(sensors)s::text[])").format(col["sensor"]))
        params["sensors"] = list(q.sensors)
    if q.time is not None and q.time.start is not None:
        filters.append(sql.SQL("r.{} >= %(t_start)s").format(col["observed_at"]))
        params["t_start"] = q.time.start
    if q.time is not None and q.time.end is not None:
        op = "<=" if q.time.end_inclusive else "<"
        filters.append(sql.SQL("r.{} {} %(t_end)s").format(col["observed_at"], sql.SQL(op)))
        params["t_end"] = q.time.end
    if q.since is not None:
        filters.append(sql.SQL("(r.refresh_id, r.fid) > (%(after_rid)s::bigint, %(after_fid)s::text)"))
        params.update(after_rid=q.since.refresh_id, after_fid=q.since.fid)
    inspected, union, newest = _inspections(thresholds, q, params)
    query = sql.SQL(_WARNINGS).format(
        inspected=inspected, union_inspected=union, newest_inspected=newest,
        readings=ids.current_table(spec), sensor_type=col["sensor_type"], utility=col["utility"],
        value=col["value"], quality=col["quality"],
        r_fields=sql.SQL(", ").join(sql.SQL("r.{}").format(c) for c in col.values()),
        p_fields=sql.SQL(", ").join(sql.SQL("p.{}").format(c) for c in col.values()),
        nulls=sql.SQL(", ").join(sql.SQL("NULL") for _ in col),
        filters=sql.SQL("").join(sql.SQL(" AND ") + f for f in filters))
    return query, params


def _inspections(thresholds: Thresholds, q: WarningQuery, params: dict[str, Any]
                 ) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """The inspections' part of the warnings statement (CTE, its union, its newest row); empty when left out."""
    spec = thresholds.inspections
    none = sql.SQL("")
    if spec is None or not q.inspections or q.sensors:  # a sensor filter asks for sensors' readings only
        return none, none, none
    col = {name: ids.column(spec, name) for name in INSPECTION_FIELDS}
    filters: list[sql.Composable] = []
    if q.time is not None and q.time.start is not None:
        filters.append(sql.SQL("i.{} >= %(t_start)s").format(col["inspected_at"]))
    if q.time is not None and q.time.end is not None:
        op = "<=" if q.time.end_inclusive else "<"
        filters.append(sql.SQL("i.{} {} %(t_end)s").format(col["inspected_at"], sql.SQL(op)))
    if q.since is not None:
        filters.append(sql.SQL("(i.refresh_id, i.fid) > (%(after_rid)s::bigint, %(after_fid)s::text)"))
    params.update(l_id=[lv.id for lv in thresholds.levels], l_sev=[thresholds.severity(lv.id)
                                                                   for lv in thresholds.levels])
    table = ids.current_table(spec)
    cte = sql.SQL(_INSPECTED).format(inspections=table, filters=sql.SQL("").join(sql.SQL(" AND ") + f for f in filters),
                                     **col)
    newest = sql.SQL(" UNION ALL (SELECT refresh_id, fid FROM {} ORDER BY refresh_id DESC, fid DESC LIMIT 1)").format(
        table)
    return cte, sql.SQL(" UNION ALL SELECT * FROM inspected"), newest


def _properties(thresholds: Thresholds, row: tuple[Any, ...], shown: tuple[str, ...]) -> dict[str, Any]:
    values = dict(zip(READING_FIELDS, row[3:3 + len(READING_FIELDS)], strict=True))
    threshold, direction, severity, level_id, limit = row[3 + len(READING_FIELDS):8 + len(READING_FIELDS)]
    level = thresholds.level(level_id)
    assert level is not None
    props: dict[str, Any] = {name: values[name] for name in READING_FIELDS if name in shown}
    if "observed_at" in props:
        props["observed_at"] = props["observed_at"].isoformat()
    props.update(level=level.id, level_zh=level.zh, level_en=level.en, severity=severity, threshold=threshold,
                 direction=direction, limit=limit, colour=level.colour)
    return props


async def read_warnings(conn: psycopg.AsyncConnection, thresholds: Thresholds, q: WarningQuery,
                        shown: tuple[str, ...] = tuple(READING_FIELDS)) -> WarningPage:
    """One page of warnings matching q, in write order, with the cursor to continue from.

    `shown`: the reading fields the caller may see (a role's masked fields are left out).
    """
    query, params = _statement(thresholds, q)
    cursor = await conn.execute(query, params)
    rows = await cursor.fetchall()
    newest = next(((r[-2], r[-1]) for r in rows if r[0] is None), None)
    found = sorted((r for r in rows if r[0] is not None), key=lambda r: (r[0], r[1]))
    more = len(found) > q.limit
    found = found[:q.limit]
    features = [{"type": "Feature", "id": r[1], "geometry": orjson.loads(r[2]),
                 "properties": _properties(thresholds, r, shown)} for r in found]
    if more:
        last: Cursor | None = Cursor(int(found[-1][0]), found[-1][1])
    elif newest is not None:
        last = Cursor(int(newest[0]), newest[1])
    else:
        last = q.since
    return WarningPage(features, last, more)
