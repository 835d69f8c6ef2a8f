"""A proposal against the overlap rules: one SQL statement per rule, the proposal passed as WKB.

Each statement reads the rule's layer as of the requested time through the Features source (current
rows, or each fid's version valid then, future plans included), finds the features near the proposal
with the layer's GiST index, and in PostGIS, in the local projected CRS (EPSG:4550, metres):
  - clips each feature's zone (the feature, or its buffer/corridor) to the proposal:
    ST_CollectionExtract(ST_Intersection(zone, proposal), 3), dropping parts under the rule's minimum area;
  - measures the conflict as the union of the conflicting parts (no double counting where features
    overlap each other), or for must_be_inside the proposal minus the union of the inside parts;
  - returns one row: the areas, the conflict geometry and the features hit as JSON text.
Python only parses that JSON; no geometry objects per row.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

import orjson
import psycopg
import pyproj
import shapely
from psycopg import sql

from gis import identifiers as ids
from gis.analysis.proposal import Proposal, normalise_use
from gis.analysis.rules import Kind, OverlapRules, Rule
from gis.crs import reproject
from gis.errors import InvalidInput, NotFound
from gis.features import queries
from gis.features.temporal import TimeRange, parse_datetime
from gis.layers import LayerSpec
from gis.security import inference

AREA_SRID = 4550  # CGCS2000 / 3-degree Gauss-Kruger CM 123E: Shenyang's own zone
AREA_CRS = f"EPSG:{AREA_SRID}"
GEOJSON_DIGITS = 7  # lon/lat decimals in results: about a centimetre
_WALL_MARGIN_M = 3.0  # pipes up to 6 m across: the search box reaches this much past the corridor width

Status = Literal["conflict", "clear", "not_evaluated"]
Verdict = Literal["conflict", "clear", "incomplete"]


@dataclass(frozen=True)
class Statement:
    query: sql.Composed
    params: dict[str, Any]


@dataclass(frozen=True)
class FeatureHit:
    fid: str
    attributes: dict[str, Any]
    area_m2: float  # the part of the proposal inside this feature's zone
    conflict: bool
    geometry: dict[str, Any]  # that part, GeoJSON lon/lat


@dataclass(frozen=True)
class RuleResult:
    rule: Rule
    layer: LayerSpec
    status: Status
    area_m2: float  # the conflict area: union of conflicting parts, or the part outside (must_be_inside)
    share: float  # of the proposal's area
    features: tuple[FeatureHit, ...]
    geometry: dict[str, Any] | None  # the conflict geometry, GeoJSON lon/lat
    dropped: int  # parts under min_area_m2, not counted
    message: str
    extra: dict[str, Any] = field(default_factory=dict)
    names_layer: bool = True  # False: the caller may not read the rule's layer, so the report does not name it

    @property
    def layer_shown(self) -> str | None:
        return self.rule.layer if self.names_layer else None

    @property
    def conflict(self) -> bool:
        return self.status == "conflict"


@dataclass(frozen=True)
class OverlapReport:
    proposal: Proposal
    proposal_area_m2: float
    use: str | None
    as_of: str | None  # the datetime asked for, as given; None: the plans in force now
    results: tuple[RuleResult, ...]
    checked_at: datetime
    rules_path: str

    @property
    def verdict(self) -> Verdict:
        if any(r.status == "conflict" for r in self.results):
            return "conflict"
        if any(r.status == "not_evaluated" for r in self.results):
            return "incomplete"
        return "clear"


# -- parameters --------------------------------------------------------------------------------------

def parse_as_of(text: str | None) -> TimeRange | None:
    """`datetime`: an instant or a date (the plans in force then, future ones included)."""
    if text is None or not str(text).strip():
        return None
    if "/" in str(text):
        raise InvalidInput("datetime", "give an instant or a date (the plans in force then), not an interval")
    return parse_datetime(str(text), "datetime")


def select_rules(rules: OverlapRules, only: Sequence[str] | None) -> tuple[Rule, ...]:
    if not only:
        return rules.rules
    unknown = [r for r in only if rules.rule(r) is None]
    if unknown:
        known = ", ".join(r.id for r in rules.rules)
        raise InvalidInput("rules", f"no rule {', '.join(repr(u) for u in unknown)}; the rules are {known}")
    return tuple(r for r in rules.rules if r.id in set(only))


def check_use(rules: OverlapRules, use: str | None) -> str | None:
    """The proposal's use, if some compatible_use rule knows it; InvalidInput otherwise."""
    use = normalise_use(use)
    if use is None:
        return None
    for rule in rules.rules:
        if rule.kind is Kind.compatible_use and rule.allowed_classes(use) is None:
            known = ", ".join(rule.compatibility or {})
            raise InvalidInput("proposed_use", f"'{use}' is not in the compatibility table of rule "
                               f"'{rule.id}' ({known})")
    return use


