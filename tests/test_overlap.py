"""The overlap check on the sample city: every area against an independent shapely + pyproj computation.

The independent side reads the same stored geometries (WKB) and does everything else itself: pyproj
to EPSG:4550, shapely intersections, buffers and unions, filtering by attributes in Python.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pyproj
import pytest
import shapely
import yaml
from psycopg import sql
from shapely.geometry.base import BaseGeometry

from gis.analysis import overlap
from gis.analysis.proposal import Proposal
from gis.analysis.rules import Kind, OverlapRules, Rule, default_rules_path, load_rules
from gis.errors import InvalidInput, NotFound
from gis.layers import LayerRegistry
from gis.settings import Settings

TO_4550 = pyproj.Transformer.from_crs(4490, 4550, always_xy=True)
GEOD = pyproj.Geod(ellps="GRS80")  # CGCS2000's ellipsoid


def close(found: float, expected: float) -> bool:
    return abs(found - expected) <= max(1e-3 * abs(expected), 0.01)


def metric(geom: BaseGeometry) -> BaseGeometry:
    return shapely.transform(geom, lambda xy: np.column_stack(TO_4550.transform(xy[:, 0], xy[:, 1])))


@pytest.fixture(scope="module")
def rules(settings: Settings, registry: LayerRegistry) -> OverlapRules:
    return load_rules(default_rules_path(settings.layers_dir), registry)


@pytest.fixture(scope="module")
def conn(loaded_db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(loaded_db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="module")
def projects(conn: psycopg.Connection, rules: OverlapRules) -> list[Proposal]:
    fids = [r[0] for r in conn.execute("SELECT fid FROM planning.construction_projects ORDER BY fid")]
    return [overlap.load_project(conn, rules, fid) for fid in fids]


def _features(conn: psycopg.Connection, rule: Rule, schema: str) -> list[tuple[str, dict, BaseGeometry]]:
    """Every current feature of the rule's layer (valid now), with its attributes; no spatial SQL."""
    rows = conn.execute(sql.SQL("SELECT fid, to_jsonb(t) - 'geom', ST_AsBinary(geom) FROM {} t "
                                "WHERE valid_from <= now() AND (valid_to IS NULL OR valid_to > now())").format(
        sql.Identifier(schema, rule.layer))).fetchall()
    found = []
    for fid, attrs, wkb in rows:
        if all(attrs.get(k) in v for k, v in rule.where.items()):
            found.append((fid, attrs, metric(shapely.from_wkb(wkb))))
    return found


def _zone(rule: Rule, attrs: dict, geom: BaseGeometry) -> BaseGeometry | None:
    if rule.kind is Kind.corridor:
        width = next((w.width_m for w in rule.widths or () if w.utility == attrs["utility"]
                      and w.pressure_class in (None, attrs["pressure_class"])), None)
        if width is None:
            return None
        if rule.measured_from == "wall":
            width += (attrs.get("diameter_mm") or 0) / 2000.0
        return geom.buffer(width, quad_segs=8)
    return geom.buffer(rule.buffer_m, quad_segs=8) if rule.buffer_m else geom


def independent_area(rule: Rule, features: list[tuple[str, dict, BaseGeometry]], proposal: Proposal,
                     use: str | None, per_feature: dict[str, float] | None = None) -> float:
    """The rule's conflict area; per_feature, if given, receives each counted feature's part area."""
    prop = metric(proposal.geometry)
    box = prop.buffer(rule.max_width_m + 5).envelope
    parts, conflicting = [], []
    for _fid, attrs, geom in features:
        if not geom.intersects(box):
            continue
        zone = _zone(rule, attrs, geom)
        if zone is None:
            continue
        part = zone.intersection(prop)
        if part.is_empty:
            continue
        parts.append(part)
        if per_feature is not None and part.area >= rule.min_area_m2:
            per_feature[_fid] = part.area
        is_conflict = rule.kind in (Kind.no_overlap, Kind.corridor)
        if rule.kind is Kind.compatible_use:
            allowed = rule.allowed_classes(use or "") or ()
            is_conflict = not any(str(attrs[rule.class_field]).startswith(a) for a in allowed)
        if is_conflict and part.area >= rule.min_area_m2:
            conflicting.append(part)
    if rule.kind is Kind.must_be_inside:
        outside = prop.difference(shapely.union_all(parts)) if parts else prop
        return outside.area if outside.area >= rule.min_area_m2 else 0.0
    return shapely.union_all(conflicting).area if conflicting else 0.0


@pytest.mark.parametrize("rule_id", ["ecological_redline", "basic_farmland", "development_boundary",
                                     "land_use_plan", "pipeline_corridors", "water_bodies"])
def test_rule_areas_match_an_independent_computation(rule_id: str, rules: OverlapRules, conn: psycopg.Connection,
                                                      projects: list[Proposal]) -> None:
    rule = rules.rule(rule_id)
    assert rule is not None
    features = _features(conn, rule, rules.layer_of(rule).domain.value)
    conflicts = 0
    for proposal in projects:
        result = overlap.check(conn, rules, proposal, only=[rule_id]).results[0]
        per_feature: dict[str, float] = {}
        expected = independent_area(rule, features, proposal, proposal.proposed_use, per_feature)
        assert close(result.area_m2, expected), (proposal.project_fid, result.area_m2, expected)
        found = {f.fid: f.area_m2 for f in result.features}
        assert found.keys() == per_feature.keys(), proposal.project_fid
        assert all(close(found[fid], area) for fid, area in per_feature.items()), proposal.project_fid
        conflicts += result.conflict
    assert conflicts > 0  # the sample city has projects crossing every rule


