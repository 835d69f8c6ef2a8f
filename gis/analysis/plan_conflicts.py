"""Plan against plan: the conflict patches (冲突图斑) between two polygon layers, with area, class and disposal.

A patch is one connected polygon of the overlap of one feature of side a with one feature of side b.
How it scales (hundreds of thousands of polygons a side, in minutes on two cores):
  1. each side, as of the requested time, is copied once into an unlogged scratch table in EPSG:4550
     (metres), features numbered along a geohash curve (neighbours get near numbers), then cut with
     ST_Subdivide into pieces of at most 64 vertices with a GiST index: every intersection test and
     overlay then works on small pieces, so big polygons (a development boundary, a red line) cost no
     more than small ones;
  2. side a is split into chunks of consecutive feature numbers, joined to b's pieces by the index
     (ST_Intersects), the piece-by-piece overlaps unioned per feature pair and dumped into connected
     polygons; chunks run on `workers` connections at once, and each one done moves the progress on;
  3. one statement classifies every patch (slivers under min_area_m2 dropped and counted), suggests
     its disposal from the check's rules, and writes ops.plan_conflict_patches and the run's summary.
Pieces of one feature never overlap each other, so no area is counted twice.
"""

import queue
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql

from gis import identifiers as ids
from gis.analysis.overlap import AREA_SRID, layer_source, parse_as_of
from gis.analysis.rules import OverlapRules, PlanConflictCheck, Side
from gis.errors import GisError, InvalidInput
from gis.features.temporal import TimeRange
from gis.layers import LayerSpec

PIECE_VERTICES = 64
CHUNKS_PER_WORKER = 12
SCRATCH_SCHEMA = "staging"

Progress = Callable[[int, str], None]


class Cancelled(GisError):
    """The run was dismissed while it ran; its scratch tables are gone and nothing was written."""


@dataclass(frozen=True)
class ConflictSummary:
    run_id: str
    check_id: str
    as_of: str | None
    min_area_m2: float
    a_layer: str
    b_layer: str
    a_features: int
    b_features: int
    patches: int
    area_m2: float
    slivers: int
    sliver_area_m2: float
    by_class: list[dict[str, Any]]
    by_disposal: list[dict[str, Any]]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "check": self.check_id, "as_of": self.as_of, "min_area_m2": self.min_area_m2,
            "a": {"layer": self.a_layer, "features": self.a_features},
            "b": {"layer": self.b_layer, "features": self.b_features},
            "patches": self.patches, "area_m2": round(self.area_m2, 2),
            "slivers": {"dropped": self.slivers, "area_m2": round(self.sliver_area_m2, 2)},
            "by_class": self.by_class, "by_disposal": self.by_disposal,
            "seconds": round(self.seconds, 2), "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }


def new_run_id() -> str:
    return secrets.token_hex(8)


def _scratch(run_id: str, name: str) -> sql.Identifier:
    if not run_id.replace("-", "").isalnum():
        raise ValueError("run ids are letters, digits and dashes")
    return sql.Identifier(SCRATCH_SCHEMA, f"pc_{run_id.replace('-', '')[:24]}_{name}")


def drop_scratch(conn: psycopg.Connection, run_id: str) -> None:
    """The scratch tables a run left behind when its process died under it (a resumed job starts clean)."""
    for name in ("fa", "pa", "fb", "pb", "raw"):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_scratch(run_id, name)))