# -- SQL ---------------------------------------------------------------------------------------------

def _attributes(spec: LayerSpec, rule: Rule) -> sql.Composable:
    names = rule.attributes or spec.field_names
    args: list[sql.Composable] = []
    for name in names:
        args += [sql.Literal(name), sql.SQL("t.{}").format(ids.column(spec, name))]
    return sql.SQL("json_build_object({})").format(sql.SQL(", ").join(args))


def _where(spec: LayerSpec, where: dict[str, tuple[str, ...]], params: dict[str, Any], prefix: str
           ) -> list[sql.Composable]:
    found: list[sql.Composable] = []
    for i, (name, values) in enumerate(where.items()):
        key = f"{prefix}_where{i}"
        params[key] = list(values)
        found.append(sql.SQL("{} = ANY({}::text[])").format(ids.column(spec, name), sql.Placeholder(key)))
    return found


def _width_entries(rule: Rule, hidden: frozenset[str]) -> list[tuple[str | None, float]]:
    """(utility or None for any, half-width) as the caller may compute them: with the pressure class hidden, each
    utility's widest width a pipe of it may get (the entries up to its first one without a class); with the
    utility hidden too, the widest of all."""
    assert rule.widths
    if rule.utility_field in hidden:
        return [(None, max(w.width_m for w in rule.widths))]
    found: dict[str, list[float]] = {}
    closed: set[str] = set()
    for width in rule.widths:
        if width.utility in closed:
            continue  # after an entry without a class, the utility's later entries are never reached
        found.setdefault(width.utility, []).append(width.width_m)
        if width.pressure_class is None:
            closed.add(width.utility)
    return [(utility, max(widths)) for utility, widths in found.items()]


def _width(spec: LayerSpec, rule: Rule, params: dict[str, Any], hidden: frozenset[str] = frozenset()
           ) -> sql.Composable:
    """The corridor half-width of each feature: the rule's first matching entry; with fields hidden from the
    caller, computed from the fields it may read only (_width_entries)."""
    assert rule.widths
    whens: list[sql.Composable] = []
    if hidden:
        for i, (utility, width_m) in enumerate(_width_entries(rule, hidden)):
            params[f"p_w{i}"] = width_m
            if utility is None:
                whens.append(sql.SQL("WHEN TRUE THEN {}::float8").format(sql.Placeholder(f"p_w{i}")))
                continue
            params[f"p_u{i}"] = utility
            whens.append(sql.SQL("WHEN t.{} = {} THEN {}::float8").format(
                ids.column(spec, rule.utility_field), sql.Placeholder(f"p_u{i}"), sql.Placeholder(f"p_w{i}")))
    for i, width in enumerate(rule.widths if not hidden else ()):
        params[f"p_u{i}"] = width.utility
        params[f"p_w{i}"] = width.width_m
        conditions = [sql.SQL("t.{} = {}").format(ids.column(spec, rule.utility_field), sql.Placeholder(f"p_u{i}"))]
        if width.pressure_class is not None:
            params[f"p_pc{i}"] = width.pressure_class
            conditions.append(sql.SQL("t.{} = {}").format(ids.column(spec, rule.pressure_field),
                                                          sql.Placeholder(f"p_pc{i}")))
        whens.append(sql.SQL("WHEN {} THEN {}::float8").format(sql.SQL(" AND ").join(conditions),
                                                               sql.Placeholder(f"p_w{i}")))
    expr = sql.SQL("(CASE {} END)").format(sql.SQL(" ").join(whens))
    if rule.measured_from == "wall":
        expr = sql.SQL("({} + coalesce(t.{}, 0)::float8 / 2000.0)").format(expr, ids.column(spec, rule.diameter_field))
    return expr


