"""Environmental analyses over the monitoring layers (layers/environment-rules.yml).

latest        the latest value per station and pollutant (at or before an instant, or within an interval),
              each flagged against the GB 3095-2012 limit its period matches
exceedances   every observation above its GB 3095-2012 limit in a time window, with counts per station
              and pollutant over all observations checked; limits the series cannot be compared with
              (1-hour, annual) are listed as not evaluated
source_buffers  pollution sources buffered by emission class (or industry) and checked against the
              ecological red line and the water bodies: the parts of each buffer inside them, in m²

Each returns a PlacesResult (JSON, GeoJSON and an HTML page with a map: gis.analysis.place_report).
"""

from collections import Counter
from typing import Any

import psycopg
from psycopg import sql

from gis import identifiers as ids
from gis.analysis.environment_rules import EnvironmentRules
from gis.analysis.place_report import PlacesResult, Style, feature, fetch_dicts, iso
from gis.errors import InvalidInput
from gis.features.temporal import TimeRange, parse_datetime

METRIC_SRID = 4550  # CGCS2000 / 3-degree Gauss-Kruger CM 123E
DEGREES_PER_METRE = 1 / 60_000  # a generous box in lon/lat degrees at Shenyang's latitude (1° lon ≈ 83 km)
MAX_FEATURES = 5_000  # places returned per list; counts are always complete

STYLES: dict[str, Style] = {
    "buffer": ("#ff7f0e", "#ff7f0e33", 1.0, 0), "buffer_in_conflict": ("#d62728", "#d6272833", 1.5, 0),
    "redline_overlap": ("#2ca02c", "#2ca02caa", 0.8, 0), "water_overlap": ("#1f77b4", "#1f77b4aa", 0.8, 0),
    "source": ("#111", "#ff7f0e", 1.0, 4), "station": ("#111", "#2ca02c", 1.0, 5),
    "station_exceeding": ("#111", "#d62728", 1.0, 6), "exceedance": ("#d62728", "#d62728", 0.5, 2),
}
LEGEND = {
    "buffer": "缓冲区 source buffer", "buffer_in_conflict": "缓冲区(涉红线/水体) buffer reaching red line or water",
    "redline_overlap": "红线内部分 inside the ecological red line", "water_overlap": "水体内部分 inside a water body",
    "source": "污染源 pollution source", "station": "监测站 station", "station_exceeding": "超标站点 station with "
    "exceedances", "exceedance": "超标观测 exceedance",
}


def _list(values: Any, name: str, allowed: tuple[str, ...] | None = None) -> list[str] | None:
    if values is None:
        return None
    if not (isinstance(values, list) and values and all(isinstance(v, str) for v in values)):
        raise InvalidInput(name, "a non-empty list of strings")
    unknown = [v for v in values if allowed is not None and v not in allowed]
    if unknown:
        raise InvalidInput(name, f"'{unknown[0][:40]}' is not one of {', '.join(allowed or ())}")
    return list(values)


def parse_window(text: Any) -> TimeRange | None:
    """The `datetime` input (an instant or interval, as for /items) or None."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise InvalidInput("datetime", "an RFC 3339 instant or interval (start/end, '..' for open)")
    return parse_datetime(text)


def _time_params(window: TimeRange | None, *, instant_is_end: bool) -> dict[str, Any]:
    """start/end bounds; an instant is the end of the time looked at when instant_is_end (latest as of)."""
    if window is None:
        return {"t0": None, "t1": None, "t1_incl": True}
    start = None if (window.is_instant and instant_is_end) else window.start
    return {"t0": start, "t1": window.end, "t1_incl": window.end_inclusive}


_TIME = ("(%(t0)s::timestamptz IS NULL OR o.{t} >= %(t0)s) AND (%(t1)s::timestamptz IS NULL OR o.{t} < %(t1)s "
         "OR (%(t1_incl)s AND o.{t} = %(t1)s))")
_FILTERS = """ AND (%(stations)s::text[] IS NULL OR o.{station} = ANY(%(stations)s))
    AND (%(pollutants)s::text[] IS NULL OR o.{pollutant} = ANY(%(pollutants)s))"""


def _pollutants(rules: EnvironmentRules) -> tuple[str, ...]:
    return tuple(rules.observations.known_field("pollutant").values or ())


def _limits_params(rules: EnvironmentRules) -> dict[str, Any]:
    limits = rules.applicable_limits()
    return {"l_pollutant": [lim.pollutant for lim in limits], "l_period": [lim.period for lim in limits],
            "l_value": [lim.limit for lim in limits], "l_unit": [lim.unit for lim in limits]}


def _tables(rules: EnvironmentRules) -> dict[str, sql.Composable]:
    o, s = rules.observations, rules.stations
    return {"O": ids.current_table(o), "S": ids.current_table(s), "t": ids.column(o, "observed_at"),
            "station": ids.column(o, "station"), "pollutant": ids.column(o, "pollutant"),
            "value": ids.column(o, "value"), "unit": ids.column(o, "unit"), "name": ids.column(s, "name"),
            "kind": ids.column(s, "station_type")}


_LIMITS = sql.SQL("unnest(%(l_pollutant)s::text[], %(l_period)s::text[], %(l_value)s::float8[], "
                  "%(l_unit)s::text[]) AS l(pollutant, period, limit_value, unit)")


def _parts(rules: EnvironmentRules) -> dict[str, sql.Composable]:
    """The tables and columns, the time and list filters on `o`, and the applicable limits as `l`."""
    t = _tables(rules)
    return {**t, "where": sql.SQL(_TIME + _FILTERS).format(**t), "limits": _LIMITS}


# -- latest value per station and pollutant ----------------------------------------------------------

def latest_statement(rules: EnvironmentRules) -> sql.Composed:
    return sql.SQL("""