def _side_statement(side: Side, spec: LayerSpec, time: TimeRange | None, features: sql.Identifier,
                    pieces: sql.Identifier) -> list[tuple[sql.Composed, dict[str, Any]]]:
    params: dict[str, Any] = {}
    predicates: list[sql.Composable] = []
    for i, (name, values) in enumerate(side.where.items()):
        key = f"w{i}"
        params[key] = list(values)
        predicates.append(sql.SQL("{} = ANY({}::text[])").format(ids.column(spec, name), sql.Placeholder(key)))
    cls = (sql.SQL("t.{}::text").format(ids.column(spec, side.class_field)) if side.class_field
           else sql.SQL("NULL::text"))
    from_item = layer_source(spec, time, predicates, params)
    return [
        (sql.SQL(
            "CREATE UNLOGGED TABLE {features} AS SELECT row_number() OVER (ORDER BY f.gh, f.fid)::int AS n, "
            "f.fid, f.cls, ST_Area(f.g) AS area, f.g FROM ("
            "SELECT t.fid, {cls} AS cls, ST_GeoHash(ST_Centroid(Box2D(t.geom)::geometry), 12) AS gh, "
            "ST_Transform(t.geom, {srid}) AS g FROM {source}) f"
        ).format(features=features, cls=cls, srid=sql.Literal(AREA_SRID), source=from_item), params),
        (sql.SQL("CREATE UNLOGGED TABLE {pieces} AS SELECT n, ST_Subdivide(g, {vertices}) AS geom FROM {features}"
                 ).format(pieces=pieces, features=features, vertices=sql.Literal(PIECE_VERTICES)), {}),
        (sql.SQL("CREATE INDEX ON {} USING gist (geom)").format(pieces), {}),
        (sql.SQL("CREATE INDEX ON {} (n)").format(pieces), {}),
        (sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (n)").format(features), {}),
        (sql.SQL("ANALYZE {}").format(pieces), {}),
        (sql.SQL("ANALYZE {}").format(features), {}),
    ]


def _chunk_statement(a_pieces: sql.Identifier, b_pieces: sql.Identifier, raw: sql.Identifier) -> sql.Composed:
    """Patches of side-a features lo..hi: overlaps of pieces, unioned per feature pair, split into polygons."""
    return sql.SQL(
        "INSERT INTO {raw} (an, bn, area, g) "
        "WITH frag AS ("
        " SELECT a.n AS an, b.n AS bn,"
        "  CASE WHEN ST_CoveredBy(a.geom, b.geom) THEN a.geom WHEN ST_CoveredBy(b.geom, a.geom) THEN b.geom"
        "  ELSE ST_CollectionExtract(ST_Intersection(a.geom, b.geom), 3) END AS g"
        " FROM {a} a JOIN {b} b ON ST_Intersects(a.geom, b.geom)"
        " WHERE a.n BETWEEN %(lo)s AND %(hi)s), "
        "pair AS (SELECT an, bn, CASE WHEN count(*) = 1 THEN (array_agg(g))[1] ELSE ST_Union(g) END AS g"
        " FROM frag WHERE NOT ST_IsEmpty(g) GROUP BY an, bn), "
        "part AS (SELECT an, bn, (ST_Dump(g)).geom AS g FROM pair) "
        "SELECT an, bn, ST_Area(g), g FROM part WHERE ST_GeometryType(g) = 'ST_Polygon'"
    ).format(raw=raw, a=a_pieces, b=b_pieces)


def _disposal(check: PlanConflictCheck, params: dict[str, Any]) -> sql.Composable:
    """The 1-based index into %(disposals)s: the first matching rule (2..), else the default (1)."""
    whens: list[sql.Composable] = []
    for i, entry in enumerate(check.disposal):
        c = entry.when
        conditions: list[sql.Composable] = []

        def value(name: str, v: Any, i: int = i) -> sql.Composable:
            params[f"d{i}_{name}"] = v
            return sql.Placeholder(f"d{i}_{name}")

        if c.area_m2_below is not None:
            conditions.append(sql.SQL("r.area < {}::float8").format(value("ab", c.area_m2_below)))
        if c.area_m2_at_least is not None:
            conditions.append(sql.SQL("r.area >= {}::float8").format(value("al", c.area_m2_at_least)))
        if c.share_of_a_below is not None:
            conditions.append(sql.SQL("r.area / nullif(fa.area, 0) < {}::float8").format(
                value("sa", c.share_of_a_below)))
        if c.share_of_b_below is not None:
            conditions.append(sql.SQL("r.area / nullif(fb.area, 0) < {}::float8").format(
                value("sb", c.share_of_b_below)))
        if c.a_class_in:
            conditions.append(sql.SQL("fa.cls = ANY({}::text[])").format(value("ac", list(c.a_class_in))))
        if c.b_class_in:
            conditions.append(sql.SQL("fb.cls = ANY({}::text[])").format(value("bc", list(c.b_class_in))))
        test = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("TRUE")
        whens.append(sql.SQL("WHEN {} THEN {}").format(test, sql.Literal(i + 2)))
    params["disposals"] = [check.default.disposal.value] + [e.disposal.value for e in check.disposal]
    params["reasons"] = [f"{check.default.reason.zh} / {check.default.reason.en}"] + [
        f"{e.reason.zh} / {e.reason.en}" for e in check.disposal]
    if not whens:
        return sql.SQL("1")
    return sql.SQL("(CASE {} ELSE 1 END)").format(sql.SQL(" ").join(whens))


def _finish_statement(check: PlanConflictCheck, a: LayerSpec, b: LayerSpec, features_a: sql.Identifier,
                      features_b: sql.Identifier, raw: sql.Identifier, params: dict[str, Any]) -> sql.Composed:
    choice = _disposal(check, params)
    return sql.SQL(
        "INSERT INTO ops.plan_conflict_patches (run_id, check_id, patch_no, a_layer, a_fid, a_class, b_layer, b_fid, "
        "b_class, class, area_m2, share_of_a, share_of_b, disposal, reason, geom) "
        "SELECT %(run_id)s, %(check_id)s, row_number() OVER (ORDER BY r.area DESC, fa.fid, fb.fid, r.id)::int, "
        "%(a_layer)s, fa.fid, fa.cls, %(b_layer)s, fb.fid, fb.cls, "
        "coalesce(fa.cls, %(a_layer)s) || '×' || coalesce(fb.cls, %(b_layer)s), r.area, "
        "r.area / nullif(fa.area, 0), r.area / nullif(fb.area, 0), "
        "(%(disposals)s::text[])[c.k], (%(reasons)s::text[])[c.k], "
        "ST_Multi(ST_Transform(r.g, 4490)) "
        "FROM {raw} r JOIN {fa} fa ON fa.n = r.an JOIN {fb} fb ON fb.n = r.bn "
        "CROSS JOIN LATERAL (SELECT {choice} AS k) c "
        "WHERE r.area >= %(min_area)s::float8"
    ).format(raw=raw, fa=features_a, fb=features_b, choice=choice)


def _summary_statement() -> sql.SQL:
    return sql.SQL(
        "SELECT count(*), coalesce(sum(area_m2), 0), "
        "(SELECT coalesce(json_agg(x ORDER BY x.area_m2 DESC), '[]'::json)::text "
        " FROM (SELECT class, count(*) AS patches, "
        " round(sum(area_m2)::numeric, 2) AS area_m2 FROM ops.plan_conflict_patches WHERE run_id = %(run_id)s "
        " GROUP BY class) x), "
        "(SELECT coalesce(json_agg(x ORDER BY x.disposal), '[]'::json)::text "
        " FROM (SELECT disposal, count(*) AS patches, "
        " round(sum(area_m2)::numeric, 2) AS area_m2 FROM ops.plan_conflict_patches WHERE run_id = %(run_id)s "
        " GROUP BY disposal) x) "
        "FROM ops.plan_conflict_patches WHERE run_id = %(run_id)s")


def choose_check(rules: OverlapRules, check_id: str) -> PlanConflictCheck:
    check = rules.check(check_id)
    if check is None:
        known = ", ".join(c.id for c in rules.plan_conflicts) or "none"
        raise InvalidInput("check", f"no plan-conflict check '{check_id[:60]}'; the checks are {known}")
    return check


def run_plan_conflicts(url: str, rules: OverlapRules, check_id: str, *, run_id: str | None = None,
                       as_of: str | None = None, min_area_m2: float | None = None, workers: int = 2,
                       progress: Progress | None = None, cancelled: Callable[[], bool] | None = None
                       ) -> ConflictSummary:
    """Compute, classify and store the conflict patches of one check; the summary of the run."""
    check = choose_check(rules, check_id)
    time_range = parse_as_of(as_of)
    if min_area_m2 is not None and not (0 <= float(min_area_m2) < 1e9):
        raise InvalidInput("min_area_m2", "must be a number of square metres, 0 or more")
    min_area = float(check.min_area_m2 if min_area_m2 is None else min_area_m2)
    run_id = run_id or new_run_id()
    a, b = rules.layers[check.a.layer], rules.layers[check.b.layer]
    fa, pa, fb, pb, raw = (_scratch(run_id, n) for n in ("fa", "pa", "fb", "pb", "raw"))
    report = progress or (lambda _p, _m: None)
    is_cancelled = cancelled or (lambda: False)
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = now - since
        return now

    with psycopg.connect(url, autocommit=True, application_name="gis-plan-conflicts") as conn:
        try:
            report(2, f"reading {a.id} and {b.id}")
            t = time.perf_counter()
            for side, spec, features, pieces in ((check.a, a, fa, pa), (check.b, b, fb, pb)):
                for stmt, stmt_params in _side_statement(side, spec, time_range, features, pieces):
                    conn.execute(stmt, stmt_params)
            conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} (id bigserial, an int NOT NULL, bn int NOT NULL, "
                                 "area double precision NOT NULL, g geometry NOT NULL)").format(raw))
            t = lap("prepare", t)
            counts = conn.execute(sql.SQL("SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})").format(
                fa, fb)).fetchone()
            assert counts is not None
            a_count, b_count = int(counts[0]), int(counts[1])
            report(10, f"{a_count:,} and {b_count:,} features subdivided and indexed")
            if is_cancelled():
                raise Cancelled("dismissed")
            _run_chunks(url, a_count, workers, _chunk_statement(pa, pb, raw), report, is_cancelled)
            t = lap("overlay", t)
            report(92, "classifying patches")
            params: dict[str, Any] = {"run_id": run_id, "check_id": check.id, "a_layer": a.id, "b_layer": b.id,
                                      "min_area": min_area}
            with conn.transaction():
                conn.execute(_finish_statement(check, a, b, fa, fb, raw, params), params)
                slivers = conn.execute(sql.SQL(
                    "SELECT count(*), coalesce(sum(area), 0) FROM {} WHERE area < %(min_area)s::float8").format(raw),
                    {"min_area": min_area}).fetchone()
                row = conn.execute(_summary_statement(), {"run_id": run_id}).fetchone()
                assert row is not None and slivers is not None
                lap("classify", t)
                summary = ConflictSummary(
                    run_id=run_id, check_id=check.id, as_of=as_of, min_area_m2=min_area, a_layer=a.id, b_layer=b.id,
                    a_features=a_count, b_features=b_count, patches=int(row[0]), area_m2=float(row[1]),
                    slivers=int(slivers[0]), sliver_area_m2=float(slivers[1]), by_class=orjson.loads(row[2]),
                    by_disposal=orjson.loads(row[3]), seconds=time.perf_counter() - started, timings=timings)
                conn.execute(
                    "INSERT INTO ops.plan_conflict_runs (run_id, check_id, as_of, min_area_m2, started, summary) "
                    "VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
                    (run_id, check.id, as_of, min_area, started_at, orjson.dumps(summary.as_dict()).decode()))
            report(99, f"{summary.patches:,} patches, {summary.slivers:,} slivers dropped")
            return summary
        finally:
            for table in (fa, pa, fb, pb, raw):
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))


