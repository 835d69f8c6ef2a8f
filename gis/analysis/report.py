"""An overlap check as JSON (a dict), GeoJSON (a FeatureCollection) and a self-contained HTML page.

The HTML page needs nothing from the network: inline CSS, and maps drawn as inline SVG from the
report's own geometries (a local equirectangular projection around the proposal, true to scale at
this size), one overview and one per rule in conflict, with a table of every figure.
"""

import html
import math
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from gis.analysis.overlap import AREA_CRS, OverlapReport, RuleResult

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

def _rings(geometry: dict[str, Any] | None) -> Iterator[list[list[float]]]:
    if not geometry:
        return
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        yield from coords
    elif kind == "MultiPolygon":
        for polygon in coords:
            yield from polygon
    elif kind == "GeometryCollection":
        for g in geometry.get("geometries", []):
            yield from _rings(g)


class _Frame:
    """lon/lat -> SVG pixels, equirectangular about the centre (metre-true at a project's scale)."""

    def __init__(self, geometries: Iterable[dict[str, Any] | None], width: int = 560, height: int = 380) -> None:
        xs, ys = [], []
        for g in geometries:
            for ring in _rings(g):
                for x, y in ring:
                    xs.append(x)
                    ys.append(y)
        if not xs:
            xs, ys = [0.0, 1e-6], [0.0, 1e-6]
        self.lat0 = (min(ys) + max(ys)) / 2
        self.k = math.cos(math.radians(self.lat0))
        x0, x1 = min(xs) * self.k, max(xs) * self.k
        y0, y1 = min(ys), max(ys)
        pad = 0.06 * max(x1 - x0, y1 - y0, 1e-7)
        x0, x1, y0, y1 = x0 - pad, x1 + pad, y0 - pad, y1 + pad
        self.scale = min(width / (x1 - x0), height / (y1 - y0))
        self.x0, self.y1 = x0, y1
        self.width, self.height = width, height
        self.metres_per_px = 111_320.0 / self.scale

    def point(self, x: float, y: float) -> str:
        return f"{(x * self.k - self.x0) * self.scale:.1f},{(self.y1 - y) * self.scale:.1f}"

    def path(self, geometry: dict[str, Any] | None) -> str:
        parts = []
        for ring in _rings(geometry):
            parts.append("M" + " L".join(self.point(x, y) for x, y in ring) + " Z")
        return " ".join(parts)

    def scale_bar(self) -> str:
        target = self.metres_per_px * self.width / 4
        step = 10 ** math.floor(math.log10(max(target, 1e-3)))
        metres = max(s * step for s in (1, 2, 5) if s * step <= target) if target >= step else step
        px = metres / self.metres_per_px
        label = f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
        y = self.height - 12
        return (f'<g class="scale"><line x1="12" y1="{y}" x2="{12 + px:.1f}" y2="{y}"/>'
                f'<text x="12" y="{y - 5}">{label}</text></g>')


def _svg(frame: _Frame, layers: list[tuple[dict[str, Any] | None, str, str, str]]) -> str:
    """layers: (geometry, fill, stroke, title); drawn in order."""
    shapes = []
    for geometry, fill, stroke, title in layers:
        d = frame.path(geometry)
        if d:
            width = 2.5 if fill == "none" else 0.8  # outlines (the proposal, a conflict) stand out
            shapes.append(f'<path d="{d}" fill="{fill}" stroke="{stroke}" stroke-width="{width}" fill-rule="evenodd">'
                          f"<title>{html.escape(title)}</title></path>")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{frame.width}" height="{frame.height}" '
            f'viewBox="0 0 {frame.width} {frame.height}" role="img">'
            f'<rect width="100%" height="100%" fill="#f7f7f4"/>{"".join(shapes)}{frame.scale_bar()}'
            f'<g class="north"><text x="{frame.width - 18}" y="22">N</text>'
            f'<path d="M{frame.width - 14},26 l-5,14 l5,-4 l5,4 z"/></g></svg>')


def _fmt_area(value: float) -> str:
    return f"{value:,.2f}"


def _attr_text(attributes: dict[str, Any]) -> str:
    return "; ".join(f"{k}={v}" for k, v in attributes.items() if v is not None)


