"""An overlap check as JSON (a dict), GeoJSON (a FeatureCollection) and a self-contained HTML page.

The HTML page (a template of gis/templates/, autoescaped) needs nothing from the network: inline CSS, and
maps drawn as inline SVG from the report's own geometries (a local equirectangular projection around the
proposal, true to scale at this size), one overview and one per rule in conflict, with a table of every figure.
"""

from typing import Any

import orjson

from gis.analysis.overlap import AREA_CRS, OverlapReport, RuleResult
from gis.rendering import Drawing, Shape, render
from gis.svg import MapFrame, polygon_vertices

STATUS_TEXT = {"conflict": "冲突 conflict", "clear": "无冲突 clear", "not_evaluated": "未评估 not evaluated"}
VERDICT_TEXT = {"conflict": "存在冲突 CONFLICT", "clear": "无冲突 CLEAR", "incomplete": "未完成 INCOMPLETE"}
COLOURS = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#1f77b4", "#17becf", "#bcbd22", "#2ca02c")


def _round(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


def rule_dict(result: RuleResult) -> dict[str, Any]:
    rule = result.rule
    return {
        "id": rule.id,
        "title": {"zh": rule.title.zh, "en": rule.title.en},
        "layer": result.layer_shown,
        "kind": rule.kind.value,
        "status": result.status,
        "conflict": result.conflict,
        "area_m2": _round(result.area_m2),
        "share": _round(result.share, 6),
        "min_area_m2": rule.min_area_m2,
        "dropped_parts": result.dropped,
        "message": result.message,
        "features": [
            {"fid": f.fid, "conflict": f.conflict, "area_m2": _round(f.area_m2), "attributes": f.attributes,
             "geometry": f.geometry}
            for f in result.features
        ],
        "geometry": result.geometry,
        **({"extra": {k: _round(v) if isinstance(v, float) else v for k, v in result.extra.items()}}
           if result.extra else {}),
    }


def to_json(report: OverlapReport) -> dict[str, Any]:
    p = report.proposal
    return {
        "verdict": report.verdict,
        "checked_at": report.checked_at.isoformat(timespec="seconds"),
        "as_of": report.as_of,
        "area_crs": AREA_CRS,
        "rules_file": report.rules_path,
        "proposal": {
            "source": p.source,
            "crs": p.crs,
            "project": p.project_fid,
            "proposed_use": report.use,
            "area_m2": _round(report.proposal_area_m2),
            "geometry": p.geojson(),
        },
        "summary": {
            "rules": len(report.results),
            "conflicts": sum(1 for r in report.results if r.status == "conflict"),
            "not_evaluated": sum(1 for r in report.results if r.status == "not_evaluated"),
        },
        "rules": [rule_dict(r) for r in report.results],
    }


def to_geojson(report: OverlapReport) -> dict[str, Any]:
    """The proposal, each rule's conflict geometry and each feature's overlap part, as one FeatureCollection."""
    p = report.proposal
    features: list[dict[str, Any]] = [{
        "type": "Feature", "id": "proposal", "geometry": p.geojson(),
        "properties": {"role": "proposal", "verdict": report.verdict, "source": p.source, "project": p.project_fid,
                       "proposed_use": report.use, "area_m2": _round(report.proposal_area_m2),
                       "as_of": report.as_of},
    }]
    for r in report.results:
        if r.geometry is not None:
            features.append({
                "type": "Feature", "id": f"{r.rule.id}:conflict", "geometry": r.geometry,
                "properties": {"role": "conflict", "rule": r.rule.id, "title": r.rule.title.zh,
                               "kind": r.rule.kind.value,
                               "status": r.status, "area_m2": _round(r.area_m2), "share": _round(r.share, 6)},
            })
        for f in r.features:
            features.append({
                "type": "Feature", "id": f"{r.rule.id}:{f.fid}", "geometry": f.geometry,
                "properties": {**f.attributes, "role": "overlap", "rule": r.rule.id, "layer": r.layer_shown,
                               "fid": f.fid, "conflict": f.conflict, "area_m2": _round(f.area_m2)},
            })
    return {"type": "FeatureCollection", "features": features}


# -- HTML --------------------------------------------------------------------------------------------

def _drawing(layers: list[tuple[dict[str, Any] | None, str, str, str]]) -> Drawing:
    """layers: (geometry, fill, stroke, title); drawn in order over a frame fitted to their polygons, then the
    scale bar and a north arrow."""
    frame = MapFrame([g for g, *_ in layers], 560, 380, min_span=1e-7, vertices=polygon_vertices)
    shapes = []
    for geometry, fill, stroke, title in layers:
        d = frame.polygon_path(geometry)
        if d:
            width = 2.5 if fill == "none" else 0.8  # outlines (the proposal, a conflict) stand out
            shapes.append(Shape("path", {"d": d, "fill": fill, "stroke": stroke, "stroke-width": width,
                                         "fill-rule": "evenodd"}, title))
    return frame.drawing(shapes, north_arrow=True)


def _fmt_area(value: float) -> str:
    return f"{value:,.2f}"


def _attr_text(attributes: dict[str, Any]) -> str:
    return "; ".join(f"{k}={v}" for k, v in attributes.items() if v is not None)


def to_html(report: OverlapReport) -> str:
    """The report page (gis/templates/reports/overlap.html): the verdict, an overview map, a table of the
    rules, and a section with its own map per rule that hit something."""
    data = to_json(report)
    proposal_geom = data["proposal"]["geometry"]
    colour = {r.rule.id: COLOURS[i % len(COLOURS)] for i, r in enumerate(report.results)}
    overview_layers: list[tuple[dict[str, Any] | None, str, str, str]] = []
    for r in report.results:
        if r.geometry is not None:
            overview_layers.append((r.geometry, colour[r.rule.id] + "99", colour[r.rule.id],
                                    f"{r.rule.title.zh} {r.rule.title.en}: {_fmt_area(r.area_m2)} m²"))
    overview_layers.append((proposal_geom, "none", "#111", "proposal 拟建项目"))
    overview = _drawing(overview_layers)

    sections = []
    for r in report.results:
        if not r.features and r.geometry is None:
            continue
        layers: list[tuple[dict[str, Any] | None, str, str, str]] = []
        for f in r.features:
            fill = colour[r.rule.id] + "88" if f.conflict else "#99999955"
            layers.append((f.geometry, fill, "#555", f"{f.fid}: {_fmt_area(f.area_m2)} m² {_attr_text(f.attributes)}"))
        if r.geometry is not None:
            layers.append((r.geometry, "none", colour[r.rule.id], f"conflict {_fmt_area(r.area_m2)} m²"))
        layers.append((proposal_geom, "none", "#111", "proposal 拟建项目"))
        drawing = _drawing(layers)
        sections.append((r, drawing, [(f, _attr_text(f.attributes)) for f in r.features]))

    p = data["proposal"]
    return render("reports/overlap.html", title=f"用地冲突检测报告 · Overlap check — {p['source']}", report=report,
                  p=p, verdict_text=VERDICT_TEXT[report.verdict], status_text=STATUS_TEXT, area_crs=AREA_CRS,
                  checked_at=data["checked_at"], overview=overview, sections=sections,
                  legend=[(colour[r.rule.id], r) for r in report.results if r.geometry is not None])


def json_bytes(report: OverlapReport) -> bytes:
    return orjson.dumps(to_json(report), option=orjson.OPT_INDENT_2)


def geojson_bytes(report: OverlapReport) -> bytes:
    return orjson.dumps(to_geojson(report))


def html_bytes(report: OverlapReport) -> bytes:
    return to_html(report).encode("utf-8")


def to_table(report: OverlapReport) -> str:
    """A plain-text table for the terminal: one line per rule, then the verdict."""
    lines = [f"proposal: {report.proposal.source}; use {report.use or '-'}; area {report.proposal_area_m2:,.2f} m²; "
             f"plans as of {report.as_of or 'now'}",
             f"{'rule':<22} {'kind':<15} {'result':<14} {'area m²':>14} {'share':>8} {'features':>8}  note"]
    for r in report.results:
        lines.append(f"{r.rule.id:<22} {r.rule.kind.value:<15} {r.status:<14} {r.area_m2:>14,.2f} "
                     f"{r.share * 100:>7.2f}% {len(r.features):>8}  {r.message}")
    conflicts = sum(1 for r in report.results if r.status == "conflict")
    lines.append(f"verdict: {report.verdict.upper()} ({conflicts} of {len(report.results)} rules in conflict; "
                 f"areas in {AREA_CRS})")
    return "\n".join(lines)