def _run_chunks(url: str, a_count: int, workers: int, statement: sql.Composed, report: Progress,
                is_cancelled: Callable[[], bool]) -> None:
    """Side-a feature ranges on `workers` connections at once (one each, reused); progress per chunk done."""
    workers = max(1, min(int(workers), 8))
    chunks = max(1, min(a_count, workers * CHUNKS_PER_WORKER))
    size = -(-a_count // chunks) if a_count else 1
    pending: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
    ranges = [(lo, min(lo + size - 1, a_count)) for lo in range(1, a_count + 1, size)]
    for bounds in ranges:
        pending.put(bounds)
    done = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal done
        with psycopg.connect(url, autocommit=True, application_name="gis-plan-conflicts") as conn:
            while True:
                try:
                    lo, hi = pending.get_nowait()
                except queue.Empty:
                    return
                if is_cancelled():
                    raise Cancelled("dismissed")
                conn.execute(statement, {"lo": lo, "hi": hi})
                with lock:
                    done += 1
                    report(10 + int(80 * done / len(ranges)), f"overlay: {done} of {len(ranges)} chunks")

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="plan-conflicts") as pool:
        for future in [pool.submit(work) for _ in range(min(workers, len(ranges)))]:
            future.result()


def patches_geojson(conn: psycopg.Connection, run_id: str, limit: int = 100_000) -> bytes:
    """The run's patches as a GeoJSON FeatureCollection (lon/lat), built in PostgreSQL."""
    row = conn.execute(
        "SELECT convert_to(json_build_object('type', 'FeatureCollection', 'features', coalesce(json_agg("
        "json_build_object('type', 'Feature', 'id', patch_no, 'geometry', ST_AsGeoJSON(geom, 7, 0)::json, "
        "'properties', json_build_object('check', check_id, 'class', class, 'area_m2', round(area_m2::numeric, 2), "
        "'disposal', disposal, 'reason', reason, 'a_layer', a_layer, 'a_fid', a_fid, 'a_class', a_class, "
        "'b_layer', b_layer, 'b_fid', b_fid, 'b_class', b_class, 'share_of_a', round(share_of_a::numeric, 6), "
        "'share_of_b', round(share_of_b::numeric, 6))) ORDER BY patch_no), '[]'::json))::text, 'UTF8') "
        "FROM (SELECT * FROM ops.plan_conflict_patches WHERE run_id = %s ORDER BY patch_no LIMIT %s) p",
        (run_id, int(limit))).fetchone()
    assert row is not None
    return bytes(row[0])
