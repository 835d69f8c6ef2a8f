"""Plan against plan: patches, slivers and disposals against an independent shapely + pyproj computation."""

from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import psycopg
import pyproj
import pytest
import shapely
import yaml
from conftest import cloned_database
from psycopg import sql

from gis.analysis.plan_conflicts import ConflictSummary, run_plan_conflicts
from gis.analysis.rules import OverlapRules, default_rules_path, load_rules
from gis.errors import InvalidInput
from gis.layers import LayerRegistry
from gis.settings import Settings

TO_4550 = pyproj.Transformer.from_crs(4490, 4550, always_xy=True)
MIN_AREA = 400.0
CHECKS = [
    {"id": "projects_vs_farmland", "title": {"zh": "项目与基本农田", "en": "Projects against farmland"},
     "a": {"layer": "construction_projects", "class_field": "proposed_use"}, "b": {"layer": "basic_farmland"},
     "min_area_m2": MIN_AREA,
     "disposal": [{"when": {"a_class_in": ["M"]}, "disposal": "deduct", "reason": {"zh": "工业", "en": "industry"}},
                  {"when": {"area_m2_below": 5000.0}, "disposal": "keep", "reason": {"zh": "小", "en": "small"}}],
     "default": {"disposal": "withdraw", "reason": {"zh": "退出", "en": "withdraw"}}},
    {"id": "plan_vs_projects", "title": {"zh": "控规与项目", "en": "Plan against projects"},
     "a": {"layer": "land_use_plan", "class_field": "land_use_code"}, "b": {"layer": "construction_projects"},
     "min_area_m2": 10.0, "default": {"disposal": "keep", "reason": {"zh": "保留", "en": "keep"}}},
]


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory, settings: Settings, registry: LayerRegistry) -> OverlapRules:
    raw = yaml.safe_load(default_rules_path(settings.layers_dir).read_text(encoding="utf-8"))
    raw["plan_conflicts"] = CHECKS
    path = tmp_path_factory.mktemp("rules") / "overlap-rules.yml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return load_rules(path, registry)


@pytest.fixture(scope="module")
def db(server_url: str, template_db: str) -> Iterator[str]:
    """A writable clone of the loaded template for this module."""
    with cloned_database(server_url, template_db, "gis_test_plan_conflicts") as url:
        yield url


@pytest.fixture(scope="module")
def run(db: str, rules: OverlapRules) -> ConflictSummary:
    return run_plan_conflicts(db, rules, "projects_vs_farmland", workers=2)


def _layer(conn: psycopg.Connection, table: str, cls: str | None) -> list[tuple[str, str | None, object]]:
    schema, name = table.split(".")
    rows = conn.execute(sql.SQL("SELECT fid, {}, ST_AsBinary(geom) FROM {}").format(
        sql.Identifier(cls) if cls else sql.NULL, sql.Identifier(schema, name))).fetchall()
    return [(fid, c, shapely.transform(shapely.from_wkb(w),
                                       lambda xy: np.column_stack(TO_4550.transform(xy[:, 0], xy[:, 1]))))
            for fid, c, w in rows]


@pytest.fixture(scope="module")
def expected(db: str) -> dict[str, object]:
    """Patches computed with shapely: per feature pair, the overlap's polygons; slivers under MIN_AREA."""
    with psycopg.connect(db) as conn:
        a = _layer(conn, "planning.construction_projects", "proposed_use")
        b = _layer(conn, "planning.basic_farmland", None)
    tree = shapely.STRtree([g for _, _, g in b])
    patches: dict[tuple[str, str], list[float]] = defaultdict(list)
    slivers = 0
    for a_fid, _cls, ga in a:
        for j in tree.query(ga, predicate="intersects"):
            b_fid, _, gb = b[j]
            for part in shapely.get_parts(ga.intersection(gb)):
                if part.geom_type != "Polygon" or part.area <= 0:
                    continue
                if part.area >= MIN_AREA:
                    patches[(a_fid, b_fid)].append(part.area)
                else:
                    slivers += 1
    return {"patches": patches, "slivers": slivers, "a": {f: c for f, c, _ in a}}