WITH latest AS (
  SELECT DISTINCT ON (o.{station}, o.{pollutant}) o.{station} AS station, o.{pollutant} AS pollutant,
         o.{value} AS value, o.{unit} AS unit, o.{t} AS observed_at
  FROM {O} o
  WHERE {where}
  ORDER BY o.{station}, o.{pollutant}, o.{t} DESC
)
SELECT s.fid AS station, s.{name} AS name, s.{kind} AS station_type, x.pollutant, x.value, x.unit,
       x.observed_at, l.limit_value, l.period, ST_AsGeoJSON(s.geom, 7, 0)::json AS geometry
FROM latest x JOIN {S} s ON s.fid = x.station
LEFT JOIN {limits} ON l.pollutant = x.pollutant
ORDER BY s.fid, x.pollutant""").format(**_parts(rules))


def latest(conn: psycopg.Connection, rules: EnvironmentRules, *, datetime: Any = None, stations: Any = None,
           pollutants: Any = None) -> PlacesResult:
    """Per station: its latest value of each pollutant, at or before `datetime` (default: the latest stored)."""
    window = parse_window(datetime)
    params = {**_time_params(window, instant_is_end=True), **_limits_params(rules),
              "stations": _list(stations, "stations"),
              "pollutants": _list(pollutants, "pollutants", _pollutants(rules))}
    rows = fetch_dicts(conn, latest_statement(rules), params)
    by_station: dict[str, dict[str, Any]] = {}
    for r in rows:
        station = by_station.setdefault(r["station"], {
            "fid": r["station"], "name": r["name"], "station_type": r["station_type"], "geometry": r["geometry"],
            "values": {}, "exceeding": []})
        exceeds = r["limit_value"] is not None and r["value"] > r["limit_value"]
        station["values"][r["pollutant"]] = {
            "value": r["value"], "unit": r["unit"], "observed_at": iso(r["observed_at"]),
            "limit": r["limit_value"], "period": r["period"], "exceeds": exceeds}
        if exceeds:
            station["exceeding"].append(r["pollutant"])
    features = [feature(s["fid"], s["geometry"], {
        "role": "station_exceeding" if s["exceeding"] else "station", "fid": s["fid"], "name": s["name"],
        "station_type": s["station_type"], "latest": s["values"], "exceeding": s["exceeding"]})
        for s in by_station.values()]
    summary = {"stations": len(features), "values": len(rows),
               "stations_exceeding": sum(1 for f in features if f["properties"]["exceeding"]),
               "standard": f"{rules.air_quality.standard} grade {rules.air_quality.grade}"}
    return PlacesResult("env-latest", "最新监测值 · Latest value per station and pollutant",
                        {"datetime": datetime, "stations": params["stations"], "pollutants": params["pollutants"]},
                        summary, {"stations": features}, rules.path.name)


# -- exceedances of the national limits --------------------------------------------------------------

def exceedance_statements(rules: EnvironmentRules) -> tuple[sql.Composed, sql.Composed]:
    """(counts per station and pollutant over every observation checked, the exceedances themselves)."""
    counts = sql.SQL("""
SELECT o.{station} AS station, l.pollutant, l.period, l.limit_value, count(*) AS checked,
       count(*) FILTER (WHERE o.{value} > l.limit_value) AS exceeded, max(o.{value}) AS max_value