def to_html(report: OverlapReport) -> str:
    data = to_json(report)
    proposal_geom = data["proposal"]["geometry"]
    colour = {r.rule.id: COLOURS[i % len(COLOURS)] for i, r in enumerate(report.results)}
    overview_layers: list[tuple[dict[str, Any] | None, str, str, str]] = []
    for r in report.results:
        if r.geometry is not None:
            overview_layers.append((r.geometry, colour[r.rule.id] + "99", colour[r.rule.id],
                                    f"{r.rule.title.zh} {r.rule.title.en}: {_fmt_area(r.area_m2)} m²"))
    overview_layers.append((proposal_geom, "none", "#111", "proposal 拟建项目"))
    frame = _Frame([proposal_geom] + [g for g, *_ in overview_layers])
    legend = "".join(
        f'<li><span class="swatch" style="background:{colour[r.rule.id]}"></span>'
        f"{html.escape(r.rule.title.zh)} {html.escape(r.rule.title.en)}</li>"
        for r in report.results if r.geometry is not None)

    rows = []
    for r in report.results:
        rows.append(
            f'<tr class="{r.status}"><td>{html.escape(r.rule.title.zh)}<br><small>{html.escape(r.rule.title.en)} '
            f"({html.escape(r.rule.id)})</small></td><td>{html.escape(r.rule.kind.value)}</td>"
            f"<td>{STATUS_TEXT[r.status]}</td><td class=num>{_fmt_area(r.area_m2)}</td>"
            f"<td class=num>{r.share * 100:.2f}%</td><td class=num>{len(r.features)}</td>"
            f"<td class=num>{r.dropped}</td><td>{html.escape(r.message)}</td></tr>")

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
        rule_frame = _Frame([proposal_geom] + [g for g, *_ in layers])
        feature_rows = "".join(
            f"<tr><td>{html.escape(f.fid)}</td><td>{'是 yes' if f.conflict else '否 no'}</td>"
            f"<td class=num>{_fmt_area(f.area_m2)}</td><td>{html.escape(_attr_text(f.attributes))}</td></tr>"
            for f in r.features)
        extra = "".join(f"<p>{html.escape(k)}: {_fmt_area(v) if isinstance(v, float) else html.escape(str(v))}</p>"
                        for k, v in r.extra.items())
        sections.append(
            f'<section><h2>{html.escape(r.rule.title.zh)} · {html.escape(r.rule.title.en)}</h2>'
            f"<p>{STATUS_TEXT[r.status]} — {html.escape(r.message)}; conflict area {_fmt_area(r.area_m2)} m² "
            f"({r.share * 100:.2f}% of the proposal); layer <code>{html.escape(r.layer_shown or '-')}</code>; "
            f"parts under {r.rule.min_area_m2:g} m² dropped: {r.dropped}</p>{extra}"
            f'<div class="map">{_svg(rule_frame, layers)}</div>'
            f"<table><thead><tr><th>fid</th><th>冲突 conflict</th><th>面积 area m²</th><th>属性 attributes</th>"
            f"</tr></thead><tbody>{feature_rows}</tbody></table></section>")

    p = data["proposal"]
    title = f"用地冲突检测报告 · Overlap check — {p['source']}"
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body{{font-family:system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:2rem;color:#222;max-width:1100px}}
h1{{font-size:1.4rem}} h2{{font-size:1.15rem;margin-top:2rem}}
.verdict{{display:inline-block;padding:.3rem .8rem;border-radius:4px;color:#fff;font-weight:bold}}
.verdict.conflict{{background:#c0392b}} .verdict.clear{{background:#27ae60}} .verdict.incomplete{{background:#e67e22}}
table{{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:.9rem}}
th,td{{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}}
td.num{{text-align:right;font-variant-numeric:tabular-nums}} tr.conflict td{{background:#fdecea}}
tr.not_evaluated td{{background:#fff4e0}} .map svg{{border:1px solid #ccc;max-width:100%;height:auto}}
.map .scale line{{stroke:#111;stroke-width:2}} .map text{{font-size:11px}}
ul.legend{{list-style:none;padding:0}} .swatch{{display:inline-block;width:12px;height:12px;margin-right:6px}}
dl{{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}} dt{{font-weight:bold}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p><span class="verdict {report.verdict}">{VERDICT_TEXT[report.verdict]}</span></p>
<dl>
<dt>项目 Proposal</dt><dd>{html.escape(p['source'])}</dd>
<dt>拟用地类型 Proposed use</dt><dd>{html.escape(str(p['proposed_use'] or '—'))}</dd>
<dt>面积 Area</dt><dd>{_fmt_area(report.proposal_area_m2)} m² ({report.proposal_area_m2 / 10000:,.4f} ha)</dd>
<dt>输入坐标系 Input CRS</dt><dd>{html.escape(p['crs'])}</dd>
<dt>面积计算 Areas in</dt><dd>{AREA_CRS} (CGCS2000 / 3-degree Gauss-Kruger CM 123E)</dd>
<dt>规划时点 Plans as of</dt><dd>{html.escape(report.as_of or '现行 in force now')}</dd>
<dt>检测时间 Checked at</dt><dd>{html.escape(data['checked_at'])}</dd>
<dt>规则 Rules</dt><dd><code>{html.escape(report.rules_path)}</code></dd>
</dl>
<h2>总览 Overview</h2>
<div class="map">{_svg(frame, overview_layers)}</div>
<ul class="legend"><li><span class="swatch" style="border:2px solid #111"></span>拟建项目 proposal</li>{legend}</ul>
<table><thead><tr><th>规则 Rule</th><th>类型 Kind</th><th>结果 Result</th><th>冲突面积 Area m²</th>
<th>占比 Share</th><th>要素 Features</th><th>碎片 Slivers</th><th>说明 Note</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
{"".join(sections)}
</body></html>
"""


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