def _stored(db: str, run_id: str) -> list[tuple]:
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT a_fid, b_fid, a_class, area_m2, disposal FROM ops.plan_conflict_patches "
                            "WHERE run_id = %s", (run_id,)).fetchall()


def test_patch_count_and_total_area_match(run: ConflictSummary, expected: dict) -> None:
    areas = [x for v in expected["patches"].values() for x in v]
    assert run.patches == len(areas) > 0
    assert run.area_m2 == pytest.approx(sum(areas), rel=1e-3)


def test_each_pair_matches(run: ConflictSummary, expected: dict, db: str) -> None:
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    for a_fid, b_fid, _cls, area, _d in _stored(db, run.run_id):
        found[(a_fid, b_fid)].append(area)
    assert set(found) == set(expected["patches"])
    for pair, areas in found.items():
        assert sorted(areas) == pytest.approx(sorted(expected["patches"][pair]), rel=1e-3)


def test_slivers_are_dropped_and_counted(run: ConflictSummary, expected: dict) -> None:
    assert run.slivers == expected["slivers"]


def test_disposal_follows_the_rules_in_order(run: ConflictSummary, db: str) -> None:
    for _a, _b, cls, area, disposal in _stored(db, run.run_id):
        wanted = "deduct" if cls == "M" else ("keep" if area < 5000 else "withdraw")
        assert disposal == wanted


def test_classes_and_disposals_are_summed(run: ConflictSummary) -> None:
    assert sum(c["patches"] for c in run.by_class) == run.patches
    assert sum(d["patches"] for d in run.by_disposal) == run.patches
    assert all("×basic_farmland" in c["class"] for c in run.by_class)


def test_progress_rises_to_the_end(db: str, rules: OverlapRules) -> None:
    seen: list[int] = []
    run_plan_conflicts(db, rules, "projects_vs_farmland", progress=lambda p, _m: seen.append(p))
    assert seen == sorted(seen) and seen[0] < 10 and seen[-1] >= 90


def test_a_later_date_reads_the_plan_then(db: str, rules: OverlapRules) -> None:
    with psycopg.connect(db) as conn:
        (in_2030,) = conn.execute(
            "SELECT count(*) FROM planning.land_use_plan WHERE valid_from <= '2030-06-01T00:00:00+08' "
            "AND (valid_to IS NULL OR valid_to > '2030-06-01T00:00:00+08')").fetchone()
    now = run_plan_conflicts(db, rules, "plan_vs_projects")
    later = run_plan_conflicts(db, rules, "plan_vs_projects", as_of="2030-06-01T00:00:00+08:00")
    assert later.a_features == in_2030 != now.a_features


def test_scratch_tables_are_dropped(db: str, run: ConflictSummary) -> None:
    with psycopg.connect(db) as conn:
        (left,) = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'staging' "
                               "AND tablename LIKE 'pc\\_%'").fetchone()
    assert left == 0


def test_an_unknown_check_is_refused(db: str, rules: OverlapRules) -> None:
    with pytest.raises(InvalidInput, match=r"^check: no plan-conflict check 'nope'"):
        run_plan_conflicts(db, rules, "nope")


def test_the_project_checks_run(db: str, settings: Settings, registry: LayerRegistry) -> None:
    project_rules = load_rules(default_rules_path(settings.layers_dir), registry)
    for check in project_rules.plan_conflicts:
        summary = run_plan_conflicts(db, project_rules, check.id)
        assert summary.a_features > 0 and summary.b_features > 0


def test_patches_are_kept_for_qgis(db: str, run: ConflictSummary) -> None:
    with psycopg.connect(db) as conn:
        (valid,) = conn.execute("SELECT bool_and(ST_IsValid(geom) AND ST_SRID(geom) = 4490) "
                                "FROM ops.plan_conflict_patches WHERE run_id = %s", (run.run_id,)).fetchone()
    assert valid