def test_proposal_area_matches_the_ellipsoid(conn: psycopg.Connection, rules: OverlapRules,
                                             projects: list[Proposal]) -> None:
    for proposal in projects[:10]:
        found = overlap.check(conn, rules, proposal, only=["water_bodies"])
        geodesic = abs(GEOD.geometry_area_perimeter(proposal.geometry)[0])
        assert close(found.proposal_area_m2, geodesic)


def test_share_is_area_over_proposal_area(conn: psycopg.Connection, rules: OverlapRules,
                                          projects: list[Proposal]) -> None:
    report = next(r for r in (overlap.check(conn, rules, p) for p in projects) if r.verdict == "conflict")
    for result in report.results:
        assert result.share == pytest.approx(result.area_m2 / report.proposal_area_m2)


def test_features_hit_carry_attributes_and_geometry(conn: psycopg.Connection, rules: OverlapRules,
                                                    projects: list[Proposal]) -> None:
    hits = [f for p in projects for f in overlap.check(conn, rules, p, only=["ecological_redline"]).results[0].features]
    assert hits and all(set(f.attributes) == {"name", "level"} and f.geometry["type"] in ("Polygon", "MultiPolygon")
                        for f in hits)


def test_verdict_is_conflict_when_any_rule_conflicts(conn: psycopg.Connection, rules: OverlapRules,
                                                     projects: list[Proposal]) -> None:
    for proposal in projects[:20]:
        report = overlap.check(conn, rules, proposal)
        assert (report.verdict == "conflict") == any(r.conflict for r in report.results)


def test_land_use_without_a_use_is_not_evaluated(conn: psycopg.Connection, rules: OverlapRules,
                                                 projects: list[Proposal]) -> None:
    bare = Proposal(projects[0].geometry, "test", "EPSG:4490")
    result = overlap.check(conn, rules, bare, only=["land_use_plan"])
    assert result.results[0].status == "not_evaluated" and result.verdict == "incomplete"


def test_an_unknown_use_is_refused(conn: psycopg.Connection, rules: OverlapRules, projects: list[Proposal]) -> None:
    with pytest.raises(InvalidInput, match=r"^proposed_use: 'X9'"):
        overlap.check(conn, rules, projects[0], use="X9")


def test_an_unknown_project_is_not_found(conn: psycopg.Connection, rules: OverlapRules) -> None:
    with pytest.raises(NotFound, match="no feature 'XM-none'"):
        overlap.load_project(conn, rules, "XM-none")


def test_an_interval_is_not_an_as_of_date(conn: psycopg.Connection, rules: OverlapRules,
                                          projects: list[Proposal]) -> None:
    with pytest.raises(InvalidInput, match=r"^datetime: give an instant or a date"):
        overlap.check(conn, rules, projects[0], as_of="2030-01-01/2031-01-01")


def test_parts_under_the_minimum_area_are_dropped(tmp_path: Path, settings: Settings, registry: LayerRegistry,
                                                  conn: psycopg.Connection, rules: OverlapRules,
                                                  projects: list[Proposal]) -> None:
    raw = yaml.safe_load(default_rules_path(settings.layers_dir).read_text(encoding="utf-8"))
    raw["rules"][0]["min_area_m2"] = 1e9
    path = tmp_path / "overlap-rules.yml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    strict = load_rules(path, registry)
    hitting = [p for p in projects if overlap.check(conn, rules, p, only=["ecological_redline"]).results[0].conflict]
    result = overlap.check(conn, strict, hitting[0], only=["ecological_redline"]).results[0]
    assert result.status == "clear" and result.area_m2 == 0 and result.dropped >= 1


def test_the_2030_plan_is_read_as_of_2030(conn: psycopg.Connection, rules: OverlapRules) -> None:
    fid, effective, wkb = conn.execute(
        "SELECT fid, (valid_from AT TIME ZONE 'Asia/Shanghai')::date, ST_AsBinary(ST_Buffer(geom, -0.0002)) "
        "FROM planning.land_use_plan WHERE fid LIKE 'KG2030-%' AND valid_from > now() ORDER BY fid LIMIT 1").fetchone()
    inside = Proposal(shapely.multipolygons([shapely.from_wkb(wkb)]), "test", "EPSG:4490", "R")
    now = overlap.check(conn, rules, inside, only=["land_use_plan"]).results[0]
    later = overlap.check(conn, rules, inside, only=["land_use_plan"], as_of=str(effective)).results[0]
    assert fid not in {f.fid for f in now.features}
    assert [f.fid for f in later.features] == [fid]


def test_overlapping_features_are_not_counted_twice(clone_db, registry: LayerRegistry, rules: OverlapRules,
                                                    projects: list[Proposal], conn: psycopg.Connection) -> None:
    hitting = next(p for p in projects
                   if overlap.check(conn, rules, p, only=["ecological_redline"]).results[0].conflict)
    once = overlap.check(conn, rules, hitting, only=["ecological_redline"]).results[0]
    with psycopg.connect(clone_db(), autocommit=True) as clone:
        clone.execute("INSERT INTO planning.ecological_redline (fid, name, level, geom, valid_from, row_hash, "
                      "refresh_id) SELECT fid || '-copy', name, level, geom, valid_from, row_hash, refresh_id "
                      "FROM planning.ecological_redline")
        twice = overlap.check(clone, rules, hitting, only=["ecological_redline"]).results[0]
    assert len(twice.features) == 2 * len(once.features)
    assert twice.area_m2 == pytest.approx(once.area_m2, rel=1e-9)