FROM {O} o JOIN {limits} ON l.pollutant = o.{pollutant}
WHERE {where}
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2""").format(**_parts(rules))
    found = sql.SQL("""
SELECT o.fid, o.{station} AS station, s.{name} AS station_name, l.pollutant, o.{t} AS observed_at,
       o.{value} AS value, l.limit_value, l.period, l.unit,
       round((o.{value} / l.limit_value)::numeric, 3)::float8 AS ratio,
       ST_AsGeoJSON(COALESCE(s.geom, o.geom), 7, 0)::json AS geometry
FROM {O} o JOIN {limits} ON l.pollutant = o.{pollutant}
LEFT JOIN {S} s ON s.fid = o.{station}
WHERE o.{value} > l.limit_value AND {where}
ORDER BY o.{t}, o.{station}, l.pollutant
LIMIT %(max)s""").format(**_parts(rules))
    return counts, found


def exceedances(conn: psycopg.Connection, rules: EnvironmentRules, *, datetime: Any = None, stations: Any = None,
                pollutants: Any = None) -> PlacesResult:
    """Observations above their GB 3095-2012 limit in the window (default: the whole series)."""
    window = parse_window(datetime)
    params = {**_time_params(window, instant_is_end=False), **_limits_params(rules),
              "stations": _list(stations, "stations"),
              "pollutants": _list(pollutants, "pollutants", _pollutants(rules)), "max": MAX_FEATURES}
    counts_sql, found_sql = exceedance_statements(rules)
    checks = fetch_dicts(conn, counts_sql, params)
    found = fetch_dicts(conn, found_sql, params)
    by_station, by_pollutant = Counter[str](), Counter[str]()
    for c in checks:
        by_station[c["station"]] += c["exceeded"]
        by_pollutant[c["pollutant"]] += c["exceeded"]
    places = [feature(r["fid"], r.pop("geometry"), {"role": "exceedance", **{k: iso(v) for k, v in r.items()}})
              for r in found]
    stations_hit: dict[str, dict[str, Any]] = {}
    for f in places:
        p = f["properties"]
        stations_hit.setdefault(p["station"], feature(p["station"], f["geometry"], {
            "role": "station_exceeding", "fid": p["station"], "name": p["station_name"],
            "exceedances": by_station[p["station"]]}))
    evaluated = {(lim.pollutant, lim.period) for lim in rules.applicable_limits()}
    total = sum(by_station.values())
    summary = {
        "standard": f"{rules.air_quality.standard} grade {rules.air_quality.grade}",
        "observations_checked": sum(c["checked"] for c in checks),
        "exceedances": total,
        "by_pollutant": dict(sorted(by_pollutant.items())),
        "stations_exceeding": sum(1 for n in by_station.values() if n),
        "listed": len(places), "truncated": total > len(places),
        "checks": checks,
        "not_evaluated": [{"pollutant": lim.pollutant, "period": lim.period, "limit": lim.limit, "unit": lim.unit,
                           "reason": f"one value of the series stands for {' / '.join(rules.series.periods)}"}
                          for lim in rules.air_quality.limits if (lim.pollutant, lim.period) not in evaluated],
    }
    return PlacesResult("env-exceedances", "空气质量超标 · Exceedances of the GB 3095-2012 limits",
                        {"datetime": datetime, "stations": params["stations"], "pollutants": params["pollutants"]},
                        summary, {"stations": list(stations_hit.values()), "exceedances": places}, rules.path.name)


# -- pollution sources against the red line and the water bodies -------------------------------------

def buffer_statement(rules: EnvironmentRules) -> sql.Composed:
    """Each source with its buffer (EPSG:4550) and the parts of it inside red-line and water features."""
    src, red, water = rules.sources, rules.redline, rules.water

    def hits(spec_table: sql.Composable, name: sql.Composable) -> sql.Composed:
        return sql.SQL("""(
    SELECT json_agg(json_build_object(
             'fid', f.fid, 'name', f.{name},
             'area_m2', round(ST_Area(ST_Intersection(z.zone, ST_Transform(f.geom, {srid})))::numeric, 2),
             'geometry', ST_AsGeoJSON(
                ST_Transform(ST_Intersection(z.zone, ST_Transform(f.geom, {srid})), 4490), 7, 0)::json)
           ORDER BY f.fid)
    FROM {table} f
    WHERE f.geom && ST_Expand(z.geom, z.buffer_m * %(deg)s)
      AND ST_Intersects(ST_Transform(f.geom, {srid}), z.zone))""").format(
            table=spec_table, name=name, srid=sql.Literal(METRIC_SRID))

    return sql.SQL("""
