"""Environmental and policing analyses as JSON, GeoJSON and a self-contained HTML page with a map.

A result has the pipeline analyses' shape (gis.analysis.pipeline.PipelineResult: a summary and places by
role), so JSON and GeoJSON are theirs; the page reuses their map frame (equirectangular about the centre,
with a scale bar) and draws each role in a style the analysis passes, so hotspot classes, buffers and
routes each get their own colour.
"""

import html
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from gis.analysis.pipeline import (
    REPORT_CSS,
    PipelineResult,
    SvgFrame,
    html_cell,
    html_definitions,
    html_table,
    to_geojson,
    to_json,
)

PlacesResult = PipelineResult
Style = tuple[str, str, float, float]  # stroke, fill, stroke width, point radius

__all__ = ["PlacesResult", "Style", "feature", "fetch_dicts", "iso", "to_geojson", "to_html", "to_json"]


def feature(fid: str, geometry: Any, properties: dict[str, Any]) -> dict[str, Any]:
    """A GeoJSON feature of a place; properties["role"] picks its style on the map."""
    return {"type": "Feature", "id": fid, "geometry": geometry, "properties": properties}


def fetch_dicts(conn: psycopg.Connection, query: sql.Composable, params: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def iso(value: Any) -> Any:
    """Times as RFC 3339 text for JSON; anything else unchanged."""
    return value.isoformat() if hasattr(value, "isoformat") else value


def _svg(result: PlacesResult, styles: Mapping[str, Style]) -> str:
    features = [f for items in result.places.values() for f in items]
    frame = SvgFrame([f["geometry"] for f in features])
    shapes = [frame.shape(f["geometry"], role, f"{f['id']} {_title(f['properties'])}", styles[role])
              for role in styles for f in features if f["properties"].get("role") == role]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{frame.width}" height="{frame.height}" '
            f'viewBox="0 0 {frame.width} {frame.height}" role="img"><rect width="100%" height="100%" '
            f'fill="#f7f7f4"/>{"".join(shapes)}{frame.scale_bar()}<g class="north"><text x="{frame.width - 18}" '
            f'y="22">N</text></g></svg>')


def _title(p: dict[str, Any]) -> str:
    return "; ".join(f"{k}={html_cell(v)}" for k, v in p.items() if v is not None and k != "role")


def to_html(result: PlacesResult, styles: Mapping[str, Style], legend: Mapping[str, str]) -> str:
    """The page: summary, one map of every place (roles drawn in the order of `styles`), a table per role."""
    summary = html_definitions(result.summary)
    parameters = html_definitions({k: v for k, v in result.parameters.items()
                                   if v is not None and k not in result.summary})  # each value listed once
    sections = "".join(f"<h2>{html.escape(role)} ({len(items)})</h2>{html_table(items)}"
                       for role, items in result.places.items())
    present = {f["properties"].get("role") for items in result.places.values() for f in items}
    keys = "".join(f'<li><span class="swatch" style="background:{styles[role][1] if styles[role][1] != "none" else
                   styles[role][0]};border:1px solid {styles[role][0]}"></span>{html.escape(text)}</li>'
                   for role, text in legend.items() if role in present)
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(result.title)}</title>
<style>{REPORT_CSS}</style></head><body>
<h1>{html.escape(result.title)}</h1>
<dl>{summary}{parameters}<dt>computed_at</dt><dd>{html.escape(result.computed_at.isoformat(timespec="seconds"))}</dd>
<dt>rules</dt><dd><code>{html.escape(result.rules_file)}</code></dd></dl>
<div class="map">{_svg(result, styles)}</div>
<ul class="legend">{keys}</ul>
{sections}
</body></html>
"""