def layer_source(spec: LayerSpec, time: TimeRange | None, predicates: list[sql.Composable],
                 params: dict[str, Any]) -> sql.Composable:
    """The layer's rows as of `time` (the Features source, aliased t), its time parameters added to params."""
    params.update(queries.time_params(spec, time))
    return queries.source(spec, time, predicates)


def search_margin_degrees(bounds: Sequence[float], metres: float) -> tuple[float, float]:
    """A lon/lat margin (dx, dy) at least `metres` wide around a box, for an index search."""
    lat = math.radians(min(max(abs(bounds[1]), abs(bounds[3])), 89.0))
    dy = metres / 110_500.0
    dx = metres / (111_320.0 * math.cos(lat))
    return dx * 1.02 + 1e-7, dy * 1.02 + 1e-7


def rule_statement(rule: Rule, spec: LayerSpec, proposal: Proposal, time: TimeRange | None,
                   use: str | None, hidden: frozenset[str] = frozenset()) -> Statement:
    """One row: proposal_area, conflict_area, conflict_geojson, dropped, features_json, extra_json.

    `hidden`: inputs of the rule the caller may not read, which the rule then does without (corridor widths)."""
    params: dict[str, Any] = {"p_proposal": proposal.wkb, "p_min_area": float(rule.min_area_m2)}
    predicates = _where(spec, rule.where, params, "p")
    reach = rule.max_width_m + (_WALL_MARGIN_M if rule.kind is Kind.corridor and rule.measured_from == "wall" else 0)
    if reach > 0:
        params["p_dx"], params["p_dy"] = search_margin_degrees(proposal.geometry.bounds, reach)
        predicates.append(sql.SQL("geom && ST_Expand(ST_GeomFromWKB(%(p_proposal)s, 4490), "
                                  "%(p_dx)s::float8, %(p_dy)s::float8)"))
    else:
        predicates.append(sql.SQL("ST_Intersects(geom, ST_GeomFromWKB(%(p_proposal)s, 4490))"))
    from_item = layer_source(spec, time, predicates, params)

    width: sql.Composable = sql.SQL("NULL::float8")
    zone: sql.Composable = sql.SQL("c.gm")
    near: sql.Composable = sql.SQL("TRUE")
    buffered = rule.kind is Kind.corridor or rule.buffer_m > 0
    if rule.kind is Kind.corridor:
        width = _width(spec, rule, params, hidden)
    elif rule.buffer_m > 0:
        params["p_buffer"] = float(rule.buffer_m)
        width = sql.SQL("%(p_buffer)s::float8")
    if buffered:
        zone = sql.SQL("ST_Buffer(c.gm, c.w, 'quad_segs=8')")
        near = sql.SQL("m.w IS NOT NULL AND ST_DWithin(m.gm, prop.gp, m.w)")

    conflicting: sql.Composable = sql.SQL("TRUE")
    if rule.kind is Kind.must_be_inside:
        conflicting = sql.SQL("FALSE")
    elif rule.kind is Kind.compatible_use:
        allowed = rule.allowed_classes(use) if use else None
        if allowed is None:
            conflicting = sql.SQL("FALSE")
        else:
            assert rule.class_field
            params["p_allowed"] = list(allowed)
            conflicting = sql.SQL(
                "NOT coalesce(EXISTS (SELECT 1 FROM unnest(%(p_allowed)s::text[]) a(c) "
                "WHERE starts_with(t.{}, a.c)), false)").format(ids.column(spec, rule.class_field))

    if rule.kind is Kind.must_be_inside:
        conflict_geom = sql.SQL(
            "(SELECT CASE WHEN u.g IS NULL THEN prop.gp ELSE ST_CollectionExtract(ST_Difference(prop.gp, u.g), 3) END "
            "FROM prop, (SELECT ST_Union(part) AS g FROM sized) u)")
    elif buffered:
        # The union of many small corridor parts is the costly step: buffer each width's lines together
        # (a buffer of a collection is the union of the members' buffers) and union the few results.
        conflict_geom = sql.SQL(
            "(SELECT ST_Union(x.g) FROM (SELECT ST_CollectionExtract(ST_Intersection("
            "ST_Buffer(ST_Collect(c.gm), c.w, 'quad_segs=8'), (SELECT gp FROM prop)), 3) AS g "
            "FROM cand c WHERE c.conflicting AND c.fid IN (SELECT fid FROM kept) GROUP BY c.w) x)")
    else:
        conflict_geom = sql.SQL("(SELECT ST_Union(part) FROM kept WHERE conflicting)")
    extra: sql.Composable = sql.SQL("NULL::text")
    if rule.kind is Kind.compatible_use:
        extra = sql.SQL(
            "(SELECT json_build_object('unplanned_area_m2', CASE WHEN u.g IS NULL THEN ST_Area(prop.gp) "
            "ELSE ST_Area(ST_Difference(prop.gp, u.g)) END)::text "
            "FROM prop, (SELECT ST_Union(part) AS g FROM sized) u)")

    # Every CTE is materialized: each geometry step runs once per feature (inlined, PostgreSQL would
    # repeat the intersection in the filter and the output). A zone inside the proposal, or a proposal
    # inside a zone, needs no overlay at all.
    query = sql.SQL(
        "WITH prop AS MATERIALIZED (SELECT ST_Transform(ST_GeomFromWKB(%(p_proposal)s, 4490), {srid}) AS gp), "
        "cand AS MATERIALIZED ("
        " SELECT t.fid, {attributes} AS attrs, {conflicting} AS conflicting, m.gm, m.w"
        " FROM {source} CROSS JOIN prop"
        " CROSS JOIN LATERAL (SELECT ST_Transform(t.geom, {srid}) AS gm, {width} AS w) m"
        " WHERE {near}), "
        "hit AS MATERIALIZED ("
        " SELECT c.fid, c.attrs, c.conflicting,"
        "  CASE WHEN ST_CoveredBy(z.zone, prop.gp) THEN z.zone WHEN ST_CoveredBy(prop.gp, z.zone) THEN prop.gp"
        "  ELSE ST_CollectionExtract(ST_Intersection(z.zone, prop.gp), 3) END AS part"
        " FROM cand c CROSS JOIN prop CROSS JOIN LATERAL (SELECT {zone} AS zone) z), "
        "sized AS MATERIALIZED (SELECT fid, attrs, conflicting, part, ST_Area(part) AS area FROM hit "
        " WHERE NOT ST_IsEmpty(part)), "
        "kept AS MATERIALIZED (SELECT * FROM sized WHERE area >= %(p_min_area)s::float8), "
        "conflict AS MATERIALIZED (SELECT {conflict_geom} AS g) "
        "SELECT (SELECT ST_Area(gp) FROM prop), coalesce(ST_Area(c.g), 0), "
        " CASE WHEN c.g IS NULL OR ST_IsEmpty(c.g) THEN NULL "
        "  ELSE ST_AsGeoJSON(ST_Transform(c.g, 4490), {digits}, 0) END, "
        " (SELECT count(*) FROM sized WHERE area < %(p_min_area)s::float8), "
        " (SELECT coalesce(json_agg(json_build_object('fid', fid, 'attributes', attrs, 'area_m2', area, "
        "   'conflict', conflicting, 'geometry', ST_AsGeoJSON(ST_Transform(part, 4490), {digits}, 0)::json) "
        "   ORDER BY conflicting DESC, area DESC, fid), '[]'::json) FROM kept)::text, "
        " {extra} "
        "FROM conflict c"
    ).format(srid=sql.Literal(AREA_SRID), attributes=_attributes(spec, rule), conflicting=conflicting, zone=zone,
             source=from_item, width=width, near=near, conflict_geom=conflict_geom,
             digits=sql.Literal(GEOJSON_DIGITS), extra=extra)
    return Statement(query, params)