WITH z AS (
  SELECT s.fid, s.{name} AS name, s.{industry} AS industry, s.{emission} AS emission_class, s.geom,
         COALESCE(bi.metres, bc.metres) AS buffer_m,
         ST_Buffer(ST_Transform(s.geom, {srid}), COALESCE(bi.metres, bc.metres), 32) AS zone
  FROM {S} s
  LEFT JOIN unnest(%(industries)s::text[], %(industry_m)s::float8[]) AS bi(industry, metres)
         ON bi.industry = s.{industry}
  LEFT JOIN unnest(%(classes)s::text[], %(class_m)s::float8[]) AS bc(emission_class, metres)
         ON bc.emission_class = s.{emission}
  WHERE (%(sources)s::text[] IS NULL OR s.fid = ANY(%(sources)s))
    AND (%(only_classes)s::text[] IS NULL OR s.{emission} = ANY(%(only_classes)s))
)
SELECT z.fid, z.name, z.industry, z.emission_class, z.buffer_m, ST_AsGeoJSON(z.geom, 7, 0)::json AS geometry,
       ST_AsGeoJSON(ST_Transform(z.zone, 4490), 7, 0)::json AS zone, {red_hits} AS redline, {water_hits} AS water
FROM z ORDER BY z.fid""").format(
        S=ids.current_table(src), name=ids.column(src, "name"), industry=ids.column(src, "industry"),
        emission=ids.column(src, "emission_class"), srid=sql.Literal(METRIC_SRID),
        red_hits=hits(ids.current_table(red), ids.column(red, "name")),
        water_hits=hits(ids.current_table(water), ids.column(water, "name")))


def source_buffers(conn: psycopg.Connection, rules: EnvironmentRules, *, sources: Any = None,
                   emission_classes: Any = None) -> PlacesResult:
    """Every source (or those named / of the classes given) buffered and checked against red line and water."""
    classes = tuple(rules.buffers.by_emission_class)
    params = {"industries": list(rules.buffers.by_industry), "industry_m": list(rules.buffers.by_industry.values()),
              "classes": list(classes), "class_m": list(rules.buffers.by_emission_class.values()),
              "sources": _list(sources, "sources"),
              "only_classes": _list(emission_classes, "emission_classes", classes), "deg": DEGREES_PER_METRE * 2}
    rows = fetch_dicts(conn, buffer_statement(rules), params)
    sources_out: list[dict[str, Any]] = []
    buffers: list[dict[str, Any]] = []
    red_parts: list[dict[str, Any]] = []
    water_parts: list[dict[str, Any]] = []
    for r in rows:
        red, water = r["redline"] or [], r["water"] or []
        props = {"fid": r["fid"], "name": r["name"], "industry": r["industry"], "emission_class": r["emission_class"],
                 "buffer_m": r["buffer_m"], "redline": [h["fid"] for h in red], "water": [h["fid"] for h in water],
                 "redline_area_m2": round(sum(float(h["area_m2"]) for h in red), 2),
                 "water_area_m2": round(sum(float(h["area_m2"]) for h in water), 2)}
        in_conflict = bool(red or water)
        sources_out.append(feature(r["fid"], r["geometry"], {"role": "source", **props}))
        buffers.append(feature(f"{r['fid']}:buffer", r["zone"], {
            "role": "buffer_in_conflict" if in_conflict else "buffer", **props}))
        for role, hits, out in (("redline_overlap", red, red_parts), ("water_overlap", water, water_parts)):
            out.extend(feature(f"{r['fid']}:{h['fid']}", h["geometry"], {
                "role": role, "source": r["fid"], "fid": h["fid"], "name": h["name"], "area_m2": float(h["area_m2"])})
                for h in hits)
    summary = {"sources": len(rows),
               "sources_reaching_redline": sum(1 for f in sources_out if f["properties"]["redline"]),
               "sources_reaching_water": sum(1 for f in sources_out if f["properties"]["water"]),
               "redline_area_m2": round(sum(f["properties"]["area_m2"] for f in red_parts), 2),
               "water_area_m2": round(sum(f["properties"]["area_m2"] for f in water_parts), 2),
               "distances_in": f"EPSG:{METRIC_SRID}"}
    return PlacesResult("env-source-buffers", "污染源缓冲区分析 · Pollution source buffers against red line and water",
                        {"sources": params["sources"], "emission_classes": params["only_classes"],
                         "buffers_m": {**rules.buffers.by_emission_class, **rules.buffers.by_industry}},
                        summary, {"sources": sources_out, "buffers": buffers, "redline_overlaps": red_parts,
                                  "water_overlaps": water_parts}, rules.path.name)
