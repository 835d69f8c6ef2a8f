"""Environmental and policing analyses as JSON, GeoJSON and a self-contained HTML page with a map.

A result has the pipeline analyses' shape (gis.analysis.pipeline.PipelineResult: a summary and places by
role), so JSON and GeoJSON are theirs; the page reuses their map frame (equirectangular about the centre,
with a scale bar) and draws each role in a style the analysis passes, so hotspot classes, buffers and
routes each get their own colour.
"""

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from gis.analysis.pipeline import PipelineResult, SvgFrame, report_html, to_geojson, to_json
from gis.rendering import Drawing, cell

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


def _drawing(result: PlacesResult, styles: Mapping[str, Style]) -> Drawing:
    features = [f for items in result.places.values() for f in items]
    frame = SvgFrame([f["geometry"] for f in features])
    return frame.drawing([shape for role in styles for f in features if f["properties"].get("role") == role
                          for shape in frame.shape(f["geometry"], role, f"{f['id']} {_title(f['properties'])}",
                                                   styles[role])])


def _title(p: dict[str, Any]) -> str:
    return "; ".join(f"{k}={cell(v)}" for k, v in p.items() if v is not None and k != "role")


def to_html(result: PlacesResult, styles: Mapping[str, Style], legend: Mapping[str, str]) -> str:
    """The page: summary, one map of every place (roles drawn in the order of `styles`), a table per role."""
    parameters = {k: v for k, v in result.parameters.items()
                  if v is not None and k not in result.summary}  # each value listed once
    present = {f["properties"].get("role") for items in result.places.values() for f in items}
    keys = [(styles[role][1] if styles[role][1] != "none" else styles[role][0], styles[role][0], text)
            for role, text in legend.items() if role in present]
    return report_html(result, _drawing(result, styles), keys, parameters)