def rule_result(rule: Rule, spec: LayerSpec, row: tuple[Any, ...], use: str | None) -> RuleResult:
    proposal_area, area, geometry, dropped, features_json, extra_json = row
    features = tuple(
        FeatureHit(f["fid"], f["attributes"], float(f["area_m2"]), bool(f["conflict"]), f["geometry"])
        for f in orjson.loads(features_json)
    )
    area = float(area or 0.0)
    proposal_area = float(proposal_area)
    status: Status
    if rule.kind is Kind.compatible_use and (use is None or rule.allowed_classes(use) is None):
        status, message = "not_evaluated", "no proposed use given (proposed_use, a GB 50137 code): not evaluated"
    elif area > 0 and area >= rule.min_area_m2:
        status = "conflict"
        message = _conflict_message(rule, features, use)
    else:
        status, area = "clear", (area if area >= rule.min_area_m2 else 0.0)
        message = "no conflict"
    return RuleResult(
        rule=rule, layer=spec, status=status, area_m2=area,
        share=(area / proposal_area) if proposal_area > 0 else 0.0, features=features,
        geometry=orjson.loads(geometry) if geometry and status == "conflict" else None,
        dropped=int(dropped), message=message, extra=orjson.loads(extra_json) if extra_json else {},
    )


def _conflict_message(rule: Rule, features: tuple[FeatureHit, ...], use: str | None) -> str:
    hit = sum(1 for f in features if f.conflict)
    if rule.kind is Kind.must_be_inside:
        return "part of the proposal lies outside"
    if rule.kind is Kind.compatible_use:
        classes = sorted({str(f.attributes.get(rule.class_field or "", "?")) for f in features if f.conflict})
        return f"use {use} is not compatible with planned class {', '.join(classes)} ({hit} parcel(s))"
    if rule.kind is Kind.corridor:
        return f"inside the protection corridor of {hit} feature(s)"
    return f"overlaps {hit} feature(s)"



# -- running -----------------------------------------------------------------------------------------

# What a caller may read: layer id -> the fields it may see (a gis.security.inference.Sight in the service,
# which also knows the row-limited layers and the role's derive modes). None: everything (the CLI, tests).
Access = Mapping[str, frozenset[str]] | None
DEPENDENCY_PREFIX = "overlap-check/"
NOT_READABLE = "not evaluated: the caller may not read this layer"
ROWS_HIDDEN = "not evaluated: the caller may read only some features of this layer"
INPUTS_HIDDEN = "not evaluated: the rule depends on fields the caller may not read"
FROM_VISIBLE = ("corridor widths from the fields the caller may read: each pipe's the widest a pipe of its "
                "utility may have")


def rule_inputs(rule: Rule) -> frozenset[str]:
    """The fields a rule's verdict, areas and geometries depend on (the reported attributes aside)."""
    found = set(rule.where)
    if rule.kind is Kind.compatible_use and rule.class_field:
        found.add(rule.class_field)
    if rule.kind is Kind.corridor and rule.widths:
        found.add(rule.utility_field)
        if any(w.pressure_class is not None for w in rule.widths):
            found.add(rule.pressure_field)
        if rule.measured_from == "wall":
            found.add(rule.diameter_field)
    return frozenset(found)


def dependencies(rules: OverlapRules) -> dict[str, inference.Dependency]:
    """Each rule as a dependency of the overlap check, for the access policy's `derive`."""
    found = {}
    for rule in rules.rules:
        inputs = rule_inputs(rule)
        # only corridor widths can be computed without some inputs (_blind_ok); other rules are left out
        modes: tuple[inference.Mode, ...] = ((inference.OMIT, inference.VISIBLE) if rule.kind is Kind.corridor
                                             else (inference.OMIT,))
        found[DEPENDENCY_PREFIX + rule.id] = inference.Dependency(
            DEPENDENCY_PREFIX + rule.id, rule.layer, tuple(sorted(inputs)),
            f"the {rule.kind} rule '{rule.id}' on {rule.layer}", modes)
    return found


@dataclass(frozen=True)
class Plan:
    """How one rule runs for the caller: not at all (with the reason), or with some inputs done without."""

    rule: Rule
    spec: LayerSpec
    skipped: str | None = None
    hidden: frozenset[str] = frozenset()


def _blind_ok(rule: Rule, hidden: frozenset[str]) -> bool:
    """Whether the rule can be computed without the hidden inputs: corridor widths without the class or utility."""
    return rule.kind is Kind.corridor and hidden <= {rule.utility_field, rule.pressure_field}


def plan_rule(rule: Rule, spec: LayerSpec, access: Access) -> Plan:
    """Whether and how a rule runs for a caller: every result it gives rests on what the caller may read."""
    if access is None:
        return Plan(rule, spec)
    if spec.id not in access:
        return Plan(rule, spec, NOT_READABLE)
    if inference.row_limited(access, spec.id):
        return Plan(rule, spec, ROWS_HIDDEN)
    hidden = rule_inputs(rule) - access[spec.id]
    if not hidden:
        return Plan(rule, spec)
    if inference.mode_of(access, DEPENDENCY_PREFIX + rule.id) == inference.VISIBLE and _blind_ok(rule, hidden):
        return Plan(rule, spec, hidden=hidden)
    return Plan(rule, spec, INPUTS_HIDDEN)


def statements(rules: OverlapRules, proposal: Proposal, time: TimeRange | None, use: str | None,
               only: Sequence[str] | None = None, access: Access = None) -> list[tuple[Plan, Statement]]:
    """The statements of the rules that run for the caller (plan_rule); the others are left out."""
    plans = [plan_rule(r, rules.layer_of(r), access) for r in select_rules(rules, only)]
    return [(plan, rule_statement(plan.rule, plan.spec, proposal, time, use, plan.hidden))
            for plan in plans if plan.skipped is None]


@lru_cache(maxsize=1)
def _to_area_crs() -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(4490, AREA_SRID, always_xy=True)


def proposal_area_m2(proposal: Proposal) -> float:
    """The proposal's area in the area CRS, for a report in which no rule could run."""
    return float(shapely.area(reproject(proposal.geometry, _to_area_crs())))


def not_permitted(rule: Rule, spec: LayerSpec, reason: str = NOT_READABLE) -> RuleResult:
    """A rule left out for the caller (plan_rule): no figures, features or geometry from it."""
    return RuleResult(rule=rule, layer=spec, status="not_evaluated", area_m2=0.0, share=0.0, features=(),
                      geometry=None, dropped=0, message=reason, names_layer=reason != NOT_READABLE)


def _visible(result: RuleResult, access: Access) -> RuleResult:
    """Attributes the caller may not see (masked fields) are left out of the features hit."""
    if access is None:
        return result
    allowed = access[result.layer.id]
    features = tuple(replace(f, attributes={k: v for k, v in f.attributes.items() if k in allowed})
                     for f in result.features)
    return replace(result, features=features)


def _result(plan: Plan, row: tuple[Any, ...], use: str | None, access: Access) -> RuleResult:
    found = _visible(rule_result(plan.rule, plan.spec, row, use), access)
    if plan.hidden:
        found = replace(found, extra={**found.extra, "computed_from": FROM_VISIBLE})
    return found


def _report(rules: OverlapRules, proposal: Proposal, use: str | None, as_of: str | None,
            done: list[tuple[Plan, tuple[Any, ...]]], only: Sequence[str] | None,
            access: Access) -> OverlapReport:
    by_rule = {plan.rule.id: _result(plan, row, use, access) for plan, row in done}
    results = []
    for rule in select_rules(rules, only):
        plan = plan_rule(rule, rules.layer_of(rule), access)
        results.append(by_rule.get(rule.id) or not_permitted(rule, plan.spec, plan.skipped or NOT_READABLE))
    area = float(done[0][1][0]) if done else proposal_area_m2(proposal)
    # the rules file by its name: a report never shows where the server keeps its files
    return OverlapReport(proposal, area, use, as_of, tuple(results), datetime.now(UTC), rules.path.name)


def check(conn: psycopg.Connection, rules: OverlapRules, proposal: Proposal, *, as_of: str | None = None,
          use: str | None = None, only: Sequence[str] | None = None, access: Access = None) -> OverlapReport:
    """Run every rule (or those in `only`) on one connection; the report with the overall verdict."""
    time = parse_as_of(as_of)
    use = check_use(rules, use or proposal.proposed_use)
    done = []
    with conn.transaction(), conn.cursor() as cur:
        for plan, stmt in statements(rules, proposal, time, use, only, access):
            cur.execute(stmt.query, stmt.params)
            row = cur.fetchone()
            assert row is not None
            done.append((plan, row))
    return _report(rules, proposal, use, as_of, done, only, access)


async def check_async(conn: psycopg.AsyncConnection, rules: OverlapRules, proposal: Proposal, *,
                      as_of: str | None = None, use: str | None = None,
                      only: Sequence[str] | None = None, access: Access = None) -> OverlapReport:
    """check() for the service's asynchronous pool: the statements go out in one pipeline."""
    time = parse_as_of(as_of)
    use = check_use(rules, use or proposal.proposed_use)
    planned = statements(rules, proposal, time, use, only, access)
    done = []
    async with conn.pipeline():
        cursors = []
        for _plan, stmt in planned:
            cur = conn.cursor()
            await cur.execute(stmt.query, stmt.params)
            cursors.append(cur)
    for (plan, _stmt), cur in zip(planned, cursors, strict=True):
        row = await cur.fetchone()
        assert row is not None
        done.append((plan, row))
        await cur.close()
    return _report(rules, proposal, use, as_of, done, only, access)


# -- a construction project as the proposal ---------------------------------------------------------

def project_statement(rules: OverlapRules, fid: str) -> Statement:
    if rules.projects is None or rules.projects_layer is None:
        raise InvalidInput("project", f"{rules.path.name} names no projects layer to take proposals from")
    spec = rules.projects_layer
    use = (sql.SQL("t.{}").format(ids.column(spec, rules.projects.use_field)) if rules.projects.use_field
           else sql.SQL("NULL::text"))
    query = sql.SQL("SELECT ST_AsBinary(t.geom), {use} FROM {table} t WHERE t.fid = %(fid)s").format(
        use=use, table=ids.current_table(spec))
    return Statement(query, {"fid": fid})


def project_readable(rules: OverlapRules, access: Access) -> bool:
    """Whether the caller may name a proposal by a project's fid: it reads the projects layer, every row."""
    layer = rules.projects_layer
    return access is None or (layer is not None and layer.id in access and not inference.row_limited(access, layer.id))


def no_project(fid: str) -> NotFound:
    """The one answer for a project that does not exist and one the caller may not read."""
    return NotFound(f"project: no feature '{fid[:80]}'")


def project_proposal(rules: OverlapRules, fid: str, row: tuple[Any, ...] | None) -> Proposal:
    if row is None:
        raise no_project(fid)
    geom = shapely.from_wkb(row[0])
    if geom.geom_type == "Polygon":
        geom = shapely.multipolygons([geom])
    layer_id = rules.projects_layer.id if rules.projects_layer else "projects"
    return Proposal(geom, f"{layer_id} {fid}", "EPSG:4490", normalise_use(row[1]), fid, {"fid": fid})


def load_project(conn: psycopg.Connection, rules: OverlapRules, fid: str) -> Proposal:
    stmt = project_statement(rules, fid)
    row = conn.execute(stmt.query, stmt.params).fetchone()
    return project_proposal(rules, fid, row)


async def load_project_async(conn: psycopg.AsyncConnection, rules: OverlapRules, fid: str) -> Proposal:
    stmt = project_statement(rules, fid)
    cur = await conn.execute(stmt.query, stmt.params)
    return project_proposal(rules, fid, await cur.fetchone())
